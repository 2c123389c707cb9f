"""The new-experiment form, the experiment page's live partial, its charts (carrying the stored numbers),
the CSV downloads, honest selection, cancel and re-run."""

import csv
import io

from rest_framework.authtoken.models import Token

from defenses.selection import SELECTED_ON_CLEAN_VALID, SELECTED_WITH_POISONED_VALID
from tests.webapp.base import BaseTestCase
from webapp.lab.models import Dataset, Experiment, Point, Run
from webapp.lab.services import experiment_points

GRID = {"thresholds": [0.5, 1.0], "learning_rates": [0.001, 0.01], "epochs": [1, 2]}


def grid_metrics(run, position):
    """CA falls with T, ASR falls with LR and epochs; validation says the opposite of the test sets
    about which T is best, so a selection that peeks at test data is caught."""
    t, lr = run.config["threshold"], run.config["lr"]
    ca = 95.0 - 10 * t - position
    asr = max(0.0, 80.0 - 2000 * lr - 20 * position)
    return {
        "ca": ca,
        "asr": {"sunglasses": asr, "sunglasses (validation)": 10 * t},
        "valid_acc": 90.0 - position,
        "pruned": {"conv_a": 1},
        "before": {"ca": 96.0, "asr": {"sunglasses": 100.0}, "valid_acc": 91.0},
    }


class ExperimentPageTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.client.force_login(self.alice)

    def form_data(self, **changes) -> dict:
        valid, test = self.dataset(name="v"), self.dataset(Dataset.CLEAN_TEST, name="t")
        poisoned = self.dataset(Dataset.POISONED_TEST, name="p", trigger="sunglasses")
        data = {
            "name": "grid",
            "badnet": self.badnet().pk,
            "valid": valid.pk,
            "test": test.pk,
            "poisoned": [poisoned.pk],
            "defense": "fine-prune",
            "thresholds": "0.8, 1, 1.2",
            "learning_rates": "0.001, 0.003",
            "epochs": "30, 33, 35",
            "layers": "",
            "seed": 0,
            "max_drop": 4,
            "queue": "cpu",
        }
        return data | changes

    def test_a_search_is_stored_with_its_budget_and_held_out_share_and_queued_as_one_task(self):
        with self.captureOnCommitCallbacks(execute=False) as sent:
            response = self.client.post("/experiments/new/", self.form_data(budget="40", holdout="25"))
        experiment = Experiment.objects.get()
        assert response.status_code == 302 and len(sent) == 1  # one message: the search task, not a run each
        assert experiment.space["search"] == {"budget": 40} and experiment.space["holdout"] == 0.25
        assert experiment.search["status"] == "queued" and not experiment.runs.exists()
        preview = self.client.post("/experiments/plan", self.form_data(budget="40")).content.decode()
        assert "within <b>40</b> fine-tuning-epoch units" in preview and "trains to 3, 9, 27 epochs" in preview
        preview = self.client.post("/experiments/plan", self.form_data(budget="20")).content.decode()
        assert "trains to 3, 9 epochs" in preview
        assert "buys at most 6 first rungs, and no trial can reach 27 epochs" in preview

    def test_gpu_workers_are_refused_with_the_reason_when_none_is_running(self):
        response = self.client.post("/experiments/new/", self.form_data(queue="gpu"))
        assert not Experiment.objects.exists()
        self.assertContains(response, "No GPU worker is running now, so these runs would wait forever", status_code=400)

    def test_plan_preview_counts_runs_and_epochs_before_submitting(self):
        response = self.client.post("/experiments/plan", self.form_data())
        text = response.content.decode()
        assert "<b>18</b> points from <b>6</b> runs" in text  # 3 T x 2 LR trained to 35 epochs each
        assert (
            "<b>210</b> training epochs" in text
            and "with a separate run per point, as the seed report did: 588" in text
        )

    def test_a_30_epoch_request_is_served_by_a_stored_40_epoch_run_without_training(self):
        one_pair = {"thresholds": "1", "learning_rates": "0.001"}
        self.client.post("/experiments/new/", self.form_data(name="long", epochs="40", **one_pair))
        long_run = Experiment.objects.get(name="long").runs.get()
        for position in range(41):
            Point.objects.create(run=long_run, position=position, metrics=grid_metrics(long_run, position))
        long_run.finish(Run.DONE)
        form = self.form_data(name="short", epochs="10, 30", **one_pair)
        data = {name: form[name] for name in ("badnet", "valid", "test", "poisoned")}

        preview = self.client.post("/experiments/plan", form).content.decode()
        assert "This run is already stored or under way in your team, so <b>0</b> training epochs are new" in preview
        assert f'<a href="/runs/{long_run.pk}/">run {long_run.pk}</a> (done), trained to 40 epochs' in preview
        assert "holds the points of every epoch up to 30: nothing is trained again" in preview
        longer = self.client.post("/experiments/plan", self.form_data(epochs="50", **one_pair | data)).content
        assert b"plan-reuse" not in longer  # 40 epochs cannot serve 50: a new run trains

        page = self.client.post("/experiments/new/", form, follow=True).content.decode()
        short = Experiment.objects.get(name="short")
        assert list(short.runs.all()) == [long_run] and Run.objects.count() == 1
        # the message says that nothing was queued, not "1 runs queued"
        assert "short: Its run was already done in your team: its points are shown, nothing is trained again." in page
        points = {row["epochs"]: row["metrics"] for row in experiment_points(short)}
        assert points[30] == grid_metrics(long_run, 30) and points[10] == grid_metrics(long_run, 10)

    def test_a_failed_longer_run_does_not_serve_a_shorter_request(self):
        one_pair = {"thresholds": "1", "learning_rates": "0.001"}
        self.client.post("/experiments/new/", self.form_data(name="long", epochs="40", **one_pair))
        long_run = Experiment.objects.get(name="long").runs.get()
        long_run.finish(Run.FAILED, "out of memory")
        form = self.form_data(name="short", epochs="30", **one_pair)
        assert b"plan-reuse" not in self.client.post("/experiments/plan", form).content
        self.client.post("/experiments/new/", form)
        short_run = Experiment.objects.get(name="short").runs.get()
        assert short_run != long_run and short_run.config["epochs"] == 30 and short_run.status == Run.QUEUED

    def test_a_study_template_fills_the_form(self):
        response = self.client.get("/experiments/new/?template=figure-3-learning-rate")
        assert b'value="0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1"' in response.content

    def test_submitting_stores_the_experiment_and_its_runs(self):
        response = self.client.post("/experiments/new/", self.form_data())
        experiment = Experiment.objects.get(name="grid")
        assert response.status_code == 302 and response["Location"] == f"/experiments/{experiment.pk}/"
        assert experiment.runs.count() == 6 and experiment.space["epochs"] == [30, 33, 35]
        assert set(experiment.runs.values_list("status", flat=True)) == {Run.QUEUED}
        assert "grid: 6 runs queued or under way." in self.client.get(response["Location"]).content.decode()

    def test_a_plan_partly_served_by_stored_runs_says_how_many_of_them(self):
        one = {"thresholds": "1", "learning_rates": "0.001", "epochs": "2"}
        first = self.form_data(name="first", **one)
        self.client.post("/experiments/new/", first)
        Experiment.objects.get(name="first").runs.get().finish(Run.DONE)
        form = self.form_data(name="more", thresholds="1, 1.2", learning_rates="0.001", epochs="2")
        data = {name: first[name] for name in ("badnet", "valid", "test", "poisoned")}
        preview = self.client.post("/experiments/plan", form | data).content.decode()
        assert "1 of these 2 runs is already stored or under way in your team, so <b>2</b> training epochs" in preview
        page = self.client.post("/experiments/new/", form | data, follow=True).content.decode()
        assert "more: 1 run queued or under way, 1 already done (nothing trained again)." in page

    def test_bad_values_are_refused_with_advice_and_nothing_is_stored(self):
        for changes, message in [
            ({"thresholds": "0.8, lots"}, "is not a list of numbers"),
            ({"thresholds": "0:2:0.0001"}, "more than 400 values"),
            ({"thresholds": "3"}, "between 0 and 2"),
            ({"epochs": "2.5"}, "is not a list of numbers"),
            ({"layers": "dense"}, "not conv layers"),
            ({"poisoned": []}, "at least one poisoned test set"),
            ({"holdout": "90"}, "less than or equal to 50"),
            ({"holdout": "5", "valid": self.dataset(name="few", count=8).pk}, "leaves no image to choose on"),
            ({"budget": "0"}, "greater than or equal to 1"),
            ({"budget": "100000"}, "less than or equal to 5000"),
            ({"budget": "12", "defense": "prune-only"}, "has no training epochs to search over"),
            ({"budget": "12", "defense": "anp", "mask_thresholds": "0.2"}, "has no training epochs to search over"),
            ({"budget": "20", "defense": "i-bau"}, "first rung (3 epochs) costs 42 fine-tuning-epoch units"),
        ]:
            response = self.client.post("/experiments/new/", self.form_data(**changes))
            assert response.status_code == 400 and message in response.content.decode(), changes
        assert not Experiment.objects.exists()

    def test_charts_carry_the_stored_numbers(self):
        experiment = self.experiment(GRID)
        self.finish(experiment, grid_metrics)
        charts = self.client.get(f"/experiments/{experiment.pk}/figures").json()["charts"]
        assert set(charts) == {"vs-threshold", "vs-lr", "vs-epochs", "grid"}
        ca_line = next(t for t in charts["vs-threshold"]["figure"]["data"] if t["name"] == "CA · LR 0.001, 2 ep")
        assert ca_line["x"] == [0.5, 1.0] and ca_line["y"] == [88.0, 83.0]
        assert charts["vs-lr"]["figure"]["layout"]["xaxis"]["type"] == "log"
        heat = charts["grid"]["figure"]["data"][0]
        # coloured by what the choice reads: without poisoned validation sets, validation accuracy (90 - epoch),
        # best at 1 epoch in every cell; the test score (CA + 100 - ASR) / 2 of that point beside it
        assert heat["z"] == [[89.0, 89.0], [89.0, 89.0]]
        assert heat["text"][0][0] == f"89.0 (1 ep, test {(89 + 100 - 58) / 2:.1f})"

    def test_the_best_cell_is_chosen_on_validation_data_only(self):
        experiment = self.experiment(GRID, with_poisoned_valid=True)
        self.finish(experiment, grid_metrics)
        charts = self.client.get(f"/experiments/{experiment.pk}/figures").json()["charts"]
        star = charts["grid"]["figure"]["data"][1]
        # test score prefers nothing about T beyond CA, but validation ASR (10 T) prefers T 0.5
        assert star["y"] == ["0.5"] and SELECTED_WITH_POISONED_VALID in star["name"]
        outline = charts["grid"]["figure"]["layout"]["shapes"][0]  # around the cell, its number left readable
        assert (outline["y0"], outline["y1"]) == (-0.5, 0.5) and charts["grid"]["figure"]["data"][0]["y"][0] == "0.5"
        page = self.client.get(f"/experiments/{experiment.pk}/").content.decode()
        assert SELECTED_WITH_POISONED_VALID in page

    def test_without_poisoned_validation_data_the_rule_says_so(self):
        experiment = self.experiment(GRID)
        self.finish(experiment, grid_metrics)
        assert SELECTED_ON_CLEAN_VALID in self.client.get(f"/experiments/{experiment.pk}/").content.decode()

    def test_chart_csv_is_the_charts_data(self):
        experiment = self.experiment(GRID)
        self.finish(experiment, grid_metrics)
        response = self.client.get(f"/experiments/{experiment.pk}/charts/vs-threshold.csv")
        rows = list(csv.DictReader(io.StringIO(response.content.decode())))
        assert response["Content-Type"] == "text/csv" and len(rows) == 8
        row = next(r for r in rows if r["threshold"] == "1.0" and r["lr"] == "0.01" and r["epochs"] == "1")
        assert float(row["ca"]) == 84.0 and float(row["asr sunglasses"]) == 40.0
        assert self.client.get(f"/experiments/{experiment.pk}/charts/nothing.csv").status_code == 404

    def test_table_2_compares_fine_tuning_with_and_without_pruning(self):
        experiment = self.experiment({"thresholds": [0.0, 0.8], "learning_rates": [0.001], "epochs": [2]})
        self.finish(experiment, grid_metrics)
        bars = self.client.get(f"/experiments/{experiment.pk}/figures").json()["charts"]["pruning-vs-none"]
        ca = bars["figure"]["data"][0]
        assert ca["x"][0].startswith("fine-tune only") and ca["y"] == [93.0, 85.0]

    def test_progress_polls_until_finished_then_stops(self):
        experiment = self.experiment(GRID)
        from webapp.lab.services import submit

        submit(experiment, enqueue=False)
        running = self.client.get(f"/experiments/{experiment.pk}/progress")
        assert running.status_code == 200 and b'hx-trigger="every 2s"' in running.content
        assert running["HX-Trigger"] == "charts-changed"
        experiment.runs.update(status=Run.DONE, progress=1.0)
        done = self.client.get(f"/experiments/{experiment.pk}/progress")
        assert done.status_code == 286 and b"every 2s" not in done.content and b"100%" in done.content

    def test_failed_runs_show_their_reason_and_rerun_in_place(self):
        experiment = self.experiment(GRID)
        runs = self.finish(experiment, grid_metrics)
        Run.objects.filter(pk=runs[0].pk).update(status=Run.FAILED, error="Bad input: broken.h5 is not HDF5")
        assert b"Bad input: broken.h5 is not HDF5" in self.client.get(f"/experiments/{experiment.pk}/").content
        with self.captureOnCommitCallbacks(execute=False):
            self.client.post(f"/experiments/{experiment.pk}/rerun")
        assert Run.objects.get(pk=runs[0].pk).status == Run.QUEUED and experiment.runs.count() == len(runs)

    def test_a_queued_run_says_its_place_in_the_teams_line(self):
        experiment = self.experiment(GRID)
        from webapp.lab.services import submit

        runs = submit(experiment, enqueue=False)
        Run.objects.filter(pk__in=[r.pk for r in runs]).update(task_id="sent")  # as their messages were sent
        Run.objects.filter(pk=runs[0].pk).update(status=Run.RUNNING)
        page = self.client.get(f"/experiments/{experiment.pk}/progress").content.decode()
        assert "next in your team's line<" in page and f"{len(runs) - 2} of your team's runs ahead<" in page

    def test_cancel_ends_queued_runs_at_once_and_asks_running_ones_to_stop(self):
        experiment = self.experiment(GRID)
        from webapp.lab.services import submit

        runs = submit(experiment, enqueue=False)
        Run.objects.filter(pk=runs[0].pk).update(status=Run.RUNNING)
        Run.objects.filter(pk=runs[1].pk).update(status=Run.DONE)
        page = self.client.post(f"/experiments/{experiment.pk}/cancel", follow=True)
        assert f"{len(runs) - 1} runs stopped: queued ones now".encode() in page.content
        statuses = dict(experiment.runs.values_list("pk", "status"))
        assert statuses.pop(runs[0].pk) == Run.RUNNING and statuses.pop(runs[1].pk) == Run.DONE
        assert set(statuses.values()) == {Run.CANCELLED}
        assert Run.objects.get(pk=runs[0].pk).cancel_requested and not Run.objects.get(pk=runs[1].pk).cancel_requested
        again = self.client.post(f"/experiments/{experiment.pk}/cancel", follow=True)
        assert b"1 run stopped" in again.content  # the running one is still asked; the ended ones are not


class IncrementalPageTestCase(BaseTestCase):
    def test_the_fraction_pruned_curve_marks_where_the_validation_rule_stopped(self):
        self.client.force_login(self.alice)
        experiment = self.experiment({"defense": "incremental", "max_drop": 4.0})

        def step(run, position):
            return {
                "fraction": position / 8,
                "ca": 90.0 - position,
                "valid_acc": 91.0 - position,
                "stop": position == 5,
                "asr": {"sunglasses": 100.0 - 10 * position},
            }

        self.finish(experiment, step)
        chart = self.client.get(f"/experiments/{experiment.pk}/figures").json()["charts"]["incremental"]["figure"]
        ca, valid, asr = chart["data"]
        assert ca["x"] == [p / 8 for p in range(9)] and ca["y"] == [90.0 - p for p in range(9)]
        assert asr["y"][5] == 50.0 and chart["layout"]["shapes"][0]["x0"] == 5 / 8


class CompatibilityTestCase(BaseTestCase):
    """A set must fit the BadNet (image size, labels, a poisoned set's target), in the form and the API alike;
    the form offers each set with the BadNets it fits."""

    def setUp(self):
        super().setUp()
        self.client.force_login(self.alice)
        self.template = self.experiment(GRID)
        self.token = {"HTTP_AUTHORIZATION": f"Token {Token.objects.create(user=self.alice).key}"}

    def payload(self, **changes) -> dict:
        t = self.template
        payload = {"name": "api", "badnet": t.badnet.pk, "valid": t.valid.pk, "test": t.test.pk}
        payload |= {"poisoned": [t.poisoned.get().pk], "thresholds": [1.0], "learning_rates": [0.001], "epochs": [1]}
        return payload | changes

    def misfits(self) -> dict[str, tuple[Dataset, str]]:
        big = self.dataset(Dataset.CLEAN_VALID, name="faces-55x47")
        Dataset.objects.filter(pk=big.pk).update(height=55, width=47)
        wide = self.dataset(Dataset.CLEAN_TEST, name="1283-identities")
        Dataset.objects.filter(pk=wide.pk).update(label_max=1282)
        target = self.dataset(Dataset.POISONED_TEST, name="far-target", trigger="lipstick")
        Dataset.objects.filter(pk=target.pk).update(target=9)
        return {
            "valid": (big, "holds 55x47 images; blue-badnet takes 12x10"),
            "test": (wide, "has labels up to 1282; blue-badnet has classes 0..3"),
            "poisoned": (target, "declares target 9; blue-badnet has classes 0..3"),
        }

    def test_the_api_refuses_a_set_that_does_not_fit_and_says_which_and_why(self):
        for field, (dataset, reason) in self.misfits().items():
            value = [dataset.pk] if field == "poisoned" else dataset.pk
            refused = self.client.post(
                "/api/experiments/", self.payload(**{field: value}), content_type="application/json", **self.token
            )
            assert refused.status_code == 400, field
            message = refused.json()["errors"][field][0]["message"]
            assert message.startswith(dataset.name) and reason in message, message
        assert Experiment.objects.count() == 1  # the template only

    def test_the_form_refuses_it_too_and_offers_each_set_with_the_badnets_it_fits(self):
        misfits = self.misfits()
        valid, reason = misfits["valid"]
        data = self.payload(
            valid=valid.pk,
            thresholds="1",
            learning_rates="0.001",
            epochs="1",
            defense="fine-prune",
            seed=0,
            max_drop=4,
            queue="cpu",
            layers="",
        )
        response = self.client.post("/experiments/new/", data)
        assert response.status_code == 400 and reason in response.content.decode()
        page = self.client.get("/experiments/new/").content.decode()
        badnet = self.template.badnet.pk
        assert f'value="{self.template.valid.pk}" data-fits="{badnet}"' in page
        assert f'value="{valid.pk}" data-fits=""' in page

    def test_a_floor_outside_0_to_100_is_refused(self):
        refused = self.client.post(
            "/api/experiments/", self.payload(max_ca_drop=-1), content_type="application/json", **self.token
        )
        assert refused.status_code == 400 and "max_ca_drop" in refused.json()["errors"]
        created = self.client.post(
            "/api/experiments/", self.payload(max_ca_drop=2.5), content_type="application/json", **self.token
        )
        assert created.status_code == 201 and created.json()["max_ca_drop"] == 2.5


class ChartStyleTestCase(BaseTestCase):
    def test_every_series_has_its_colour_and_every_metric_its_line_style(self):
        self.client.force_login(self.alice)
        experiment = self.experiment(GRID, triggers=("sunglasses", "lipstick"))
        self.finish(experiment, grid_metrics)
        charts = self.client.get(f"/experiments/{experiment.pk}/figures").json()["charts"]
        traces = charts["vs-threshold"]["figure"]["data"]
        ca = [t for t in traces if t["name"].startswith("CA · ")]
        assert len(ca) == 4 and len({t["line"]["color"] for t in ca}) == 4  # 2 LR x 2 epochs: four series
        assert {t["line"]["dash"] for t in ca} == {"solid"}
        series = ca[0]["legendgroup"]
        mine = [t for t in traces if t["legendgroup"] == series]
        assert [t["name"].split(" · ")[0] for t in mine] == ["CA", "ASR lipstick", "ASR sunglasses"]
        assert len({t["line"]["dash"] for t in mine}) == 3 and len({t["line"]["color"] for t in mine}) == 1
        assert "Line style: CA solid, ASR lipstick dash, ASR sunglasses dot" in charts["vs-threshold"]["note"]


class ListAndExportTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.client.force_login(self.alice)
        self.exp = self.experiment(GRID)
        self.finish(self.exp, grid_metrics)

    def test_the_list_shows_status_progress_and_the_selected_point(self):
        page = self.client.get("/experiments/").content.decode()
        row = page[page.index("blue-study") :]
        assert 'class="status-done">done<' in row and 'title="100%"' in row
        assert "T 0.5, LR 0.001, 1 ep: 89.0 / 58.0" in row  # the validation-selected point: CA / mean ASR
        from webapp.lab.models import Run

        Run.objects.filter(pk=self.exp.runs.first().pk).update(status=Run.RUNNING, progress=0.5)
        assert 'class="status-running">running<' in self.client.get("/experiments/").content.decode()

    def test_one_export_of_every_point_in_csv_and_json(self):
        rows = list(
            csv.DictReader(io.StringIO(self.client.get(f"/experiments/{self.exp.pk}/points.csv").content.decode()))
        )
        assert len(rows) == 8 and {"threshold", "lr", "epochs", "ca", "asr sunglasses", "valid_acc", "run"} <= set(
            rows[0]
        )
        body = self.client.get(f"/experiments/{self.exp.pk}/points.json").json()
        assert (
            len(body["points"]) == 8 and body["best"]["threshold"] == 0.5 and "at most 5 points below" in body["rule"]
        )
        assert body["experiment"]["max_ca_drop"] == 5.0 and body["experiment"]["sets"]["valid"]["name"] == "blue-valid"
        assert "poisoned sunglasses" in body["experiment"]["sets"]


class RunMemoryTestCase(BaseTestCase):
    def test_sets_a_worker_could_not_hold_are_refused_before_any_run(self):
        """Three 26 MB uploads of 50,000 images made a worker hold 6.5 GB (second attack review)."""
        from django.test import override_settings

        self.client.force_login(self.alice)
        template = self.experiment(GRID)
        Dataset.objects.filter(pk=template.test.pk).update(count=50_000)  # 12x10 images: 72 MB as float32
        payload = {
            "name": "big",
            "badnet": template.badnet.pk,
            "valid": template.valid.pk,
            "test": template.test.pk,
            "poisoned": [template.poisoned.get().pk],
            "thresholds": [1.0],
            "learning_rates": [0.001],
            "epochs": [1],
        }
        token = {"HTTP_AUTHORIZATION": f"Token {Token.objects.create(user=self.alice).key}"}
        with override_settings(MAX_RUN_PIXEL_BYTES=64 * 2**20):
            refused = self.client.post("/api/experiments/", payload, content_type="application/json", **token)
        assert refused.status_code == 400
        assert "0.1 GiB of pixels as a worker reads them; the limit is 0.1 GiB" in str(refused.json()["errors"])
        assert Experiment.objects.count() == 1
        created = self.client.post("/api/experiments/", payload, content_type="application/json", **token)
        assert created.status_code == 201  # the default (4 GiB) holds it
