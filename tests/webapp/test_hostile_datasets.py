"""Hostile dataset files through the upload page and the API: refused with the reason, nothing stored, no
byte of another file ever shown, and the web process's memory bounded while it refuses. Legitimately large
models are accepted under the default caps."""

import html
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token

from tests import hostile
from tests.webapp.base import BaseTestCase
from webapp.lab.models import BadNet, Dataset

SECRET_TEXT = hostile.SECRET[:16].decode()


class HostileDatasetTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        self.secret = hostile.secret_file(self.folder)
        self.other = hostile.plain_dataset(self.folder / "other_team.h5")

    def hostile_files(self) -> dict[str, tuple[Path, str]]:
        """Each file with the words its refusal must contain."""
        return {
            "external storage": (hostile.external_storage(self.folder / "ext.h5", self.secret), "external files"),
            "external link": (hostile.external_link(self.folder / "ext_link.h5", self.other), "external link at /data"),
            "soft link": (hostile.soft_link(self.folder / "soft.h5"), "soft link at /data"),
            "virtual dataset": (hostile.virtual_dataset(self.folder / "vds.h5", self.other), "virtual dataset"),
            "shape bomb": (hostile.shape_bomb(self.folder / "bomb.h5"), "shape bomb"),
            "NaN pixels": (hostile.with_pixels(self.folder / "nan.h5", 2, float("nan")), "image 2 has pixel values"),
            "pixels over 255": (hostile.with_pixels(self.folder / "hot.h5", 4, 300.0), "image 4 has pixel values"),
            "negative labels": (hostile.plain_dataset(self.folder / "neg.h5", labels=[-3] * 8), "label -3 is negative"),
        }

    def stored_files(self) -> list[Path]:
        return [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file() and p.parent.name == "dataset"]

    def assert_nothing_stored(self):
        assert not Dataset.objects.exists() and not self.stored_files()

    def post_page(self, path: Path, **extra):
        fields = {"name": "set", "role": Dataset.CLEAN_TEST, "trigger": "", "target": ""} | extra
        return self.client.post("/datasets/", fields | {"file": SimpleUploadedFile(path.name, path.read_bytes())})

    def test_the_upload_page_refuses_each_hostile_set_with_its_reason(self):
        self.client.force_login(self.alice)
        for kind, (path, reason) in self.hostile_files().items():
            response = self.post_page(path)
            text = html.unescape(response.content.decode())
            assert response.status_code == 400, kind
            assert f"Refused: {path.name}" in text and reason in text, (kind, reason)
            assert SECRET_TEXT not in text
            self.assert_nothing_stored()

    def test_the_api_refuses_each_hostile_set_with_its_reason(self):
        token = Token.objects.create(user=self.alice)
        for kind, (path, reason) in self.hostile_files().items():
            upload = SimpleUploadedFile(path.name, path.read_bytes())
            response = self.client.post(
                "/api/datasets/",
                {"name": "set", "role": Dataset.CLEAN_TEST, "file": upload},
                HTTP_AUTHORIZATION=f"Token {token.key}",
            )
            assert response.status_code == 400, kind
            message = " ".join(response.json()["errors"]["file"][0]["message"].split())
            assert reason in " ".join(message.split()) and SECRET_TEXT not in response.content.decode(), kind
            self.assert_nothing_stored()

    def test_refusing_a_shape_bomb_takes_little_memory_in_the_web_process(self):
        """numpy reports its allocations to tracemalloc: reading the bomb's labels used to take 8 GB."""
        self.client.force_login(self.alice)
        bomb = hostile.shape_bomb(self.folder / "bomb.h5")
        tracemalloc.start()
        try:
            response = self.post_page(bomb)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert response.status_code == 400 and peak < 20 * 2**20, peak

    def test_a_named_badnet_checks_image_size_labels_and_target(self):
        self.client.force_login(self.alice)
        badnet = self.badnet()  # 4 classes, 12x10 inputs
        fitting = hostile.plain_dataset(self.folder / "fits.h5", labels=[0, 1, 2, 3] * 2, side=(12, 10))
        too_many = hostile.plain_dataset(self.folder / "labels.h5", labels=[0, 9] * 4, side=(12, 10))
        cases = [
            (
                self.post_page(hostile.plain_dataset(self.folder / "faces.h5"), badnet=badnet.pk),
                "faces.h5: images are 55x47x3; the model expects 12x10x3",
            ),
            (self.post_page(too_many, badnet=badnet.pk), "labels range 0..9, outside the model's classes 0..3"),
            (
                self.post_page(fitting, badnet=badnet.pk, role=Dataset.POISONED_TEST, trigger="patch", target=7),
                "has classes 0..3; no class 7",
            ),
        ]
        for response, reason in cases:
            assert response.status_code == 400 and reason in html.unescape(response.content.decode()), reason
            self.assert_nothing_stored()
        response = self.post_page(fitting, badnet=badnet.pk, role=Dataset.POISONED_TEST, trigger="patch", target=3)
        assert response.status_code == 302 and Dataset.objects.get().count == 8

    def test_another_teams_badnet_cannot_be_named(self):
        self.client.force_login(self.bob)
        theirs = self.badnet(self.blue)
        response = self.post_page(hostile.plain_dataset(self.folder / "set.h5"), badnet=theirs.pk)
        assert response.status_code == 400 and "Select a valid choice" in response.content.decode()
        self.assert_nothing_stored()


def wide_model_file(folder: Path) -> Path:
    """Conv2D -> Flatten -> Dense(1283) on 55x47 faces: 66 M weights in one Dense layer, a 265 MB file."""
    import keras
    from keras import layers

    inputs = keras.Input((55, 47, 3))
    x = layers.Flatten()(layers.Conv2D(20, 3, padding="same", activation="relu")(inputs))
    model = keras.Model(inputs, layers.Dense(1283, activation="softmax")(x))
    assert model.count_params() > 60_000_000
    model.save(folder / "wide.h5")
    return folder / "wide.h5"


@pytest.mark.slow
class LargeModelTestCase(BaseTestCase):
    def test_a_60m_weight_layer_uploads_through_the_page(self):
        folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        path = wide_model_file(folder)
        self.client.force_login(self.alice)
        with open(path, "rb") as handle:
            response = self.client.post("/badnets/", {"name": "wide", "file": handle, "divisor": 255.0})
        assert response.status_code == 302, html.unescape(response.content.decode())[-2000:]
        badnet = BadNet.objects.get()
        assert badnet.n_classes == 1283 and badnet.report["params"] > 60_000_000

    def test_a_vgg_face_size_model_passes_the_allow_list(self):
        """VGG-16 with a 2622-identity head (VGG-Face): 145 M weights, 103 M of them in one layer. The config
        is checked (no weights are saved: that is the upload test's part)."""
        import json

        import keras

        from defenses.modelcheck import check_config, declared_parameter_count

        model = keras.applications.VGG16(weights=None, classes=2622)
        config = json.loads(model.to_json())
        check_config(config, "vgg_face.h5")
        assert declared_parameter_count(config) == model.count_params() > 140_000_000
