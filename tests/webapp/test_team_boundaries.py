"""Issue 12: work is never shared across teams. Two users in two teams upload byte-identical files (as two
teams that both use the public CSAW files or the deterministic demo data would) and create identical
experiments through the pages: each team gets its own runs, and nothing one team does (cancel, re-run,
GoodNet, profile, image test) touches or reveals the other's runs, results or files."""

import hashlib
import importlib
import json
import tempfile
from pathlib import Path

from django.apps import apps
from django.core.files.base import ContentFile
from django.urls import reverse
from rest_framework.authtoken.models import Token

from tests.defenses.tiny import tiny_data, write_dataset
from tests.webapp.base import TINY_REPORT, BaseTestCase
from webapp.lab.models import BadNet, Dataset, Experiment, GoodNet, Membership, Point, Profile, Run
from webapp.lab.services import add_dataset, experiment_points, request_profile

SPACE = {"thresholds": "0.5, 1.0", "learning_rates": "0.001", "epochs": "1"}
ALICE_CA = 87.654  # a value only alice's results contain: it must never show up in bob's pages, API or CSV


class TwoTeamsWithTheSameFiles(BaseTestCase):
    def setUp(self):
        super().setUp()
        folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        self.files = {
            "valid": write_dataset(folder / "clean_validation_data.h5", *tiny_data(30, seed=1)),
            "test": write_dataset(folder / "clean_test_data.h5", *tiny_data(30, seed=2)),
            "poisoned": write_dataset(folder / "sunglasses_poisoned_data.h5", *tiny_data(30, seed=3)),
        }
        self.model_bytes = b"the same BadNet bytes for both teams"  # rows only: model checks are tested elsewhere
        self.rows = {self.blue: self.upload(self.blue, self.alice), self.red: self.upload(self.red, self.bob)}

    def upload(self, team, user) -> dict:
        """The same files as every team that uses the public data: datasets through the real service."""
        badnet = BadNet.objects.create(
            team=team,
            owner=user,
            name="sunglasses",
            original_name="bd_net.h5",
            file=ContentFile(self.model_bytes, name="bd_net.h5"),
            sha256=hashlib.sha256(self.model_bytes).hexdigest(),
            n_classes=4,
            report=TINY_REPORT,
        )
        return {
            "badnet": badnet,
            "valid": add_dataset(team, user, self.files["valid"], "valid", Dataset.CLEAN_VALID),
            "test": add_dataset(team, user, self.files["test"], "test", Dataset.CLEAN_TEST),
            "poisoned": add_dataset(
                team, user, self.files["poisoned"], "sunglasses", Dataset.POISONED_TEST, "sunglasses", 0
            ),
        }

    def create_through_the_page(self, team, user) -> Experiment:
        rows = self.rows[team]
        self.client.force_login(user)
        form = {
            "name": "seed figure 2",
            "badnet": rows["badnet"].pk,
            "valid": rows["valid"].pk,
            "test": rows["test"].pk,
            "poisoned": [rows["poisoned"].pk],
            "defense": "fine-prune",
            "layers": "",
            "seed": 0,
            "max_drop": 4,
            "queue": "cpu",
            **SPACE,
        }
        response = self.client.post(reverse("new-experiment"), form)
        assert response.status_code == 302, response.content.decode()[-2000:]
        return Experiment.objects.filter(team=team).latest("pk")

    def finish_runs(self, experiment, ca=ALICE_CA):
        for run in experiment.runs.all():
            for position in range(run.total_positions):
                Point.objects.create(run=run, position=position, metrics={"ca": ca, "asr": {"sunglasses": 12.5}})
            run.finish(Run.DONE)

    def both(self, finish_alice=True) -> tuple[Experiment, Experiment]:
        mine = self.create_through_the_page(self.blue, self.alice)
        if finish_alice:
            self.finish_runs(mine)
        theirs = self.create_through_the_page(self.red, self.bob)
        return mine, theirs


class TeamBoundaryTestCase(TwoTeamsWithTheSameFiles):
    def test_identical_files_give_each_team_its_own_runs_queued_separately(self):
        mine = self.create_through_the_page(self.blue, self.alice)
        self.finish_runs(mine)
        with self.captureOnCommitCallbacks(execute=False) as queued:
            theirs = self.create_through_the_page(self.red, self.bob)
        for role in ("valid", "test", "poisoned", "badnet"):  # the same bytes, so the same fingerprint
            assert self.rows[self.blue][role].sha256 == self.rows[self.red][role].sha256
        assert mine.data_fingerprint() == theirs.data_fingerprint()
        alice_runs, bob_runs = set(mine.runs.all()), set(theirs.runs.all())
        assert len(alice_runs) == len(bob_runs) == 2 and not alice_runs & bob_runs
        assert {run.team for run in alice_runs} == {self.blue} and {run.team for run in bob_runs} == {self.red}
        assert {run.badnet for run in bob_runs} == {self.rows[self.red]["badnet"]}
        assert all(self.rows[self.red]["valid"].file.path == run.inputs["valid"] for run in bob_runs)
        assert {run.status for run in bob_runs} == {Run.QUEUED} and len(queued) == len(bob_runs)
        assert {run.status for run in Run.objects.filter(team=self.blue)} == {Run.DONE}
        assert Run.objects.count() == 4 and not Point.objects.filter(run__team=self.red).exists()
        points = experiment_points(theirs)
        assert {p["run"] for p in points} == {run.pk for run in bob_runs}
        assert all(p["metrics"] is None and p["status"] == Run.QUEUED for p in points)
        # and the reuse rule still works inside a team: a second identical experiment of red reuses red's runs
        again = self.create_through_the_page(self.red, self.bob)
        assert set(again.runs.all()) == bob_runs and Run.objects.count() == 4

    def test_bobs_cancel_and_rerun_do_not_touch_alices_runs(self):
        mine, theirs = self.both(finish_alice=False)
        self.client.force_login(self.bob)
        assert self.client.post(reverse("experiment-cancel", args=[theirs.pk])).status_code == 302
        bob_token = Token.objects.create(user=self.bob).key
        api = self.client.post(f"/api/experiments/{theirs.pk}/cancel/", HTTP_AUTHORIZATION=f"Token {bob_token}")
        assert api.status_code == 200
        assert not mine.runs.filter(cancel_requested=True).exists()
        assert theirs.runs.filter(cancel_requested=True).count() == 2
        Run.objects.update(status=Run.FAILED, error="out of memory")
        with self.captureOnCommitCallbacks(execute=False) as queued:
            assert self.client.post(reverse("experiment-rerun", args=[theirs.pk])).status_code == 302
        assert len(queued) == 2
        assert set(mine.runs.values_list("status", flat=True)) == {Run.FAILED}
        assert set(theirs.runs.values_list("status", flat=True)) == {Run.QUEUED}
        # bob cannot name alice's experiment at all
        assert self.client.post(reverse("experiment-cancel", args=[mine.pk])).status_code == 404
        assert self.client.post(reverse("experiment-rerun", args=[mine.pk])).status_code == 404

    def test_alices_results_never_appear_in_bobs_pages_api_or_csv(self):
        mine, theirs = self.both()
        self.finish_runs(theirs, ca=55.0)
        alice_runs = set(mine.runs.values_list("pk", flat=True))
        self.client.force_login(self.bob)
        pages = [
            reverse(name, args=[theirs.pk]) for name in ("experiment", "experiment-progress", "experiment-figures")
        ]
        pages += [
            reverse("chart", args=[theirs.pk, "vs-threshold", "csv"]),
            "/compare/",
            "/compare/?csv=pareto",
            "/compare/?csv=parallel",
            "/goodnets/",
            "/experiments/",
        ]
        for url in pages:
            response = self.client.get(url)
            assert response.status_code in (200, 286), (url, response.status_code)
            assert b"87.65" not in response.content, url
        token = Token.objects.create(user=self.bob).key
        auth = {"HTTP_AUTHORIZATION": f"Token {token}"}
        results = self.client.get(f"/api/experiments/{theirs.pk}/results/", **auth).json()
        assert {p["ca"] for p in results["points"]} == {55.0}
        assert not {p["run"] for p in results["points"]} & alice_runs
        listed = self.client.get("/api/experiments/", **auth).json()
        assert [e["id"] for e in listed["results"]] == [theirs.pk]
        assert not {run["id"] for run in listed["results"][0]["runs"]} & alice_runs
        assert {run["team"] for run in listed["results"][0]["runs"]} == {self.red.pk}
        assert "87.65" not in json.dumps(listed) + json.dumps(results)

    def test_goodnet_profile_and_image_test_cannot_name_the_other_teams_rows(self):
        mine, theirs = self.both()
        Run.objects.update(kind="finetune")
        alice_run = mine.runs.first()
        self.client.force_login(self.bob)
        refused = self.client.post(reverse("goodnet-from-run"), {"run-name": "stolen", "run-run": alice_run.pk})
        assert refused.status_code == 400 and not GoodNet.objects.exists()
        alice_valid = self.rows[self.blue]["valid"]
        network = f"badnet-{self.rows[self.red]['badnet'].pk}"
        classify = self.client.post(
            reverse("classify"), {"network": network, "sample_dataset": alice_valid.pk, "sample_indices": "0"}
        )
        assert classify.status_code == 400 and b"sample_dataset" in classify.content
        token = Token.objects.create(user=self.bob).key
        api = self.client.post(
            "/api/classify/",
            {"network": f"badnet-{self.rows[self.red]['badnet'].pk}", "sample_dataset": alice_valid.pk},
            HTTP_AUTHORIZATION=f"Token {token}",
        )
        assert api.status_code == 400 and "sample_dataset" in api.json()["errors"]
        profile = self.client.post(
            reverse("badnet-profile", args=[self.rows[self.red]["badnet"].pk]), {"dataset": alice_valid.pk}
        )
        assert profile.status_code == 404
        assert (
            self.client.post(
                reverse("badnet-profile", args=[self.rows[self.red]["badnet"].pk]), {"dataset": "abc"}
            ).status_code
            == 400
        )  # not an id: a reason, not a 500
        with self.assertRaises(ValueError):
            request_profile(self.rows[self.red]["badnet"], alice_valid)
        assert not Profile.objects.exists()


class AnotherOfMyTeamsTestCase(TwoTeamsWithTheSameFiles):
    """Alice is in blue (current: first by name) and red. A red row opens, names its team and its forms act
    on red; blue stays the current team."""

    def setUp(self):
        super().setUp()
        Membership.objects.create(user=self.alice, team=self.red)

    def test_a_row_of_another_team_names_its_team_and_its_buttons_act_there(self):
        mine, theirs = self.both(finish_alice=False)
        self.client.force_login(self.alice)
        page = self.client.get(reverse("experiment", args=[theirs.pk])).content.decode()
        assert "In team <b>red</b>, not blue" in page
        assert reverse("switch-team", args=[self.red.pk]) in page
        assert "other-team" not in self.client.get(reverse("experiment", args=[mine.pk])).content.decode()
        self.client.post(reverse("experiment-cancel", args=[theirs.pk]))
        assert theirs.runs.filter(cancel_requested=True).count() == 2
        assert not mine.runs.filter(cancel_requested=True).exists()
        assert self.client.session.get("team_id") in (None, self.blue.pk)  # not switched behind her back

        red_badnet = self.rows[self.red]["badnet"]
        Dataset.objects.filter(pk=self.rows[self.blue]["valid"].pk).update(name="blue's own valid")
        page = self.client.get(reverse("badnet", args=[red_badnet.pk])).content.decode()
        assert "In team <b>red</b>" in page and "blue&#x27;s own valid" not in page
        assert f'<option value="{self.rows[self.red]["valid"].pk}">' in page
        assert 'id="new-experiment-elsewhere"' in page
        response = self.client.post(
            reverse("badnet-profile", args=[red_badnet.pk]), {"dataset": self.rows[self.blue]["valid"].pk}
        )
        assert response.status_code == 404
        self.client.post(reverse("badnet-profile", args=[red_badnet.pk]), {"dataset": self.rows[self.red]["valid"].pk})
        assert Profile.objects.get().dataset.team == self.red
        assert (
            "In team <b>red</b>"
            in self.client.get(reverse("dataset", args=[self.rows[self.red]["valid"].pk])).content.decode()
        )


class ApiTeamTestCase(TwoTeamsWithTheSameFiles):
    def setUp(self):
        super().setUp()
        self.auth = {"HTTP_AUTHORIZATION": f"Token {Token.objects.create(user=self.alice).key}"}

    def test_a_malformed_team_is_a_400_and_a_foreign_one_a_404_with_reasons(self):
        upload = {"name": "v", "role": Dataset.CLEAN_VALID}
        for bad in ("abc", "1.0", "-1", "１"):
            with open(self.files["valid"], "rb") as handle:
                response = self.client.post("/api/datasets/", upload | {"file": handle, "team": bad}, **self.auth)
            assert response.status_code == 400, (bad, response.status_code)
            assert "give the id" in response.json()["errors"]["team"][0]["message"]
        for bad in ("abc", [self.blue.pk], 1.5, True, {"id": 1}):
            response = self.client.post(
                "/api/experiments/", {"name": "x", "team": bad}, content_type="application/json", **self.auth
            )
            assert response.status_code == 400, (bad, response.status_code)
            assert "team" in response.json()["errors"]
        foreign = self.client.post(
            "/api/experiments/", {"name": "x", "team": self.red.pk}, content_type="application/json", **self.auth
        )
        assert foreign.status_code == 404 and "not a member of team" in foreign.json()["detail"]
        assert self.client.get("/api/experiments/?team=abc", **self.auth).status_code == 400
        assert self.client.get(f"/api/experiments/?team={self.red.pk}", **self.auth).status_code == 404
        assert self.client.get("/api/badnets/?team=1&team=2", **self.auth).status_code == 400
        assert not Experiment.objects.exists() and Dataset.objects.count() == 6

    def test_lists_narrow_to_one_team_and_creates_say_their_team(self):
        Membership.objects.create(user=self.alice, team=self.red)
        assert self.client.get("/api/datasets/", **self.auth).json()["count"] == 6
        red = self.client.get(f"/api/datasets/?team={self.red.pk}", **self.auth).json()
        assert red["count"] == 3 and {row["team"] for row in red["results"]} == {self.red.pk}
        blue_badnet = self.rows[self.blue]["badnet"]
        assert self.client.get(f"/api/badnets/{blue_badnet.pk}/?team={self.red.pk}", **self.auth).status_code == 404
        rows = self.rows[self.red]
        payload = {
            "name": "in red",
            "team": str(self.red.pk),
            "badnet": rows["badnet"].pk,
            "valid": rows["valid"].pk,
            "test": rows["test"].pk,
            "poisoned": [rows["poisoned"].pk],
            "thresholds": [1.0],
            "learning_rates": [0.001],
            "epochs": [1],
        }
        created = self.client.post("/api/experiments/", payload, content_type="application/json", **self.auth)
        assert created.status_code == 201, created.json()
        assert created.json()["team"] == self.red.pk and {r["team"] for r in created.json()["runs"]} == {self.red.pk}
        # blue's rows are not choices of a red experiment
        payload |= {"badnet": self.rows[self.blue]["badnet"].pk}
        assert (
            self.client.post("/api/experiments/", payload, content_type="application/json", **self.auth).status_code
            == 400
        )

    def test_the_schema_documents_the_team_parameter(self):
        schema = self.client.get("/api/schema/?format=json").json()
        for path, methods in schema["paths"].items():
            if path.startswith("/api/") and path != "/api/":
                for method, operation in methods.items():
                    names = [p["name"] for p in operation.get("parameters", [])]
                    assert "team" in names, (path, method)


class MigrationTestCase(BaseTestCase):
    """Migration 0003 (run on a copy of the data as it stood before issue 12): keys become team-scoped,
    and an experiment linked to another team's run gets a cancelled run of its own instead."""

    def test_shared_runs_are_split_and_keys_scoped(self):
        migration = importlib.import_module("webapp.lab.migrations.0003_runs_per_team")
        blue = self.experiment({"thresholds": [1.0], "learning_rates": [0.001], "epochs": [1]})
        red = self.experiment({"thresholds": [1.0], "learning_rates": [0.001], "epochs": [1]}, team=self.red)
        run = Run.objects.create(
            team=self.blue,
            badnet=blue.badnet,
            key="w" * 64,
            kind="finetune",
            config={"threshold": 1.0, "lr": 0.001, "epochs": 1, "layers": [], "seed": 0},
            inputs={},
            status=Run.DONE,
        )
        Point.objects.create(run=run, position=0, metrics={"ca": ALICE_CA})
        blue.runs.add(run)
        red.runs.add(run)  # the bug: red's identical experiment was given blue's run
        migration.scope_runs_to_teams(apps, None)
        run.refresh_from_db()
        assert run.key == Run.team_scoped("w" * 64, self.blue.pk) and list(blue.runs.all()) == [run]
        own = red.runs.get()
        assert own != run and own.team == self.red and own.badnet == red.badnet and own.status == Run.CANCELLED
        assert own.key == Run.team_scoped("w" * 64, self.red.pk) and "Re-run" in own.error
        assert own.inputs["valid"] == red.valid.file.path and not own.points.exists()
        assert own.config == run.config
