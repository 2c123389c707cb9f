"""An experiment's progress tells the truth: time left only while work runs, from the pace its runs have kept
(seconds a stored point), never counting the time a run waited in the queue; queued work says it waits."""

from datetime import timedelta

from django.utils import timezone

from tests.webapp.base import BaseTestCase
from webapp.lab.models import Experiment, Run
from webapp.lab.results import progress
from webapp.lab.services import submit

GRID = {"thresholds": [0.5, 1.0], "learning_rates": [0.01], "epochs": [10]}  # 2 runs of 11 points


class ProgressTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.exp = self.experiment(GRID)
        self.runs = submit(self.exp, enqueue=False)
        Run.objects.filter(pk__in=[r.pk for r in self.runs]).update(task_id="sent")

    def test_queued_work_waits_in_line_and_has_no_time_left(self):
        state = progress(self.exp)
        assert state["seconds_left"] is None and state["waiting"]
        assert [run.place for run in state["runs"]] == [1, 2]
        self.client.force_login(self.alice)
        page = self.client.get(f"/experiments/{self.exp.pk}/").content.decode()
        assert (
            "waiting for a worker" in page
            and "next in your team's line" in page
            and "left" not in page.split("progress-words")[1][:200]
        )
        # a search of the team holds a worker for all its trials (its rungs are never queued): said, not counted
        searching = self.experiment({"epochs": [10]})
        Experiment.objects.filter(pk=searching.pk).update(
            space=searching.space | {"search": {"budget": 40}}, search={"status": "running"}
        )
        page = self.client.get(f"/experiments/{self.exp.pk}/").content.decode()
        assert "1 search of your team holds workers for all its trials and may start first" in page

    def test_time_left_is_the_measured_pace_times_the_points_left_whatever_the_queue_took(self):
        now = timezone.now()
        first, second = self.runs
        # the first run waited an hour in the queue, then stored 5 of its 11 points in 50 s: 10 s a point
        Run.objects.filter(pk=first.pk).update(
            status=Run.RUNNING, started_at=now - timedelta(seconds=50), heartbeat_at=now, progress=5 / 11
        )
        state = progress(self.exp)
        assert not state["waiting"]
        assert abs(state["seconds_left"] - 10 * (6 + 11)) < 1e-6  # its 6 points left and the second run's 11
        self.client.force_login(self.alice)
        page = self.client.get(f"/experiments/{self.exp.pk}/").content.decode()
        assert "about 3 min left" in page  # 170 s, in minutes

    def test_a_running_run_says_what_it_does_between_points_until_its_next_point(self):
        first = self.runs[0]
        Run.objects.filter(pk=first.pk).update(status=Run.RUNNING, started_at=timezone.now())
        first.refresh_from_db()
        first.set_stage("Neural Cleanse scan: 64 of 100 labels")  # as a scan reports through Loaded.on_stage
        self.client.force_login(self.alice)
        partial = self.client.get(f"/experiments/{self.exp.pk}/progress").content.decode()
        assert '<small class="stage">Neural Cleanse scan: 64 of 100 labels</small>' in partial
        first.record_point(0, {"ca": 90.0})
        assert "Neural Cleanse scan" not in self.client.get(f"/experiments/{self.exp.pk}/progress").content.decode()
