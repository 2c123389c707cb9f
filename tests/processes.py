"""Real worker processes for integration tests (no eager mode, no mocks)."""

import os
import signal
import subprocess
import time
import uuid
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import kombu.exceptions
import redis

from webapp.celery_app import app
from workers.launch import worker_command

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class WorkerProcess:
    process: subprocess.Popen
    name: str

    def kill(self) -> None:
        """SIGKILL the worker and its pool children, as an out-of-memory kill or a power cut would."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def wait_for_worker(name: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            replies = app.control.ping(destination=[name], timeout=0.5)
        except (redis.ConnectionError, kombu.exceptions.OperationalError):
            continue  # a pooled connection from before a Redis restart: the next try reconnects
        if any(name in reply for reply in replies):
            return
    raise TimeoutError(f"worker {name} did not answer a ping within {timeout:.0f}s")


@contextmanager
def celery_worker_process(queues: str = "cpu,gpu", extra_env: dict | None = None):
    name = f"test-{uuid.uuid4().hex[:8]}@localhost"
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="webapp.settings.test", PYTHONUNBUFFERED="1")
    env.update(extra_env or {})
    command = worker_command(queues, name, extra=("--without-mingle", "--without-gossip"))
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    worker = WorkerProcess(process=process, name=name)
    try:
        wait_for_worker(name)
        yield worker
    finally:
        if process.poll() is None:
            worker.kill()
