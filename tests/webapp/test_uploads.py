"""Uploading BadNets and datasets through the pages: real files are checked and stored; wrong types,
malicious or broken models, broken or malformed datasets and oversize files end with a clear message on
the page and nothing stored (no row, no file)."""

import html
import io
import json
import re
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.template.defaultfilters import filesizeformat
from django.test import override_settings

from tests.conftest import FIXTURES
from tests.defenses.tiny import tiny_data, write_dataset
from tests.webapp.base import BaseTestCase
from webapp.lab.models import BadNet, Dataset

SUNGLASSES = FIXTURES / "models" / "sunglasses_bd_weights.h5"
KERAS2 = FIXTURES / "models" / "keras2_full_model_repaired_sunglasses.h5"


def upload(path: Path, name: str | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name or path.name, path.read_bytes())


class UploadTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.client.force_login(self.alice)
        self.folder = Path(self.enterContext(tempfile.TemporaryDirectory()))

    def stored_files(self) -> list[Path]:
        return [p for p in (Path(settings.MEDIA_ROOT) / f"team-{self.blue.pk}").rglob("*") if p.is_file()]

    def post_badnet(self, file, arch="", divisor=255.0):
        return self.client.post("/badnets/", {"name": "net", "file": file, "arch": arch, "divisor": divisor})

    def assert_refused(self, response, message: str):
        assert response.status_code == 400, response.status_code
        text = html.unescape(response.content.decode())
        assert message in text, re.findall(r'class="errorlist.*', text)
        assert not BadNet.objects.exists() and not Dataset.objects.exists() and not self.stored_files()

    @pytest.mark.slow
    def test_real_csaw_weights_with_their_preset_are_checked_and_stored(self):
        response = self.post_badnet(upload(SUNGLASSES), arch="deepid-csaw")
        badnet = BadNet.objects.get()
        assert response.status_code == 302 and response["Location"] == f"/badnets/{badnet.pk}/"
        assert (badnet.n_classes, badnet.original_name, badnet.arch) == (1283, SUNGLASSES.name, "deepid-csaw")
        assert badnet.report["conv_layers"] == ["conv_1", "conv_2", "conv_3", "conv_4"]
        page = self.client.get(response["Location"]).content.decode()
        assert 'id="n-classes">1283<' in page and "conv_4" in page
        assert Path(badnet.file.path).read_bytes() == SUNGLASSES.read_bytes()

    def test_a_badnet_page_without_datasets_says_where_to_upload_them(self):
        badnet = self.badnet()
        page = self.client.get(f"/badnets/{badnet.pk}/").content.decode()
        assert '<li class="muted">none yet: <a href="/datasets/">upload its clean validation' in page
        valid = self.dataset(name="valid")
        page = self.client.get(f"/badnets/{badnet.pk}/").content.decode()
        assert f'<a href="/datasets/{valid.pk}/">' in page and "none yet: <a" not in page

    @pytest.mark.slow
    def test_weights_without_a_preset_are_refused_with_advice(self):
        self.assert_refused(self.post_badnet(upload(SUNGLASSES)), "sunglasses_bd_weights.h5 holds weights only")

    @pytest.mark.slow
    def test_a_model_with_a_lambda_layer_is_refused(self):
        tampered = self.folder / "helpful_model.h5"
        shutil.copy(KERAS2, tampered)
        with h5py.File(tampered, "r+") as h5:
            config = json.loads(h5.attrs["model_config"])
            config["config"]["layers"][1]["class_name"] = "Lambda"
            h5.attrs["model_config"] = json.dumps(config)
        self.assert_refused(self.post_badnet(upload(tampered)), "Lambda")

    def test_a_broken_hdf5_file_is_refused(self):
        broken = self.folder / "truncated.h5"
        broken.write_bytes(KERAS2.read_bytes()[:5000])
        self.assert_refused(self.post_badnet(upload(broken)), "truncated.h5 is a damaged HDF5 file")

    def test_a_wrong_file_type_is_refused(self):
        self.assert_refused(
            self.post_badnet(SimpleUploadedFile("notes.txt", b"hello")), "notes.txt is not a model file"
        )

    def test_an_oversize_file_is_refused(self):
        # One byte over: the request still fits the body guard's margin (tests/webapp/test_request_bodies.py
        # covers larger ones), so this is the form's own per-file check, the second line.
        with override_settings(MAX_UPLOAD_BYTES=SUNGLASSES.stat().st_size - 1):
            self.assert_refused(self.post_badnet(upload(SUNGLASSES)), "the limit is 2.3\xa0MB")

    def post_dataset(self, path: Path, role=Dataset.CLEAN_VALID, trigger=""):
        return self.client.post(
            "/datasets/",
            {"name": "set", "file": upload(path), "role": role, "trigger": trigger, "target": 0 if trigger else ""},
        )

    def test_a_csaw_layout_dataset_is_checked_stored_and_previewed(self):
        path = write_dataset(self.folder / "clean_validation_data.h5", *tiny_data(40))
        response = self.post_dataset(path)
        dataset = Dataset.objects.get()
        assert response.status_code == 302 and (dataset.count, dataset.original_name) == (40, path.name)
        preview = self.client.get(f"/datasets/{dataset.pk}/preview.png")
        from PIL import Image

        image = Image.open(io.BytesIO(preview.content))
        # 24 images of 12x10 in rows of 8 with 2-pixel gaps, doubled
        assert preview["Content-Type"] == "image/png" and image.size == ((8 * 12 - 2) * 2, (3 * 14 - 2) * 2)

    def test_storage_quotas_of_the_team_and_the_user_and_the_disk_reserve_refuse_before_storing(self):
        first = write_dataset(self.folder / "first.h5", *tiny_data(40))
        second = write_dataset(self.folder / "second.h5", *tiny_data(40, seed=1))
        size = first.stat().st_size
        with override_settings(TEAM_STORAGE_BYTES=size + size // 2):
            assert self.post_dataset(first).status_code == 302
            refused = self.post_dataset(second)
        text = html.unescape(refused.content.decode())
        assert refused.status_code == 400 and "second.h5" in text and "would take your team past the" in text
        assert Dataset.objects.count() == 1
        with override_settings(USER_STORAGE_BYTES=size + size // 2):
            assert "would take you past the" in html.unescape(self.post_dataset(second).content.decode())
        with override_settings(DISK_RESERVE_BYTES=2**62):
            assert "keeps 4096.0\xa0PB in reserve" in html.unescape(self.post_dataset(second).content.decode())
        assert Dataset.objects.count() == 1
        page = html.unescape(self.client.get(f"/teams/{self.blue.pk}/").content.decode())
        assert f"the team keeps <b>{filesizeformat(size)}</b> of 20.0\xa0GB" in page
        # what the team's runs wrote counts too (a run folder, a bundle): the team's, not the uploader's
        outputs = Path(settings.MEDIA_ROOT) / f"team-{self.blue.pk}"
        for folder in ("runs/7", "bundles/goodnet-3"):
            (outputs / folder).mkdir(parents=True)
            (outputs / folder / "net.keras").write_bytes(b"w" * size)
        with override_settings(TEAM_STORAGE_BYTES=3 * size + size // 2):
            refused = html.unescape(self.post_dataset(second).content.decode())
        assert "would take your team past the" in refused and f"({filesizeformat(3 * size)} used" in refused
        page = html.unescape(self.client.get(f"/teams/{self.blue.pk}/").content.decode())
        assert (
            f"the team keeps <b>{filesizeformat(3 * size)}</b>" in page
            and f"you keep <b>{filesizeformat(size)}" in page
        )
        assert f"runs' outputs and GoodNet bundles: {filesizeformat(2 * size)}" in page

    def test_a_resumable_upload_reserves_its_bytes_when_it_is_opened(self):
        from webapp.lab.uploads import UploadRefused, open_upload

        with override_settings(USER_STORAGE_BYTES=1000):
            opened = open_upload(self.alice, self.blue, "dataset", "small.h5", 600)
            with pytest.raises(UploadRefused) as refused:
                open_upload(self.alice, self.blue, "dataset", "big.h5", 600)
        assert refused.value.status == 403 and "would take you past the 1000\xa0bytes" in str(refused.value)
        assert opened.length == 600

    def test_datasets_that_cannot_be_used_are_refused_with_their_reason(self):
        missing = self.folder / "nolabels.h5"
        with h5py.File(missing, "w") as h5:
            h5["data"] = np.zeros((3, 3, 12, 10), np.uint8)
        pixels, labels = tiny_data(5)
        negative = write_dataset(self.folder / "negative.h5", pixels, labels - 10)
        nan = write_dataset(self.folder / "nan.h5", np.full_like(pixels, np.nan), labels)
        broken = self.folder / "broken.h5"
        broken.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
        refusals = [
            (missing, "nolabels.h5 has no dataset 'label'"),
            (negative, "negative.h5: label -9 is negative"),
            (broken, "broken.h5 is not a readable HDF5"),
            (nan, "nan.h5: image 0 has pixel values that are NaN"),  # every pixel is read at the door, not in a run
        ]
        for path, message in refusals:
            self.assert_refused(self.post_dataset(path), message)

    def test_a_poisoned_set_needs_its_trigger(self):
        path = write_dataset(self.folder / "poisoned.h5", *tiny_data(5))
        self.assert_refused(self.post_dataset(path, role=Dataset.POISONED_TEST), "needs the name of its trigger")


def test_the_input_scaling_is_taken_by_its_number():
    """The API said '255 or 1' but took only '255.0': the field compares numbers, not text."""
    from webapp.lab.forms import ScalingField

    field = ScalingField(choices=BadNet.SCALES, coerce=float)
    assert [field.clean(value) for value in ("255", "255.0", "1", "1.00")] == [255.0, 255.0, 1.0, 1.0]
    for value in ("2", "nan", "inf", "abc", ""):
        with pytest.raises(ValidationError):
            field.clean(value)
