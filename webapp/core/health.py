"""Reachability of the parts the dashboard depends on: the database, Redis and the Celery workers."""

from dataclasses import dataclass, field

import redis
from django.conf import settings
from django.db import connection

from webapp.celery_app import app as celery_app

CHECK_TIMEOUT_SECONDS = 1.0


@dataclass
class Health:
    database: str
    redis: str
    workers: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.database == "ok" and self.redis == "ok" and bool(self.workers)

    def as_dict(self) -> dict:
        return {
            "status": "ok" if self.ok else "degraded",
            "database": self.database,
            "redis": self.redis,
            "workers": {"count": len(self.workers), "names": self.workers},
        }


def check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as error:  # any driver error means "unreachable"; the text says which
        return f"unreachable: {error}"
    return "ok"


def check_redis() -> str:
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=CHECK_TIMEOUT_SECONDS, socket_connect_timeout=CHECK_TIMEOUT_SECONDS
    )
    try:
        client.ping()
    except redis.RedisError as error:
        return f"unreachable: {error}"
    finally:
        client.close()
    return "ok"


def live_workers() -> list[str]:
    """Names of the workers that answer a broadcast ping within the timeout."""
    try:
        replies = celery_app.control.ping(timeout=CHECK_TIMEOUT_SECONDS)
    except Exception:  # broker down: no worker can be reached either
        return []
    return sorted(name for reply in replies for name in reply)


def queues_with_workers() -> set[str]:
    """The queues that at least one live worker consumes (none when no worker answers within the timeout)."""
    try:
        replies = celery_app.control.inspect(timeout=CHECK_TIMEOUT_SECONDS).active_queues() or {}
    except Exception:  # broker down: no worker can be reached either
        return set()
    return {queue["name"] for queues in replies.values() for queue in queues}


def current_health() -> Health:
    redis_state = check_redis()
    workers = live_workers() if redis_state == "ok" else []
    return Health(database=check_database(), redis=redis_state, workers=workers)
