"""The Celery application, beside the settings it reads (CELERY_*): Redis as broker and result store. It lives
in the web app because the web app queues tasks; the tasks themselves are in workers/tasks.py, which imports
the web app's models, and Celery finds them by name at run time, so imports go one way: workers -> webapp.

Workers are started with `celery -A webapp.celery_app worker -Q cpu` (or `-Q gpu` on a GPU machine).
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

app = Celery("prunelab")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])
app.autodiscover_tasks(["workers"], related_name="recovery")


def task(name: str):
    """A task by its name, to run in this process (manage.py run_experiment, tests): Celery's own discovery
    imports workers.tasks, so no caller names that module."""
    app.loader.import_default_modules()
    return app.tasks[name]
