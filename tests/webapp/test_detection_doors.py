"""The detection pages' doors, as an attack review tried them: trigger names that collide with template
look-ups, sets deleted under a queued calibration, lost calibrations and scans, floods, and sets of the wrong
role. Rows are made directly; no network is loaded."""

from datetime import timedelta

from django.utils import timezone

from tests.webapp.base import BaseTestCase
from webapp.lab.models import Dataset, GoodNet, Leaderboard, Membership, Team, TriggerScan
from workers.tasks import calibrate_strip

RATES = {"false_alarm": 1.0, "detection": {"values": 90.0}}
CURVE = {"false_alarm": [100.0, 0.0], "detection": [100.0, 0.0], "auc": 0.9}
FIGURES = {
    "rules": {"disagreement": RATES, "STRIP": RATES, "either": RATES},
    "roc": {"values": {"disagreement": CURVE, "STRIP": CURVE}},
    "images": {"clean": 10, "values": 10},
    "threshold": 0.2,
    "frr": 1.0,
}


class DetectionDoorsTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.exp = self.experiment({"epochs": [1]})
        self.valid = self.dataset(name="v200", count=200)
        self.goodnet = self.make_goodnet("g")
        self.client.force_login(self.alice)

    def make_goodnet(self, name, **fields):
        return GoodNet.objects.create(
            team=self.blue, owner=self.alice, name=name, badnet=self.exp.badnet, sha256=name, **fields
        )

    def strip_form(self) -> dict:
        poisoned = [d.pk for d in self.exp.poisoned.all()]
        return {"valid": self.valid.pk, "frr": 1, "test": self.exp.test.pk, "poisoned": poisoned}

    def test_a_trigger_named_like_a_dict_method_does_not_break_the_page(self):
        GoodNet.objects.filter(pk=self.goodnet.pk).update(strip_status="done", figures=FIGURES, strip_threshold=0.2)
        page = self.client.get(f"/goodnets/{self.goodnet.pk}/")
        assert page.status_code == 200 and "Detection: values" in page.content.decode()
        assert "90.0 %" in page.content.decode()

    def test_a_set_deleted_under_a_queued_calibration_fails_it_with_a_reason_and_frees_the_goodnet(self):
        mine = self.dataset(Dataset.CLEAN_TEST, name="mallory's test")  # a teammate's set, deleted by her
        with self.captureOnCommitCallbacks(execute=False):
            form = self.strip_form() | {"test": mine.pk}
            assert self.client.post(f"/goodnets/{self.goodnet.pk}/strip", form).status_code == 302
        test_id = mine.pk
        Dataset.objects.filter(pk=test_id).delete()
        assert calibrate_strip(self.goodnet.pk, test_id, []) == "failed"
        self.goodnet.refresh_from_db()
        assert "was deleted before a worker reached it" in self.goodnet.strip_error

    def test_a_set_a_calibration_reads_its_threshold_from_is_not_deleted_under_it(self):
        with self.captureOnCommitCallbacks(execute=False):
            assert self.client.post(f"/goodnets/{self.goodnet.pk}/strip", self.strip_form()).status_code == 302
        refused = self.client.post(f"/datasets/{self.valid.pk}/delete")
        assert refused.status_code == 409 and "the STRIP calibration of g" in refused.content.decode()

    def test_a_queued_calibration_says_it_waits_and_a_running_one_that_it_runs(self):
        with self.captureOnCommitCallbacks(execute=False):
            self.client.post(f"/goodnets/{self.goodnet.pk}/strip", self.strip_form())
        assert (
            "calibration is waiting for a worker"
            in self.client.get(f"/goodnets/{self.goodnet.pk}/detector").content.decode()
        )
        GoodNet.objects.filter(pk=self.goodnet.pk).update(strip_status="running")  # as the worker marks its start
        partial = self.client.get(f"/goodnets/{self.goodnet.pk}/detector")
        assert partial.status_code == 200 and "STRIP is being calibrated by a worker" in partial.content.decode()
        again = self.client.post(f"/goodnets/{self.goodnet.pk}/strip", self.strip_form())
        assert again.status_code == 400 and "being calibrated already" in again.content.decode()

    def test_a_lost_calibration_can_be_asked_for_again_and_a_fresh_one_cannot(self):
        with self.captureOnCommitCallbacks(execute=False):
            assert self.client.post(f"/goodnets/{self.goodnet.pk}/strip", self.strip_form()).status_code == 302
            again = self.client.post(f"/goodnets/{self.goodnet.pk}/strip", self.strip_form())
            assert again.status_code == 400 and "being calibrated already" in again.content.decode()
            long_ago = timezone.now() - timedelta(days=2)
            GoodNet.objects.filter(pk=self.goodnet.pk).update(strip_queued_at=long_ago)
            assert "calibration was lost" in self.client.get(f"/goodnets/{self.goodnet.pk}/").content.decode()
            assert self.client.post(f"/goodnets/{self.goodnet.pk}/strip", self.strip_form()).status_code == 302

    def test_a_team_may_have_only_a_few_calibrations_waiting(self):
        for number in range(4):
            self.make_goodnet(f"q{number}", strip_status="queued", strip_queued_at=timezone.now())
        response = self.client.post(f"/goodnets/{self.goodnet.pk}/strip", self.strip_form())
        assert response.status_code == 400
        assert "blue has 4 STRIP calibrations waiting or running already" in response.content.decode()

    def test_a_user_of_several_teams_has_one_limit_for_all_of_them(self):
        """Making more teams does not multiply what one user may keep the workers busy with."""
        for number in range(4):
            team = Team.objects.create(name=f"side-{number}")
            Membership.objects.create(user=self.alice, team=team, is_admin=True)
            other = self.experiment({"epochs": [1]}, team=team)
            TriggerScan.objects.create(
                badnet=other.badnet, dataset=other.valid, status="queued", requested_by=self.alice
            )
            GoodNet.objects.create(
                team=team,
                owner=self.alice,
                name=f"s{number}",
                badnet=other.badnet,
                sha256=f"s{number}",
                strip_status="queued",
                strip_queued_at=timezone.now(),
                strip_requested_by=self.alice,
            )
        scan = self.client.post(f"/badnets/{self.exp.badnet.pk}/scan", {"dataset": self.exp.valid.pk})
        assert (
            "You (in all your teams) have 4 Neural Cleanse scans waiting or running already"
            in self.client.get(scan["Location"]).content.decode()
        )
        assert not TriggerScan.objects.filter(badnet=self.exp.badnet).exists()  # refused: no row left
        strip = self.client.post(f"/goodnets/{self.goodnet.pk}/strip", self.strip_form())
        assert strip.status_code == 400
        assert "You (in all your teams) have 4 STRIP calibrations" in strip.content.decode()
        # a teammate of blue is not bound by alice's other teams
        Membership.objects.create(user=self.bob, team=self.blue)
        self.client.force_login(self.bob)
        with self.captureOnCommitCallbacks(execute=False) as sent:
            assert self.client.post(f"/goodnets/{self.goodnet.pk}/strip", self.strip_form()).status_code == 302
        assert len(sent) == 1 and GoodNet.objects.get(pk=self.goodnet.pk).strip_requested_by == self.bob

    def test_scans_take_clean_validation_sets_only_and_a_lost_scan_is_queued_again(self):
        badnet = self.exp.badnet
        poisoned = self.exp.poisoned.first()
        response = self.client.post(f"/badnets/{badnet.pk}/scan", {"dataset": poisoned.pk})
        assert response.status_code == 400 and "choose a clean validation set" in response.content.decode()
        scan = TriggerScan.objects.create(badnet=badnet, dataset=self.exp.valid, status="running")
        with self.captureOnCommitCallbacks(execute=False) as sent:
            self.client.post(f"/badnets/{badnet.pk}/scan", {"dataset": self.exp.valid.pk})
        assert sent == []  # a running scan is left to its worker
        TriggerScan.objects.filter(pk=scan.pk).update(updated=timezone.now() - timedelta(days=2))
        with self.captureOnCommitCallbacks(execute=False) as sent:
            self.client.post(f"/badnets/{badnet.pk}/scan", {"dataset": self.exp.valid.pk})
        assert len(sent) == 1 and TriggerScan.objects.get().status == "queued"

    def test_a_second_identical_leaderboard_post_opens_the_first(self):
        form = {
            "valid": self.exp.valid.pk,
            "test": self.exp.test.pk,
            "poisoned": [d.pk for d in self.exp.poisoned.all()],
            "max_ca_drop": 5,
            "queue": "cpu",
        }
        with self.captureOnCommitCallbacks(execute=False):
            first = self.client.post(f"/badnets/{self.exp.badnet.pk}/leaderboard", form)
            second = self.client.post(f"/badnets/{self.exp.badnet.pk}/leaderboard", form)
        assert Leaderboard.objects.count() == 1 and first["Location"] == second["Location"]
