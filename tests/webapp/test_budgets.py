"""Budgets of training work (webapp/lab/budgets.py): queued and running work of a team, and of each user,
counts against a budget in fine-tuning-epoch units; a request past it is refused with what is left, on the
page, in the preview, in the API and on the leaderboard form; nothing is stored then."""

from django.test import override_settings
from rest_framework.authtoken.models import Token

from tests.webapp.base import BaseTestCase
from webapp.lab.models import Dataset, Experiment, Leaderboard, Membership, Run

GRID_210 = {"thresholds": "0.8, 1, 1.2", "learning_rates": "0.001, 0.003", "epochs": "30, 33, 35"}  # 6 runs x 35


class BudgetTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.client.force_login(self.alice)
        self.sets = {
            "badnet": self.badnet().pk,
            "valid": self.dataset(name="v").pk,
            "test": self.dataset(Dataset.CLEAN_TEST, name="t").pk,
            "poisoned": [self.dataset(Dataset.POISONED_TEST, name="p", trigger="sunglasses").pk],
        }

    def form(self, name: str, **changes) -> dict:
        base = {"name": name, "defense": "fine-prune", "layers": "", "seed": 0, "max_drop": 4, "queue": "cpu"}
        return base | self.sets | GRID_210 | changes

    def post(self, name: str, **changes):
        with self.captureOnCommitCallbacks(execute=False):
            return self.client.post("/experiments/new/", self.form(name, **changes))

    @override_settings(TEAM_EPOCH_BUDGET=300, USER_EPOCH_BUDGET=10_000)
    def test_a_team_past_its_budget_is_refused_with_what_is_left_until_its_work_ends(self):
        assert self.post("first").status_code == 302  # 210 of 300
        assert self.post("second", thresholds="0.5", learning_rates="0.001").status_code == 302  # 35 more
        third = self.post("third", thresholds="0.4, 0.45", learning_rates="0.01")  # 70 > 55 left
        self.assertContains(
            third,
            "This needs 70 fine-tuning epochs; your team has 55 of 300 left (245 queued or running)",
            status_code=400,
        )
        assert Experiment.objects.count() == 2
        Run.objects.update(status=Run.DONE, progress=1.0)  # the work ended: the budget is free again
        assert self.post("third", thresholds="0.4, 0.45", learning_rates="0.01").status_code == 302

    @override_settings(TEAM_EPOCH_BUDGET=10_000, USER_EPOCH_BUDGET=250)
    def test_each_user_has_a_budget_of_their_own_within_the_team(self):
        Membership.objects.create(user=self.bob, team=self.blue)
        assert self.post("alice's").status_code == 302
        self.assertContains(self.post("alice's again", thresholds="0.5"), "you have 40 of 250 left", status_code=400)
        self.client.force_login(self.bob)
        self.client.post(f"/teams/{self.blue.pk}/switch")
        assert self.post("bob's", thresholds="0.5").status_code == 302  # bob's own budget

    @override_settings(TEAM_EPOCH_BUDGET=300, USER_EPOCH_BUDGET=10_000)
    def test_work_the_team_has_stored_or_under_way_costs_nothing_again_and_half_done_runs_count_half(self):
        assert self.post("first").status_code == 302
        assert self.post("same grid again").status_code == 302  # every run is under way: nothing new
        Run.objects.update(status=Run.RUNNING, progress=0.5)
        preview = self.client.post("/experiments/plan", self.form("x", thresholds="0.4")).content.decode()
        assert "your team has 195 of 300 fine-tuning epochs left" in preview  # 300 - 6 x 35 / 2

    @override_settings(TEAM_EPOCH_BUDGET=300, USER_EPOCH_BUDGET=10_000)
    def test_a_search_counts_its_budget_less_what_it_spent(self):
        assert self.post("search", budget="200").status_code == 302
        refused = self.post("grid", thresholds="0.4, 0.5, 0.6", learning_rates="0.001")
        self.assertContains(refused, "This needs 105 fine-tuning epochs; your team has 100 of 300", status_code=400)
        search = Experiment.objects.get(name="search")
        Experiment.objects.filter(pk=search.pk).update(search=search.search | {"spent": 60})
        assert self.post("grid", thresholds="0.4, 0.5, 0.6", learning_rates="0.001").status_code == 302

    @override_settings(TEAM_EPOCH_BUDGET=100, USER_EPOCH_BUDGET=10_000)
    def test_the_api_and_the_leaderboard_form_refuse_alike(self):
        token = Token.objects.create(user=self.alice)
        body = self.form("api") | {"thresholds": [0.8, 1.0, 1.2], "learning_rates": [0.001], "epochs": [35]}
        api = self.client.post(
            f"/api/experiments/?team={self.blue.pk}",
            body,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Token {token.key}",
        )
        assert api.status_code == 400 and "This needs 105 fine-tuning epochs" in api.content.decode()
        board = self.client.post(
            f"/badnets/{self.sets['badnet']}/leaderboard",
            {k: v for k, v in self.sets.items() if k != "badnet"} | {"max_ca_drop": 5, "budget": 50, "queue": "cpu"},
        )
        self.assertContains(board, "your team has 100 of 100 left", status_code=400)
        assert not Leaderboard.objects.exists() and not Experiment.objects.exists()

    @override_settings(TEAM_EPOCH_BUDGET=300, USER_EPOCH_BUDGET=10_000)
    def test_a_rerun_past_the_budget_is_refused_and_queues_nothing(self):
        assert self.post("first").status_code == 302
        first = Experiment.objects.get(name="first")
        Run.objects.update(status=Run.CANCELLED)
        assert self.post("second", thresholds="0.5, 0.6, 0.7").status_code == 302  # 210: the first's is free
        with self.captureOnCommitCallbacks(execute=False) as sent:
            page = self.client.post(f"/experiments/{first.pk}/rerun", follow=True)
        self.assertContains(page, "Nothing was queued again. This needs 210 fine-tuning epochs; your team has 90")
        assert not sent and set(first.runs.values_list("status", flat=True)) == {Run.CANCELLED}

    @override_settings(TEAM_EPOCH_BUDGET=300, USER_EPOCH_BUDGET=10_000)
    def test_anps_mask_steps_count_as_the_passes_they_make(self):
        # 300 mask steps of 128 images, each a pass with and without the perturbation and a mask update:
        # 3 x 300 x 128 / 30 images = 3,840 passes over this 30-image validation set
        refused = self.post("anp", defense="anp", mask_thresholds="0.2", anp_iterations="300")
        self.assertContains(refused, "This needs 3,840 fine-tuning epochs", status_code=400)

    @override_settings(TEAM_EPOCH_BUDGET=3000, USER_EPOCH_BUDGET=10_000)
    def test_neural_cleanses_scan_counts_beside_its_epochs(self):
        # 1 epoch, and a scan of this 4-label BadNet at 5,000 steps a label of 24 images: 4 x 5,000 x 24 / 30
        # images = 16,000 passes over the validation set (it counted as 1 epoch, however long the scan)
        unlearn = {"defense": "nc-unlearn", "learning_rates": "0.001", "epochs": "1", "scan_steps": "5000"}
        refused = self.post("scan", **unlearn)
        self.assertContains(refused, "This needs 16,001 fine-tuning epochs; your team has 3,000", status_code=400)
        assert self.post("small scan", **unlearn | {"scan_steps": "100"}).status_code == 302  # 1 + 320 units
        # a search scans once for all its trials: its budget buys training, and the scan is charged beside it
        search = self.post("scan search", **unlearn | {"scan_steps": "2000", "budget": "50"})
        self.assertContains(search, "This needs 6,450 fine-tuning epochs; your team has 2,679", status_code=400)
        # ... and counts until the search ends: two searches of 50 units and a 960-unit scan fit, a third not
        for name in ("search 1", "search 2"):
            assert self.post(name, **unlearn | {"scan_steps": "300", "budget": "50"}).status_code == 302
        third = self.post("search 3", **unlearn | {"scan_steps": "300", "budget": "50"})
        self.assertContains(third, "This needs 1,010 fine-tuning epochs; your team has 659 of 3,000", status_code=400)

    @override_settings(TEAM_EPOCH_BUDGET=3000, USER_EPOCH_BUDGET=2000)
    def test_the_attack_reviews_flood_is_refused_at_submission_with_the_defaults(self):
        """Three API calls queued 1,200 runs of 500 epochs each (600,000 epochs); each is refused now, and
        nothing is stored or sent."""
        token = Token.objects.create(user=self.alice)
        thresholds = [round(0.005 * n, 3) for n in range(1, 401)]
        body = self.form("flood") | {"thresholds": thresholds, "learning_rates": [0.001], "epochs": [500]}
        with self.captureOnCommitCallbacks(execute=False) as sent:
            answers = [
                self.client.post(
                    f"/api/experiments/?team={self.blue.pk}",
                    body | {"name": f"flood {n}", "seed": n},
                    content_type="application/json",
                    HTTP_AUTHORIZATION=f"Token {token.key}",
                )
                for n in range(3)
            ]
        for answer in answers:
            assert answer.status_code == 400
            assert "This needs 200,000 fine-tuning epochs; you have 2,000 of 2,000 left" in answer.content.decode()
        assert not Experiment.objects.exists() and not Run.objects.exists() and sent == []

    @override_settings(TEAM_EPOCH_BUDGET=3, USER_EPOCH_BUDGET=10_000)
    def test_work_that_trains_nothing_still_counts_a_unit(self):
        """30 incremental prunings (distinct floors, so 30 runs) left the budget untouched; each counts 1 now."""
        for n in range(3):
            assert self.post(f"curve {n}", defense="incremental", max_drop=str(1 + n / 10)).status_code == 302
        refused = self.post("curve 4", defense="incremental", max_drop="1.4")
        self.assertContains(refused, "This needs 1 fine-tuning epoch; your team has 0 of 3", status_code=400)
