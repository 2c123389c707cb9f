"""`manage.py queue`: runs counted by status, and Redis's queue lengths or why they could not be read."""

import io

from django.core.management import call_command

from tests.webapp.base import BaseTestCase
from webapp.lab.models import Run


class QueueCommandTestCase(BaseTestCase):
    def test_it_counts_runs_by_status(self):
        experiment = self.experiment({"thresholds": [0.5, 1.0], "learning_rates": [0.01], "epochs": [1]})
        from webapp.lab.services import submit

        runs = submit(experiment, enqueue=False)
        Run.objects.filter(pk=runs[0].pk).update(status=Run.DONE)
        out = io.StringIO()
        call_command("queue", stdout=out)
        assert f"runs: queued {len(runs) - 1}, running 0, done 1, failed 0, cancelled 0" in out.getvalue()
        assert "waiting in Redis" in out.getvalue() or "Redis unreachable" in out.getvalue()
