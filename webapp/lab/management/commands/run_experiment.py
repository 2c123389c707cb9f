"""Run an experiment's pending runs in this process, for scripts: `manage.py run_experiment ID`."""

from django.core.management.base import BaseCommand, CommandError

from webapp.celery_app import EXECUTE_RUN, RUN_SEARCH, task
from webapp.lab.models import Experiment, Run
from webapp.lab.searches import start
from webapp.lab.services import describe_plan, submit


class Command(BaseCommand):
    help = "Plan an experiment and run its pending runs synchronously (no worker needed)."

    def add_arguments(self, parser):
        parser.add_argument("experiment", type=int)

    def handle(self, *args, **options):
        experiment = Experiment.objects.filter(pk=options["experiment"]).first()
        if experiment is None:
            raise CommandError(f"No experiment {options['experiment']}; `manage.py queue` lists the runs.")
        if experiment.is_search:  # one task does the whole search, each rung a run it stores
            start(experiment)
            outcome = task(RUN_SEARCH)(experiment.pk)
            experiment.refresh_from_db()
            state = experiment.search
            error = f": {state['error']}" if state.get("error") else ""
            trials, spent = len(state.get("trials", [])), state.get("spent", 0)
            self.stdout.write(f"search: {outcome}, {trials} trials, {spent:g} units{error}")
            return
        summary = describe_plan(experiment)
        self.stdout.write(
            f"{summary['points']} points -> {summary['jobs']} runs, {summary['training_epochs']} training epochs"
        )
        for run in submit(experiment, enqueue=False):
            if run.status == Run.DONE:
                self.stdout.write(f"run {run.pk}: already done (shared)")
                continue
            Run.objects.filter(pk=run.pk).update(status=Run.QUEUED, cancel_requested=False)
            outcome = task(EXECUTE_RUN)(run.pk)  # the task itself, run here: no worker needed
            run.refresh_from_db()
            self.stdout.write(f"run {run.pk} ({run.kind}): {outcome}{': ' + run.error if run.error else ''}")
