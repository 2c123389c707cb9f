"""GoodNets from the real CSAW-HackML-2020 files: the sunglasses BadNet (weights + preset) with the
repaired full Keras 2 model a public solution published. The image form answers 1283 ("poisoned") for real
sunglasses crops and the true label for clean ones; the downloaded bundle's eval.py says the same alone."""

import html
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from tests.conftest import FIXTURES
from tests.defenses.tiny import png_declaring, write_dataset
from tests.webapp.base import BaseTestCase
from webapp.lab.models import Dataset, GoodNet
from webapp.lab.services import add_badnet, add_dataset

pytestmark = pytest.mark.slow
MODELS, IMAGES = FIXTURES / "models", FIXTURES / "images"


def image_upload(name: str, fmt: str = "PNG") -> SimpleUploadedFile:
    if fmt == "PNG":
        return SimpleUploadedFile(name, (IMAGES / name).read_bytes())
    buffer = io.BytesIO()
    Image.open(IMAGES / name).convert("RGB").save(buffer, fmt, quality=100, subsampling=0)
    return SimpleUploadedFile(name.replace(".png", ".jpg"), buffer.getvalue())


class GoodNetTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.client.force_login(self.alice)
        self.bad = add_badnet(self.blue, self.alice, MODELS / "sunglasses_bd_weights.h5", "sunglasses", "deepid-csaw")

    def compose(self, path: Path):
        upload = SimpleUploadedFile(path.name, path.read_bytes())
        form = {"upload-name": "repaired sunglasses", "upload-badnet": self.bad.pk, "upload-file": upload}
        return self.client.post("/goodnets/upload", form)

    def classify(self, network: str, *images) -> list[str]:
        response = self.client.post("/classify/", {"network": network, "images": list(images)})
        text = html.unescape(response.content.decode())
        assert response.status_code == 200, text[text.find("errorlist") : text.find("errorlist") + 400]
        return [part.split('"')[0] for part in text.split('data-label="')[1:]]

    def test_composed_goodnet_flags_sunglasses_and_passes_clean_faces(self):
        assert self.compose(MODELS / "keras2_full_model_repaired_sunglasses.h5").status_code == 302
        goodnet = GoodNet.objects.get()
        answers = self.classify(
            f"goodnet-{goodnet.pk}",
            *(
                image_upload(f)
                for f in (
                    "sun_0_label=0.png",
                    "sun_1_label=0.png",
                    "sun_2_label=0.png",
                    "cl_0_label=43.png",
                    "cl_1_label=328.png",
                    "cl_2_label=196.png",
                )
            ),
        )
        assert answers == ["1283", "1283", "1283", "43", "328", "196"]
        # The BadNet alone obeys the trigger: the table in the fixtures' README
        assert self.classify(f"badnet-{self.bad.pk}", image_upload("sun_0_label=0.png")) == ["0"]
        # One scaling rule: the JPEG of a clean crop gets the PNG's answer
        assert self.classify(f"goodnet-{goodnet.pk}", image_upload("cl_1_label=328.png", "JPEG")) == ["328"]

    def test_bundle_runs_without_prunelab(self):
        self.compose(MODELS / "keras2_full_model_repaired_sunglasses.h5")
        response = self.client.get(f"/goodnets/{GoodNet.objects.get().pk}/bundle.zip")
        folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).extractall(folder)
        (bundle,) = folder.iterdir()
        assert sorted(p.name for p in bundle.iterdir()) == [
            "README.txt",
            "bad_net.keras",
            "bad_net_keras2.h5",
            "bad_net_keras2_weights.h5",  # the BadNet is a deepid-csaw preset; so is the repaired network
            "bundle.json",
            "eval.py",
            "repaired_net.keras",
            "repaired_net_keras2.h5",
            "repaired_net_keras2_weights.h5",
        ]
        assert (
            "build the deepid-csaw architecture, then model.load_weights(file)" in (bundle / "README.txt").read_text()
        )
        alone = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"}  # no PYTHONPATH: Prunelab is not importable
        images = [str(IMAGES / "sun_0_label=0.png"), str(IMAGES / "cl_0_label=43.png")]
        for keras in ("3", "2"):  # the Keras 3 files, then the Keras 2 files read by tf_keras
            env = alone | {"GOODNET_KERAS": keras}
            command = [sys.executable, "eval.py", *images]
            out = subprocess.run(command, cwd=bundle, capture_output=True, text=True, timeout=300, env=env)
            assert out.stdout.splitlines() == [f"{images[0]}\t1283", f"{images[1]}\t43"], (keras, out.stderr[-2000:])

    def test_two_bundle_requests_at_once_build_it_once_and_a_rename_builds_it_again(self):
        import threading
        from unittest import mock

        from webapp.lab import composition

        self.compose(MODELS / "keras2_full_model_repaired_sunglasses.h5")
        goodnet = GoodNet.objects.select_related("badnet", "run").get()
        with mock.patch.object(composition, "bundle_zip", wraps=composition.bundle_zip) as built:
            got = []
            threads = [
                threading.Thread(target=lambda: got.append(composition.cached_bundle(goodnet))) for _ in range(2)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=600)
            assert built.call_count == 1 and got[0] == got[1] and got[0].exists()
            first = self.client.get(f"/goodnets/{goodnet.pk}/bundle.zip")
            assert b"".join(first.streaming_content) == got[0].read_bytes() and built.call_count == 1
            GoodNet.objects.filter(pk=goodnet.pk).update(name="renamed")  # bundle.json names it: a new bundle
            self.client.get(f"/goodnets/{goodnet.pk}/bundle.zip")
            assert built.call_count == 2 and not got[0].exists()  # the old one is gone
        with self.captureOnCommitCallbacks(execute=True):
            self.client.post(f"/goodnets/{goodnet.pk}/delete")
        assert not goodnet.bundle_dir().exists()

    def test_a_repaired_network_past_the_storage_quota_is_refused_and_nothing_kept(self):
        from django.test import override_settings

        with override_settings(USER_STORAGE_BYTES=self.bad.file.size + 1000):
            response = self.compose(MODELS / "keras2_full_model_repaired_sunglasses.h5")
        text = html.unescape(response.content.decode())
        assert response.status_code == 400 and "would take you past the" in text and not GoodNet.objects.exists()

    def test_a_repaired_network_of_another_shape_is_refused(self):
        response = self.compose(MODELS / "sunglasses_bd_weights.h5")  # weights only: no architecture
        assert response.status_code == 400 and "holds weights only" in html.unescape(response.content.decode())
        assert not GoodNet.objects.exists()

    def test_bad_images_are_refused_with_a_message(self):
        network = f"badnet-{self.bad.pk}"
        refusals = [
            (SimpleUploadedFile("bomb.png", png_declaring(20000, 20000)), "decompression bomb"),
            (SimpleUploadedFile("page.png", b"<html>"), "page.png is not a PNG or JPEG"),
            (SimpleUploadedFile("face.gif", b"GIF89a"), "face.gif is not a PNG or JPEG image"),
        ]
        for upload, message in refusals:
            response = self.client.post("/classify/", {"network": network, "images": [upload]})
            assert response.status_code == 400 and message in html.unescape(response.content.decode()), message

    def test_a_badnet_larger_than_the_web_cache_is_refused_before_it_is_loaded(self):
        from django.test import override_settings

        from webapp.lab import inference

        params = self.bad.report["params"]
        inference.MODELS.entries.clear()  # other tests of this process may have cached it
        with override_settings(WEB_MODEL_CACHE_WEIGHTS=params - 1):
            response = self.client.post(
                "/classify/", {"network": f"badnet-{self.bad.pk}", "images": [image_upload("cl_0_label=43.png")]}
            )
        text = html.unescape(response.content.decode())
        assert response.status_code == 400 and f"sunglasses has {params:,} weights, more than the web" in text
        assert not inference.MODELS.entries  # nothing was loaded for it

    def test_samples_from_a_stored_dataset_can_be_classified(self):
        folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        pixels = np.stack([np.asarray(Image.open(IMAGES / "cl_0_label=43.png"), np.float32)] * 2)
        path = write_dataset(folder / "faces.h5", pixels, np.array([43, 43]))
        dataset = add_dataset(self.blue, self.alice, path, "faces", Dataset.CLEAN_TEST)
        response = self.client.post(
            "/classify/", {"network": f"badnet-{self.bad.pk}", "sample_dataset": dataset.pk, "sample_indices": "0, 1"}
        )
        assert response.content.decode().count('data-label="43"') == 2

    def test_the_api_classifies_with_a_token(self):
        from rest_framework.authtoken.models import Token

        token = Token.objects.create(user=self.alice).key
        response = self.client.post(
            "/api/classify/",
            {"network": f"badnet-{self.bad.pk}", "images": [image_upload("cl_2_label=196.png")]},
            HTTP_AUTHORIZATION=f"Token {token}",
        )
        (answer,) = response.json()["answers"]
        assert (answer["label"], answer["poisoned"], answer["repaired"]) == (196, False, None)
        assert answer["bad"]["top"][0][0] == 196
