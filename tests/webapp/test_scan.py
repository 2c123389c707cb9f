"""A BadNet's Neural Cleanse scan: queued from its page, computed by the worker task on the real library,
shown with the flagged labels set against the declared targets and the reversed triggers as pictures."""

import tempfile
from pathlib import Path
from unittest import mock

import pytest

import defenses.cleanse
from tests.defenses.tiny import add_trigger, palette_badnet, palette_data, write_dataset
from tests.webapp.base import BaseTestCase
from webapp.lab.models import Dataset, TriggerScan
from webapp.lab.services import add_badnet, add_dataset
from workers.tasks import compute_scan

pytestmark = pytest.mark.slow


class ScanTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        model, (pixels, labels) = palette_badnet(24, target=0, seed=0)  # a white patch sends images to 0
        model.save(folder / "bd_net.keras")
        self.bad = add_badnet(self.blue, self.alice, folder / "bd_net.keras", "palette")
        self.valid = add_dataset(
            self.blue, self.alice, write_dataset(folder / "valid.h5", pixels, labels), "valid", Dataset.CLEAN_VALID
        )
        test, _ = palette_data(100, 24, seed=5)
        poisoned = write_dataset(folder / "patch.h5", add_trigger(test), [0] * 100)
        add_dataset(self.blue, self.alice, poisoned, "patch", Dataset.POISONED_TEST, "patch", 0, badnet=self.bad)
        self.client.force_login(self.alice)

    def test_the_scan_flags_the_declared_target_and_shows_its_reversed_trigger(self):
        with self.captureOnCommitCallbacks(execute=False):  # the worker's part is run here, below
            response = self.client.post(f"/badnets/{self.bad.pk}/scan", {"dataset": self.valid.pk})
        assert response.status_code == 302
        scan = TriggerScan.objects.get()
        assert scan.status == "queued"
        partial = self.client.get(f"/badnets/{self.bad.pk}/scans").content.decode()
        assert "hx-trigger" in partial and "waiting for a worker" in partial  # the page polls until done
        seen, real_scan = [], defenses.cleanse.scan

        def watched(*args, on_stage, **kwargs):  # the page, looked at while the labels are being reversed
            def stage(words: str) -> None:
                on_stage(words)
                seen.append(self.client.get(f"/badnets/{self.bad.pk}/scans").content.decode())

            return real_scan(*args, on_stage=stage, **kwargs)

        with mock.patch("defenses.cleanse.scan", watched):
            assert compute_scan(scan.pk) == "done"
        assert "being computed by a worker: " in seen[0] and "Neural Cleanse scan: 0 of 24 labels" in seen[0]
        assert "Neural Cleanse scan: 24 of 24 labels" in seen[-1]
        scan.refresh_from_db()
        assert scan.stage == "" and scan.result["flagged"] == [0]
        assert scan.result["labels"] == 24 and not scan.result["prescreened"]
        top = scan.result["rows"][0]
        assert top["label"] == 0 and top["anomaly"] > 2 and top["l1"] < 12
        response = self.client.get(f"/badnets/{self.bad.pk}/scans")
        assert response.status_code == 286  # htmx: stop polling
        page = self.client.get(f"/badnets/{self.bad.pk}/").content.decode()
        assert "label 0</span> (the declared target of patch)" in page
        assert (
            page.count('alt="mask of label 0"') == 1 and page.count("data:image/png;base64,") == 3 * 3
        )  # label 0 and the next two smallest

    def test_another_teams_set_and_a_malformed_id_are_refused(self):
        red_valid = self.dataset(team=self.red, name="red-valid")
        assert self.client.post(f"/badnets/{self.bad.pk}/scan", {"dataset": red_valid.pk}).status_code == 404
        assert self.client.post(f"/badnets/{self.bad.pk}/scan", {"dataset": "1e9"}).status_code == 400
        assert not TriggerScan.objects.exists()

    def test_a_running_scan_keeps_its_badnet_and_set_and_a_row_deleted_meanwhile_is_no_error(self):
        with self.captureOnCommitCallbacks(execute=False):
            self.client.post(f"/badnets/{self.bad.pk}/scan", {"dataset": self.valid.pk})
        scan = TriggerScan.objects.get()
        TriggerScan.objects.filter(pk=scan.pk).update(status="running")
        for url in (f"/badnets/{self.bad.pk}/delete", f"/datasets/{self.valid.pk}/delete"):
            refused = self.client.post(url)
            assert refused.status_code == 409
            assert "computing the Neural Cleanse scan of palette on valid" in refused.content.decode()
        assert TriggerScan.objects.exists()

        real_scan = defenses.cleanse.scan

        def deleted_while_scanning(*args, **kwargs):
            TriggerScan.objects.filter(pk=scan.pk).delete()
            return real_scan(*args, **kwargs)

        with mock.patch("defenses.cleanse.scan", deleted_while_scanning):
            assert compute_scan(scan.pk) == "gone"
        assert not TriggerScan.objects.exists()
        TriggerScan.objects.create(badnet=self.bad, dataset=self.valid, status="queued")  # not started: may go
        with self.captureOnCommitCallbacks(execute=True):
            assert self.client.post(f"/datasets/{self.valid.pk}/delete").status_code == 302
        assert not TriggerScan.objects.exists()
