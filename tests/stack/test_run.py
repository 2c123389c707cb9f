"""`make run`'s start-up script: it serves /health with 200 and leaves no process behind on Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from stack.redis import free_port
from tests.browser import chromium_page, sign_in

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent.parent


def stack_env(var_dir: Path) -> dict:
    """A shell's environment for the stack in `var_dir`: none of the suite's own services."""
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE"}}
    return env | {"PRUNELAB_VAR_DIR": str(var_dir), "PYTHONUNBUFFERED": "1"}


def start_stack(var_dir: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "stack.run", "--port", str(port)],
        cwd=ROOT,
        env=stack_env(var_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(process: subprocess.Popen, marker: str, timeout: float) -> str:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"{marker!r} not printed within {timeout}s; output:\n{''.join(seen)[-4000:]}")


def test_stack_serves_health_and_stops_cleanly(tmp_path):
    port = free_port()
    stack = start_stack(tmp_path, port)
    try:
        output = read_until(stack, "Prunelab is up", timeout=240)
        assert "Demo login" in output and "password" in output
        # A newcomer signs in at once: the demo team is there while its data is still being made (minutes),
        # and says so (the team used to appear only once the data was ready, 12 minutes in).
        with chromium_page(f"http://127.0.0.1:{port}", "first-start") as page:
            password = (tmp_path / "demo-login.txt").read_text().split("password: ")[1].strip()
            assert (tmp_path / "demo-login.txt").stat().st_mode & 0o077 == 0
            assert f"password '{password}'" in output  # printed once, at the first start
            sign_in(page, "demo", password)
            status = page.text_content("#demo-status")
            assert "Preparing the demo data: step" in status, status
            assert page.text_content("nav a[title=teams]") == "demo"
            page.shot("demo-team-preparing")
        # only the stack's own account may read its folder: the database holds every API token
        assert tmp_path.stat().st_mode & 0o777 == 0o700
        assert (tmp_path / "prunelab.sqlite3").stat().st_mode & 0o077 == 0
        descendants = psutil.Process(stack.pid).children(recursive=True)
        assert len(descendants) >= 3  # redis, worker (+ pool child), web server
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            assert response.status == 200
            assert json.load(response)["workers"]["count"] == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert b"Prunelab" in response.read()
        # an operator's `manage.py queue` in another shell reaches the stack's own Redis (random port, password)
        queue = subprocess.run(
            [sys.executable, "manage.py", "queue"], cwd=ROOT, env=stack_env(tmp_path), capture_output=True, text=True
        )
        assert queue.returncode == 0 and "waiting in Redis: cpu " in queue.stdout, queue.stdout + queue.stderr
        assert (tmp_path / "redis" / "url").stat().st_mode & 0o077 == 0  # it holds the password

        stack.send_signal(signal.SIGINT)
        rest = stack.communicate(timeout=60)[0]
        assert stack.returncode == 0, rest
        assert "Stopped." in rest
        gone, alive = psutil.wait_procs(descendants, timeout=10)
        assert alive == [], f"left behind: {[p.cmdline() for p in alive]}"
        assert (tmp_path / "redis" / "appendonlydir").exists() or any((tmp_path / "redis").glob("*.aof"))
        assert not (tmp_path / "redis" / "url").exists()  # the address goes with the stack
    finally:
        if stack.poll() is None:
            stack.kill()

    # A second start on the same folder is not blocked by anything the first one left.
    again = start_stack(tmp_path, free_port())
    try:
        read_until(again, "Prunelab is up", timeout=240)
    finally:
        again.send_signal(signal.SIGINT)
        again.communicate(timeout=60)
    assert again.returncode == 0
