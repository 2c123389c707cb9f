"""Runs whose worker died: on every worker start, a run still marked running whose heartbeat is stale is
queued again (its attempt counter stops a run that kills its worker every time)."""

from datetime import timedelta

from celery.signals import worker_ready
from django.conf import settings
from django.utils import timezone


def requeue_stale_runs() -> list[int]:
    from webapp.lab.models import Run
    from webapp.lab.services import requeue

    cutoff = timezone.now() - timedelta(seconds=settings.RUN_STALE_SECONDS)
    stale = list(Run.objects.filter(status=Run.RUNNING, heartbeat_at__lt=cutoff))
    for run in stale:
        requeue(run)
    return [run.pk for run in stale]


@worker_ready.connect
def recover_on_start(sender=None, **kwargs) -> None:
    requeue_stale_runs()
