"""The web process's cache of loaded networks is bounded by the weights it holds (an attack review pinned
1.6 GB of the web server with two uploads of 58.7 M weights each, under a six-network cache), and a network
above the whole budget is never loaded by the web process at all."""

import gc
import threading
import time
from dataclasses import dataclass

import psutil
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client

from tests.conftest import FIXTURES
from tests.lab.factories import team_with_user
from webapp.lab.inference import ModelCache
from webapp.lab.services import add_badnet

CROP = FIXTURES / "images" / "cl_0_label=43.png"


@dataclass
class Report:
    params: int


def test_the_cache_keeps_at_most_its_weight_budget_and_drops_the_oldest_first(monkeypatch):
    loads = []

    def load_model(path, arch, limits):
        loads.append(path)
        return object(), Report(params=int(path.split("-")[1]))

    monkeypatch.setattr("defenses.models.load_model", load_model)
    cache = ModelCache(max_weights=100)
    first = cache.get("net-40", "a", None)
    assert cache.get("net-40", "a", None) is first and loads == ["net-40"]  # the second image: no load
    cache.get("net-50", "b", None)
    cache.get("net-30", "c", None)  # 40 + 50 + 30 > 100: the oldest (a) goes
    assert [key for key, _ in cache.entries] == ["b", "c"]
    cache.get("net-50", "b", None)  # b is used again: now c is the oldest
    cache.get("net-20", "d", None)  # 50 + 30 + 20 = 100: all stay
    assert [key for key, _ in cache.entries] == ["c", "b", "d"]
    cache.get("net-500", "huge", None)  # larger than the whole budget: served, not kept
    assert [key for key, _ in cache.entries] == ["c", "b", "d"] and loads[-1] == "net-500"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_eight_image_tests_at_once_on_a_badnet_above_the_budget_keep_the_web_process_within_1_gb(tmp_path, settings):
    """The attack review's case: a 61 M-weight BadNet (244 MB of float32 weights) took the web process to 7.8 GB
    under 8 parallel image tests, loading it once per request. It is refused before anything is loaded now."""
    import keras

    settings.MEDIA_ROOT = tmp_path / "media"
    inputs = keras.Input((55, 47, 3))
    flat = keras.layers.Flatten()(keras.layers.Conv2D(6, 1, name="conv_1")(inputs))
    outputs = keras.layers.Dense(4096, activation="softmax", name="huge")(flat)  # 15,510 x 4,096 weights
    keras.Model(inputs, outputs).save(tmp_path / "huge.keras")
    team, user = team_with_user()
    badnet = add_badnet(team, user, tmp_path / "huge.keras", "huge")
    assert badnet.report["params"] > settings.WEB_MODEL_CACHE_WEIGHTS and badnet.report["params"] > 60_000_000
    gc.collect()
    process = psutil.Process()
    baseline, peak, answers = process.memory_info().rss, [0], []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.01)

    def ask():
        client = Client()
        client.force_login(user)
        image = SimpleUploadedFile("face.png", CROP.read_bytes(), content_type="image/png")
        answers.append(client.post("/classify/", {"network": f"badnet-{badnet.pk}", "images": [image]}))
        connection.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    askers = [threading.Thread(target=ask) for _ in range(8)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join(timeout=300)
    stop.set()
    watcher.join()
    assert peak[0] - baseline < 2**30, f"the web process grew by {(peak[0] - baseline) / 2**20:.0f} MiB"
    assert [answer.status_code for answer in answers] == [400] * 8
    assert all("more than the web server may hold" in answer.content.decode() for answer in answers)
