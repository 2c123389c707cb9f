"""A BadNet's leaderboard: one click makes one experiment per registered defense with its small sweep; the page
ranks the defenses by their validation-selected points (the floor rule), with test figures, the GoodNet's
rates, DER and cost; a defense with no point within the floor is listed last, saying so."""

from defenses.methods import METHODS
from defenses.search import can_search
from defenses.selection import der
from tests.webapp.base import BaseTestCase
from webapp.lab.models import Dataset, Experiment, Leaderboard, Point, Run
from webapp.lab.results import leaderboard_rows

# validation ASR of each defense's points: the ranking must follow it (lower is better), not the test ASR
VALID_ASR = {
    "fine-prune": 30.0,
    "fine-tune": 60.0,
    "prune-only": 90.0,
    "anp": 10.0,
    "ft-sam": 5.0,
    "nad": 50.0,
    "incremental": 70.0,
    "nc-unlearn": 40.0,
    "fst": 15.0,
    "sau": 20.0,
    "i-bau": 25.0,
}


def test_der_is_backdoorbenchs_rating():
    assert der(90.0, 100.0, 90.0, 0.0) == 1.0  # attack gone, nothing lost
    assert der(90.0, 100.0, 90.0, 100.0) == 0.5  # nothing done
    assert der(90.0, 100.0, 80.0, 100.0) == 0.45  # accuracy lost for nothing
    assert der(None, 100.0, 80.0, 100.0) is None


class LeaderboardTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.client.force_login(self.alice)
        self.template = self.experiment({"epochs": [1]}, with_poisoned_valid=True)

    def start(self):
        t = self.template
        form = {
            "valid": t.valid.pk,
            "test": t.test.pk,
            "poisoned": [d.pk for d in t.poisoned.all()],
            "max_ca_drop": 5,
            "queue": "cpu",
        }
        with self.captureOnCommitCallbacks(execute=False):  # runs are stored, not sent to a worker here
            response = self.client.post(f"/badnets/{t.badnet.pk}/leaderboard", form)
        board = Leaderboard.objects.get()
        assert response.status_code == 302 and response["Location"] == f"/leaderboards/{board.pk}/"
        return board

    def test_one_click_searches_every_training_defense_within_one_budget_and_sweeps_the_others(self):
        board = self.start()
        assert board.budget == 100  # the form's default
        experiments = {e.space["defense"]: e for e in board.experiments.all()}
        assert set(experiments) == set(METHODS)
        for name, method in METHODS.items():
            space = experiments[name].space
            assert space["holdout"] == 0.2 and space["seed"] == 0  # every defense holds out the same part
            if can_search(method):
                assert space["search"] == {"budget": 100} and experiments[name].search["status"] == "queued"
            else:
                assert space == {"defense": name, **method.sweep, "holdout": 0.2, "seed": 0}
                assert set(experiments[name].runs.values_list("status", flat=True)) == {Run.QUEUED}
        assert {name for name, method in METHODS.items() if not can_search(method)} == {
            "anp",
            "incremental",
            "prune-only",
        }

    def finish_board(self, board, destroyed: set[str] = frozenset()):
        for experiment in board.experiments.all():
            name = experiment.space["defense"]

            def metrics(run, position, name=name):
                valid_acc = 50.0 if name in destroyed else 95.0 - position * 0.01
                return {
                    "ca": 94.0,
                    "asr": {"sunglasses": 100 - VALID_ASR[name], "sunglasses (validation)": VALID_ASR[name]},
                    "valid_acc": valid_acc,
                    "fraction": position / 8,
                    "stop": position == 2,
                    "position": position,
                    "goodnet": {"false_alarm": 1.0, "detection": {"sunglasses": 60.0}},
                    "before": {"ca": 96.0, "asr": {"sunglasses": 100.0}, "valid_acc": 96.0},
                }

            self.finish(experiment, metrics)

    def test_defenses_are_ranked_by_validation_not_by_the_test_sets(self):
        board = self.start()
        self.finish_board(board, destroyed={"nad"})
        rows = leaderboard_rows(board)
        order = [row["method"].name for row in rows]
        # incremental's point is its own stop (validation rule), ranked by its selection score like the others
        ranked = sorted((name for name in VALID_ASR if name != "nad"), key=lambda n: VALID_ASR[n])
        assert order[:-1] == ranked and order[-1] == "nad"  # the test ASR (100 - valid ASR) would invert it
        nad = rows[-1]
        assert nad["best"] is None and "no point meets that floor" in nad["rule"]
        top = rows[0]
        assert top["best"]["false_alarm"] == 1.0 and top["best"]["detection sunglasses"] == 60.0
        assert round(top["der"], 3) == round((0.05 - 0.02 + 1) / 2, 3)  # ASR 100 -> 95 on the test set, CA 96 -> 94
        # a defense whose runs stored no "before" (incremental pruning's, in a newcomer's walk) is rated against
        # the BadNet's figures another defense's runs stored: one BadNet and one set of test sets per board
        for point in Point.objects.filter(run__experiments__space__defense="incremental"):
            point.metrics.pop("before", None)
            point.save()
        incremental = next(row for row in leaderboard_rows(board) if row["method"].name == "incremental")
        assert not incremental["before"] and incremental["der"] is not None
        assert round(incremental["der"], 3) == round((VALID_ASR["incremental"] / 100 - 0.02 + 1) / 2, 3)
        page = self.client.get(f"/leaderboards/{board.pk}/").content.decode()
        assert page.index('data-method="ft-sam"') < page.index('data-method="anp"') < page.index('data-method="nad"')
        assert "no point selected" in page and 'data-finished="true"' in page and "<td>1</td>" in page

    def test_a_defense_still_running_is_neither_ranked_nor_offered_and_says_how_far_it_is(self):
        board = self.start()
        queued = {row["method"].name: row["state"] for row in leaderboard_rows(board)}
        assert queued["fine-prune"] == "queued: 0 of 100 units spent" and queued["anp"].startswith("queued: 0 of ")
        self.finish_board(board)
        anp = board.experiments.get(space__defense="anp")
        runs = list(anp.own_runs().order_by("pk"))
        # one of its runs is still going, between two points (what the count cannot show is said beside it)
        Run.objects.filter(pk=runs[0].pk).update(status=Run.RUNNING, stage="Neural Cleanse scan: 32 of 40 labels")
        row = next(r for r in leaderboard_rows(board) if r["method"].name == "anp")
        said = f"running: {len(runs) - 1} of {len(runs)} run{'s' if len(runs) != 1 else ''} done"
        assert row["best"] is None and row["state"] == f"{said} (Neural Cleanse scan: 32 of 40 labels)"
        page = self.client.get(f"/leaderboards/{board.pk}/").content.decode()
        anp_row = page[page.index('data-method="anp"') :].split("</tr>")[0]
        assert said in anp_row and "Compose" not in anp_row
        assert 'data-finished="false"' in page
        # the defenses that have ended are in order, but numbered only when the whole board has ended
        first = page[page.index('<tr class="defense"') :].split("</tr>")[0]
        assert "<td>1</td>" not in page and ">so far</small>" in first
        Run.objects.filter(pk=runs[0].pk).update(status=Run.CANCELLED)  # a user stopped it: the row says so
        row = next(r for r in leaderboard_rows(board) if r["method"].name == "anp")
        assert row["cancelled"] == f"cancelled: 1 of {len(runs)} run{'s' if len(runs) != 1 else ''}"

    def test_a_budget_that_buys_no_first_rung_of_some_defense_is_refused_naming_them(self):
        t = self.template
        form = {"valid": t.valid.pk, "test": t.test.pk, "poisoned": [d.pk for d in t.poisoned.all()], "budget": 12}
        response = self.client.post(f"/badnets/{t.badnet.pk}/leaderboard", form | {"max_ca_drop": 5, "queue": "cpu"})
        page = response.content.decode()
        assert response.status_code == 400 and not Leaderboard.objects.exists()
        assert (
            "I-BAU&#x27;s first rung (3 epochs) costs 42" in page
            and "SAU&#x27;s first rung (3 epochs) costs 39" in page
        )
        assert "FST" not in page.split("errorlist")[1][:400]  # FST's 3 units fit

    def test_sets_that_do_not_fit_are_not_offered_and_another_team_cannot_start_one(self):
        wide = self.dataset(Dataset.CLEAN_VALID, name="wide")
        Dataset.objects.filter(pk=wide.pk).update(height=55, width=47)
        page = self.client.get(f"/badnets/{self.template.badnet.pk}/leaderboard").content.decode()
        assert f'value="{self.template.valid.pk}"' in page and f'value="{wide.pk}"' not in page
        self.client.force_login(self.bob)
        assert self.client.get(f"/badnets/{self.template.badnet.pk}/leaderboard").status_code == 404
        assert Experiment.objects.count() == 1

    def test_a_goodnet_composed_from_the_board_shows_its_detector_figures_there(self):
        from webapp.lab.models import GoodNet

        board = self.start()
        self.finish_board(board)
        assert 'id="detectors"' not in self.client.get(f"/leaderboards/{board.pk}/").content.decode()
        run = Run.objects.filter(experiments__leaderboard=board).first()
        curve = {"false_alarm": [100.0, 0.0], "detection": [100.0, 0.0]}
        rates = {"false_alarm": 2.5, "detection": {"sunglasses": 97.0}}
        figures = {
            "rules": {"disagreement": rates, "STRIP": rates, "either": rates},
            "roc": {"sunglasses": {"disagreement": curve | {"auc": 0.812}, "STRIP": curve | {"auc": 0.987}}},
            "images": {"clean": 30},
            "threshold": 0.1,
            "frr": 1.0,
        }
        GoodNet.objects.create(team=self.blue, owner=self.alice, name="g", badnet=run.badnet, run=run, figures=figures)
        page = self.client.get(f"/leaderboards/{board.pk}/").content.decode()
        table = page[page.index('id="detectors"') :]
        assert "2.5 %" in table and "97.0 %" in table and "0.812 / 0.987" in table


class LeaderboardSeedsTestCase(BaseTestCase):
    def test_a_board_repeated_with_other_seeds_shows_the_spread_of_each_defenses_choice(self):
        self.client.force_login(self.alice)
        template = self.experiment({"epochs": [1]}, with_poisoned_valid=True)
        form = {
            "valid": template.valid.pk,
            "test": template.test.pk,
            "poisoned": [d.pk for d in template.poisoned.all()],
            "max_ca_drop": 5,
            "queue": "cpu",
        }
        for seed, ca in ((0, 90.0), (1, 94.0)):
            with self.captureOnCommitCallbacks(execute=False):
                self.client.post(f"/badnets/{template.badnet.pk}/leaderboard", form | {"seed": seed})
            board = Leaderboard.objects.get(seed=seed)
            for experiment in board.experiments.all():

                def metrics(run, position, ca=ca):
                    return {
                        "ca": ca,
                        "asr": {"sunglasses": 2.0, "sunglasses (validation)": 1.0},
                        "valid_acc": 95.0,
                        "stop": position == 1,
                        "before": {"ca": 96.0, "asr": {"sunglasses": 100.0}, "valid_acc": 96.0},
                    }

                self.finish(experiment, metrics)
        assert Leaderboard.objects.count() == 2  # another seed is another board, not the same one reopened
        page = self.client.get(f"/leaderboards/{Leaderboard.objects.get(seed=1).pk}/").content.decode()
        assert "Over seeds 0, 1" in page
        assert "CA 92.0 ± 2.8, ASR 2.0 ± 0.0 (2 boards)" in page  # mean and sample deviation of 90 and 94
