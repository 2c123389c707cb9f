"""The honest "best" (defenses.selection.select): validation data only, within the clean-accuracy floor, the rule said
in words; the experiment page, the grid chart, the API and the compare page's before/after table use it."""

from rest_framework.authtoken.models import Token

from defenses.selection import SELECTED_ON_CLEAN_VALID, SELECTED_WITH_POISONED_VALID, score, select
from tests.webapp.base import BaseTestCase
from tests.webapp.test_experiment import GRID, grid_metrics


def point(threshold, valid_acc, valid_asr=None, baseline=98.0, ca=90.0, asr=50.0):
    selection = score(valid_acc, [valid_asr]) if valid_asr is not None else valid_acc
    return {
        "threshold": threshold,
        "lr": 0.001,
        "epochs": 10,
        "valid_acc": valid_acc,
        "valid_asr": valid_asr,
        "selection": selection,
        "before_valid_acc": baseline,
        "ca": ca,
        "asr": asr,
    }


def test_the_seed_score_alone_would_pick_a_destroyed_network_the_floor_does_not():
    destroyed = point(2.0, valid_acc=7.8, valid_asr=0.0)  # score 53.9
    untouched = point(0.0, valid_acc=100.0, valid_asr=93.0, baseline=100.0)  # score 53.5
    untouched["before_valid_acc"] = destroyed["before_valid_acc"] = 100.0
    assert destroyed["selection"] > untouched["selection"]
    chosen = select([destroyed, untouched], max_ca_drop=5, with_poisoned_valid=True)
    assert chosen.best is untouched and chosen.floor == 95.0
    assert SELECTED_WITH_POISONED_VALID in chosen.rule and "at most 5 points below the BadNet's 100.00 %" in chosen.rule


def test_within_the_floor_the_highest_selection_score_wins():
    rows = [point(0.5, 94.0), point(1.0, 96.5), point(1.5, 99.0, baseline=98.0)]
    assert select(rows, 5, False).best["threshold"] == 1.5
    assert select(rows, 1, False).best["threshold"] == 1.5  # 99 >= 98 - 1
    rows[2]["valid_acc"] = rows[2]["selection"] = 92.0
    assert select(rows, 3, False).best["threshold"] == 1.0  # 96.5 >= 95; 94 and 92 are below


def test_when_no_point_meets_the_floor_none_is_named_and_the_rule_says_so():
    chosen = select([point(1.0, 80.0), point(1.2, 70.0)], max_ca_drop=5, with_poisoned_valid=False)
    assert chosen.best is None and "no point meets that floor" in chosen.rule and SELECTED_ON_CLEAN_VALID in chosen.rule


def test_with_poisoned_validation_data_only_points_scored_on_it_compete():
    scored = point(1.0, 95.0, valid_asr=5.0)
    unscored = point(0.0, 99.0)  # its selection score (99) is validation accuracy alone: not comparable
    assert select([scored, unscored], 5, True).best is scored


def test_a_badnet_that_does_not_recognise_its_clean_images_gets_no_best_and_the_rule_says_why():
    # the real CSAW BadNet on the synthetic sets: 0.78 % of its own; a floor relative to that admits anything
    rows = [point(1.0, 8.4, valid_asr=0.0, baseline=0.78), point(0.5, 0.9, valid_asr=50.0, baseline=0.78)]
    chosen = select(rows, max_ca_drop=5, with_poisoned_valid=True)
    assert chosen.best is None and chosen.floor is None
    assert "does not recognise these images (its own validation CA is 0.78 %, below 50 %)" in chosen.rule
    assert select([point(1.0, 60.0, baseline=55.0)], 5, False).best is not None  # above the line: chosen


def test_without_the_badnets_validation_accuracy_nothing_is_named():
    chosen = select([point(1.0, 95.0, baseline=None)], 5, False)
    assert chosen.best is None and "not recorded" in chosen.rule


def destroying(run, position):
    """grid_metrics, but every trained point loses 30 validation points: none meets a 5-point floor."""
    metrics = grid_metrics(run, position)
    return metrics | {"valid_acc": metrics["valid_acc"] - (30 if position else 0)}


class SelectionPagesTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.client.force_login(self.alice)

    def test_the_page_names_no_best_when_the_floor_is_unmet(self):
        experiment = self.experiment(GRID)
        self.finish(experiment, destroying)
        page = self.client.get(f"/experiments/{experiment.pk}/").content.decode()
        assert 'id="no-best"' in page and "no point meets that floor" in page and 'class="best"' not in page
        grid = self.client.get(f"/experiments/{experiment.pk}/figures").json()["charts"]["grid"]
        assert len(grid["figure"]["data"]) == 1 and grid["note"].startswith("No point is selected")
        token = Token.objects.create(user=self.alice).key
        results = self.client.get(f"/api/experiments/{experiment.pk}/results/", HTTP_AUTHORIZATION=f"Token {token}")
        assert results.json()["best"] is None and "no point meets that floor" in results.json()["rule"]

    def test_a_looser_floor_set_on_the_experiment_admits_them(self):
        experiment = self.experiment(GRID)
        experiment.max_ca_drop = 40
        experiment.save()
        self.finish(experiment, destroying)
        page = self.client.get(f"/experiments/{experiment.pk}/").content.decode()
        assert 'class="best"' in page and "at most 40 points below the BadNet&#x27;s 91.00 %" in page

    def test_the_compare_summary_uses_the_same_rule_and_says_it(self):
        experiment = self.experiment(GRID)
        self.finish(experiment, destroying)
        summary = self.client.get("/compare/").content.decode().split('id="summary"')[1]
        assert "no run selected" in summary and "no point meets that floor" in summary
        summary = self.client.get("/compare/?floor=40").content.decode().split('id="summary"')[1]
        assert "no run selected" not in summary and "at most 40 points below" in summary
        assert self.client.get("/compare/?floor=abc").status_code == 400
        assert self.client.get("/compare/?floor=nan").status_code == 400


class ProfilePollingTestCase(BaseTestCase):
    def test_the_profile_partial_polls_while_queued_and_brings_the_charts_when_done(self):
        from webapp.lab.models import Profile

        self.client.force_login(self.alice)
        badnet, valid = self.badnet(), self.dataset()
        profile = Profile.objects.create(badnet=badnet, dataset=valid, status="queued")
        page = self.client.get(f"/badnets/{badnet.pk}/").content.decode()
        assert f'hx-get="/badnets/{badnet.pk}/profiles"' in page and "being computed by a worker" in page
        assert self.client.get(f"/badnets/{badnet.pk}/profiles").status_code == 200
        Profile.objects.filter(pk=profile.pk).update(status="done", means={"conv_a": [0.5, 1.5], "conv_b": [2.0]})
        done = self.client.get(f"/badnets/{badnet.pk}/profiles")
        assert done.status_code == 286 and b'id="profile-figures"' in done.content and b"hx-get" not in done.content
