"""Show the queue: runs by status, messages waiting in Redis per queue, and what each worker is doing."""

import redis
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db.models import Count

from webapp.lab.models import Run


class Command(BaseCommand):
    help = "Show runs by status, the Redis queue lengths and the running runs."

    def handle(self, *args, **options):
        counts = dict(Run.objects.values_list("status").annotate(n=Count("pk")))
        self.stdout.write("runs: " + ", ".join(f"{status} {counts.get(status, 0)}" for status in Run.Status.values))
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
        try:
            lengths = {queue: client.llen(queue) for queue in settings.CELERY_TASK_QUEUES}
            self.stdout.write("waiting in Redis: " + ", ".join(f"{q} {n}" for q, n in lengths.items()))
        except redis.RedisError as error:
            where = settings.REDIS_URL.rpartition("@")[2]  # never print the password
            self.stdout.write(
                f"Redis unreachable at {where}: {error}. Is the stack running? `make run` leaves its Redis's address "
                f"in {settings.STACK_REDIS_ADDRESS}; another Redis is named by REDIS_URL."
            )
        for run in Run.objects.filter(status=Run.RUNNING).order_by("started_at"):
            self.stdout.write(
                f"  run {run.pk} {run.kind} {run.progress:5.1%} on {run.worker}, attempt "
                f"{run.attempts}, heartbeat {run.heartbeat_at:%H:%M:%S}"
            )
