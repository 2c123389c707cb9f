"""STRIP on a GoodNet's page: calibrated by the worker task on the real library, its figures stored and drawn
with a CSV of each chart, the image test answering N by STRIP, and the form refusing sets it cannot use."""

import io
import tempfile
import zipfile
from pathlib import Path
from unittest import mock

import pytest
from PIL import Image

import defenses.strip
from tests.defenses.tiny import add_trigger, tiny_badnet_files, tiny_data, write_dataset
from tests.webapp.base import BaseTestCase
from webapp.lab.composition import compose_from_upload
from webapp.lab.models import Dataset, GoodNet
from webapp.lab.services import add_badnet, add_dataset
from workers.tasks import calibrate_strip

pytestmark = pytest.mark.slow


def png(pixels) -> io.BytesIO:
    buffer = io.BytesIO()
    Image.fromarray(pixels.round().astype("uint8")).save(buffer, "PNG")
    buffer.seek(0)
    buffer.name = "image.png"
    return buffer


class StripTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        files = tiny_badnet_files(folder)
        self.bad = add_badnet(self.blue, self.alice, files["model"], "tiny")
        valid = write_dataset(folder / "v.h5", *tiny_data(300, seed=1))
        self.valid = add_dataset(self.blue, self.alice, valid, "v300", Dataset.CLEAN_VALID)
        self.test = add_dataset(self.blue, self.alice, files["test"], "test", Dataset.CLEAN_TEST)
        self.patch = add_dataset(
            self.blue, self.alice, files["poisoned"], "patch", Dataset.POISONED_TEST, trigger="patch", target=0
        )
        # the repaired network is the BadNet itself: only STRIP can answer N
        self.goodnet = compose_from_upload(self.bad, files["model"], "same.keras", "strip only", self.alice)
        self.client.force_login(self.alice)

    def form(self, **changes) -> dict:
        return {"valid": self.valid.pk, "frr": 5, "test": self.test.pk, "poisoned": [self.patch.pk]} | changes

    def test_strip_is_calibrated_its_figures_drawn_and_the_image_test_answers_n_by_it(self):
        with self.captureOnCommitCallbacks(execute=False):
            assert self.client.post(f"/goodnets/{self.goodnet.pk}/strip", self.form()).status_code == 302
        assert GoodNet.objects.get().strip_status == "queued"
        again = self.client.post(f"/goodnets/{self.goodnet.pk}/strip", self.form())
        assert again.status_code == 400 and "being calibrated already" in again.content.decode()
        assert calibrate_strip(self.goodnet.pk, self.test.pk, [self.patch.pk]) == "done"
        goodnet = GoodNet.objects.get()
        rules = goodnet.figures["rules"]
        assert rules["disagreement"]["detection"]["patch"] == 0.0 and rules["disagreement"]["false_alarm"] == 0.0
        assert rules["STRIP"]["detection"]["patch"] > 90 and rules["STRIP"]["false_alarm"] < 5 + 3 * 1.55
        assert rules["either"] == rules["STRIP"]  # the networks never disagree here
        assert goodnet.figures["roc"]["patch"]["STRIP"]["auc"] > 0.95
        assert goodnet.figures["roc"]["patch"]["disagreement"]["auc"] == pytest.approx(0.5)
        csv = self.client.get(f"/goodnets/{goodnet.pk}/charts/detector-rates.csv").content.decode()
        assert f"STRIP entropy under threshold,patch,{rules['STRIP']['detection']['patch']}" in csv
        assert self.client.get(f"/goodnets/{goodnet.pk}/charts/roc-1.csv").status_code == 200

        clean = tiny_data(1, seed=9)[0][0]
        data = {"network": f"goodnet-{goodnet.pk}", "images": [png(clean), png(add_trigger(clean[None])[0])]}
        page = self.client.post("/classify/", data).content.decode()
        assert page.count('data-label="4"') == 1 and page.count("poisoned by STRIP") == 1
        archive = self.client.get(f"/goodnets/{goodnet.pk}/bundle.zip")
        names = zipfile.ZipFile(io.BytesIO(b"".join(archive.streaming_content))).namelist()
        assert f"goodnet-{goodnet.pk}/strip_overlays.npy" in names

        first = Path(goodnet.strip_file.path)  # calibrating again keeps one overlays file, the new one
        with self.captureOnCommitCallbacks(execute=False):
            assert self.client.post(f"/goodnets/{goodnet.pk}/strip", self.form(frr=2)).status_code == 302
        assert calibrate_strip(goodnet.pk, self.test.pk, [self.patch.pk]) == "done"
        goodnet.refresh_from_db()
        assert not first.exists() and Path(goodnet.strip_file.path).exists() and goodnet.strip_frr == 2

    def test_the_form_starts_with_the_badnets_own_sets(self):
        folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        stamped = write_dataset(folder / "p2.h5", add_trigger(tiny_data(50, seed=9)[0]), [1] * 50)
        other = add_dataset(self.blue, self.alice, stamped, "other", Dataset.POISONED_TEST, trigger="x", target=1)
        for dataset in (self.valid, self.test, self.patch):  # declared for this BadNet; `other` for none
            dataset.badnets.add(self.bad)
        form = self.client.get(f"/goodnets/{self.goodnet.pk}/").context["form"]
        assert form.initial["valid"] == self.valid.pk and form.initial["test"] == self.test.pk
        assert form.initial["poisoned"] == [self.patch.pk]
        assert other in form.fields["poisoned"].queryset  # it fits: offered, not ticked

    def test_the_form_refuses_another_teams_set_a_set_too_small_and_a_rate_out_of_range(self):
        folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        small_file = write_dataset(folder / "s.h5", *tiny_data(50))
        small = add_dataset(self.blue, self.alice, small_file, "small", Dataset.CLEAN_VALID)
        red = self.dataset(team=self.red, name="red-valid", count=200)
        for changes, words in (
            ({"valid": red.pk}, "Select a valid choice"),
            ({"valid": small.pk}, "STRIP needs at least 120"),
            ({"frr": 80}, "less than or equal to 50"),
        ):
            response = self.client.post(f"/goodnets/{self.goodnet.pk}/strip", self.form(**changes))
            assert response.status_code == 400 and words in response.content.decode(), changes
        assert GoodNet.objects.get().strip_status == ""
        self.client.force_login(self.bob)
        assert self.client.post(f"/goodnets/{self.goodnet.pk}/strip", self.form()).status_code == 404

    def test_a_goodnet_is_not_deleted_while_strip_waits_and_one_deleted_meanwhile_leaves_no_overlays(self):
        with self.captureOnCommitCallbacks(execute=False):
            assert self.client.post(f"/goodnets/{self.goodnet.pk}/strip", self.form()).status_code == 302
        for url in (f"/goodnets/{self.goodnet.pk}/delete", f"/badnets/{self.bad.pk}/delete"):
            page = self.client.get(url).content.decode()
            assert "A worker is computing the STRIP calibration of strip only now" in page
            refused = self.client.post(url)
            assert refused.status_code == 409 and "delete once its page shows the result" in refused.content.decode()
        assert GoodNet.objects.filter(pk=self.goodnet.pk).exists()

        fit = defenses.strip.fit_strip

        def deleted_while_fitting(*args, **kwargs):  # the race the page cannot close: a delete from elsewhere
            GoodNet.objects.filter(pk=self.goodnet.pk).delete()
            return fit(*args, **kwargs)

        overlays = Path(self.goodnet.strip_file.storage.path(""))
        before = {path for path in overlays.rglob("*.npy")}
        with mock.patch("defenses.strip.fit_strip", deleted_while_fitting):
            assert calibrate_strip(self.goodnet.pk, self.test.pk, [self.patch.pk]) == "gone"
        assert {path for path in overlays.rglob("*.npy")} == before  # no overlays file without a row
