"""The Celery application, beside the settings it reads (CELERY_*): Redis as broker and result store. It lives
in the web app because the web app queues tasks; the tasks themselves are in workers/tasks.py, which imports
the web app's models, and Celery finds them by name at run time, so imports go one way: workers -> webapp.

Workers are started with `celery -A webapp.celery_app worker -Q cpu,cpu-side` (or `-Q gpu,gpu-side` on a GPU
machine): runs on the first queue, other work on its side lane (side_lane).
TensorFlow is imported inside tasks only: CUDA does not survive a fork of a process that initialised it.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.local")

# The tasks by name: the web app queues them by these names (app.send_task) and never imports workers.tasks.
EXECUTE_RUN = "prunelab.execute_run"
COMPUTE_PROFILE = "prunelab.compute_profile"
COMPUTE_SCAN = "prunelab.compute_scan"
CALIBRATE_STRIP = "prunelab.calibrate_strip"
RUN_SEARCH = "prunelab.run_search"


def side_lane(queue: str) -> str:
    """The queue of a worker's other work (scans, STRIP calibrations, profiles, searches) beside its runs'
    queue. A worker consumes both, and kombu takes them in turn (round robin), so a run waits for at most one
    such job however many are queued: on the runs' queue itself they would be first in, first out, and one
    team's 21 searches and scans held another team's run for over half an hour (an attack review)."""
    return f"{queue}-side"


def with_side_lanes(queues: str) -> str:
    """'cpu,gpu' -> 'cpu,cpu-side,gpu,gpu-side': what a worker of those queues consumes."""
    return ",".join(f"{queue},{side_lane(queue)}" for queue in queues.split(",") if queue)


app = Celery("prunelab")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])
app.autodiscover_tasks(["workers"], related_name="recovery")


def task(name: str):
    """A task by its name, to run in this process (manage.py run_experiment, tests): Celery's own discovery
    imports workers.tasks, so no caller names that module."""
    app.loader.import_default_modules()
    return app.tasks[name]
