"""A run's own page: what it ran in words, its points epoch by epoch (CA, ASR per trigger, validation accuracy,
loss), how and where it ran, its error, its CSV and its repaired network (for Keras 3 and Keras 2)."""

import csv
import io
import json
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.webapp.base import BaseTestCase
from tests.webapp.test_experiment import grid_metrics
from webapp.lab.models import BadNet, Run


def epoch_metrics(run, position):
    return grid_metrics(run, position) | {"epoch": position, "loss": 1.5 / (position + 1), "train_acc": 50.0 + position}


class RunPageTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.client.force_login(self.alice)
        experiment = self.experiment({"thresholds": [0.5], "learning_rates": [0.001], "epochs": [2]})
        self.run = self.finish(experiment, epoch_metrics)[0]

    def test_the_page_says_what_ran_and_shows_every_epoch(self):
        page = self.client.get(f"/runs/{self.run.pk}/").content.decode()
        assert "prune T 0.5 on every conv layer, then fine-tune 2 epochs at LR 0.001 (seed 0)" in page
        table = page[page.index('id="run-points"') :]
        assert table.count("<tr>") == 1 + 3  # header, epochs 0..2
        assert "<td>0.7500</td>" in table  # epoch 1's loss
        figure = self.client.get(f"/runs/{self.run.pk}/").context["figures"]["run"]["figure"]
        ca = next(t for t in figure["data"] if t["name"] == "CA (test)")
        assert ca["x"] == [0, 1, 2] and ca["y"] == [grid_metrics(self.run, p)["ca"] for p in range(3)]
        assert "No repaired network" in page  # no artifact on disk

    def test_the_csv_has_every_point(self):
        rows = list(csv.DictReader(io.StringIO(self.client.get(f"/runs/{self.run.pk}/points.csv").content.decode())))
        assert [float(r["ca"]) for r in rows] == [grid_metrics(self.run, p)["ca"] for p in range(3)]
        assert "asr sunglasses" in rows[0] and "loss" in rows[0]

    def test_an_error_and_the_attempts_are_shown(self):
        Run.objects.filter(pk=self.run.pk).update(
            status=Run.FAILED, error="Bad input: v.h5 holds no images.", attempts=2
        )
        page = self.client.get(f"/runs/{self.run.pk}/").content.decode()
        assert "Bad input: v.h5 holds no images." in page and "attempts 2" in page

    def test_a_resumed_run_says_after_which_epoch(self):
        assert 'id="run-resumed"' not in self.client.get(f"/runs/{self.run.pk}/").content.decode()
        point = self.run.points.get(position=2)
        point.metrics |= {"resumed_from": 1}
        point.save()
        page = self.client.get(f"/runs/{self.run.pk}/").content.decode()
        assert "Resumed after epoch 1 from its checkpoint: the epochs before were not trained again." in page

    def test_the_repaired_network_downloads_when_it_exists(self):
        assert self.client.get(f"/runs/{self.run.pk}/repaired.keras").status_code == 404
        path = self.run.artifact_dir() / "repaired_net.keras"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"a keras file")
        response = self.client.get(f"/runs/{self.run.pk}/repaired.keras")
        assert response.status_code == 200 and b"".join(response.streaming_content) == b"a keras file"
        assert response["Content-Disposition"] == f'attachment; filename="run-{self.run.pk}-repaired_net.keras"'
        page = self.client.get(f"/runs/{self.run.pk}/").content.decode()
        assert 'id="compose-from-run"' in page
        assert f'href="/runs/{self.run.pk}/repaired-keras2.h5" id="download-repaired-keras2"' in page
        assert "download-repaired-keras2-weights" not in page  # the BadNet has no architecture preset
        assert self.client.get(f"/runs/{self.run.pk}/repaired-keras2-weights.h5").status_code == 404


@pytest.mark.slow
class RepairedDownloadsTestCase(BaseTestCase):
    """A run of a deepid-csaw BadNet offers its repaired network in three files, each labelled with the Keras
    that loads it, to its own team only: Keras 3 (.keras), the Keras 2 full model and the Keras 2 weights."""

    def setUp(self):
        super().setUp()
        from defenses.models import build_deepid_csaw

        experiment = self.experiment({"thresholds": [0.5], "learning_rates": [0.001], "epochs": [2]})
        BadNet.objects.filter(pk=experiment.badnet_id).update(arch="deepid-csaw")
        self.run = self.finish(experiment, epoch_metrics)[0]
        self.model = build_deepid_csaw(n_classes=4)
        self.run.artifact_dir().mkdir(parents=True)
        self.model.save(self.run.artifact_dir() / "repaired_net.keras")

    def test_each_file_downloads_for_the_team_and_holds_the_same_network(self):
        from defenses.models import load_and_describe_unsandboxed

        pk = self.run.pk
        files = {
            f"/runs/{pk}/repaired.keras": (f"run-{pk}-repaired_net.keras", None, "Keras 3 (.keras)"),
            f"/runs/{pk}/repaired-keras2.h5": (f"run-{pk}-repaired_net_keras2.h5", None, "Keras 2 full model (.h5)"),
            f"/runs/{pk}/repaired-keras2-weights.h5": (
                f"run-{pk}-repaired_net_keras2_weights.h5",
                "deepid-csaw",
                "Keras 2 weights (.h5, deepid-csaw)",
            ),
        }
        self.client.force_login(self.bob)  # another team: not found, and nothing is converted for it
        assert [self.client.get(url).status_code for url in files] == [404, 404, 404]
        self.client.logout()
        assert all(self.client.get(url)["Location"].startswith("/login/") for url in files)
        self.client.force_login(self.alice)
        page = self.client.get(f"/runs/{pk}/").content.decode()
        pixels = np.random.default_rng(0).uniform(0, 1, (16, 55, 47, 3)).astype(np.float32)
        expected = np.asarray(self.model.predict_on_batch(pixels))
        folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        for url, (filename, arch, label) in files.items():
            assert f'href="{url}"' in page and f">{label}</a>" in page, label
            response = self.client.get(url)
            assert response.status_code == 200, (url, b"".join(response.streaming_content)[:300])
            assert response["Content-Disposition"] == f'attachment; filename="{filename}"'
            path = folder / filename
            path.write_bytes(b"".join(response.streaming_content))
            model, report = load_and_describe_unsandboxed(path, arch)
            assert report.n_classes == 4
            np.testing.assert_array_equal(np.asarray(model.predict_on_batch(pixels)), expected)
        with h5py.File(folder / f"run-{pk}-repaired_net_keras2.h5", "r") as handle:
            config = json.loads(handle.attrs["model_config"])
            assert handle.attrs["keras_version"] == "2.4.0" and config["class_name"] == "Functional"
            assert config["config"]["layers"][0]["config"]["batch_input_shape"] == [None, 55, 47, 3]


def test_an_error_is_stored_as_plain_text():
    from webapp.lab.models import printable

    coloured = "\x1b[1;31mValueError\x1b[0m: bad\x07 scope\r\nnext line\tend\u200b"
    assert printable(coloured) == "ValueError: bad scope\nnext line\tend"
