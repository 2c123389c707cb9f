"""`make run`: start Redis (unless REDIS_URL is set), migrate, create the demo login, start one Celery
worker and the Django server, generate the demo data on first start (var/demo), print the URL, and stop
all of them on Ctrl-C.

Each child runs in its own process group so that stopping it also stops what it started (Celery's pool
processes); a file lock (released by the kernel when this process dies) stops a second stack on the same
var/ folder without leaving a stale pid file behind.
"""

import argparse
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from stack.redis import start_redis
from workers.launch import default_queues, worker_command

ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_SECONDS = 15


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    return parser.parse_args(argv)


def var_dir() -> Path:
    """The stack's folder, readable by its owner only: it holds the database (every API token and session),
    every team's uploads and the secret key, and other accounts on the machine must not read them."""
    path = Path(os.environ.get("PRUNELAB_VAR_DIR", ROOT / "var")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def hold_stack_lock(path: Path):
    handle = open(path, "w")  # noqa: SIM115 - held open for the life of the stack
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(f"Another Prunelab stack is running on {path.parent}. Stop it (Ctrl-C in its terminal) first.")
    return handle


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the child's whole group, then SIGKILL what is left after the grace period."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def spawn(command: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)


def wait_until_healthy(
    url: str, children: list[subprocess.Popen], stop: threading.Event, timeout: float = 180.0
) -> bool:
    """True once /health answers 200; False at the deadline, on Ctrl-C or when a child died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        if any(child.poll() is not None for child in children):
            return False
        try:
            with urllib.request.urlopen(f"{url}health", timeout=5) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.umask(0o077)  # what the stack and its children create (database, uploads, Redis files) is the owner's
    var = var_dir()
    lock = hold_stack_lock(var / "stack.lock")
    env = dict(os.environ, PYTHONUNBUFFERED="1", PRUNELAB_VAR_DIR=str(var))
    env.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.local")
    python = sys.executable
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())

    with ExitStack() as cleanup:
        cleanup.callback(lock.close)
        if not env.get("REDIS_URL"):
            redis = start_redis(var / "redis")
            cleanup.callback(redis.stop)
            env["REDIS_URL"] = redis.url
            # for manage.py commands in another shell (settings read it when REDIS_URL is unset); it holds the
            # password, so only this account may read it, and it goes with the stack
            address = var / "redis" / "url"
            address.touch(mode=0o600)
            address.write_text(redis.url)
            cleanup.callback(address.unlink, missing_ok=True)
            print(
                f"Redis (embedded, password-protected, append-only file in {redis.data_dir}) on port {redis.port}",
                flush=True,
            )
        subprocess.run([python, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
        # compressed, content-hashed copies for whitenoise (about a second; settings/base.py says why)
        subprocess.run([python, "manage.py", "collectstatic", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
        subprocess.run([python, "manage.py", "ensure_demo_user"], cwd=ROOT, env=env, check=True)

        queues = default_queues()
        worker = worker_command(queues, f"worker-{queues.replace(',', '-')}@%h")
        children = [spawn(worker, env)]
        cleanup.callback(stop_process_group, children[0])
        web_command = [python, "manage.py", "serve", f"{args.host}:{args.port}", "--noreload"]
        children.append(spawn(web_command, env))
        cleanup.callback(stop_process_group, children[1])

        if not (var / "demo" / "synth.json").exists():
            print(
                "Generating the demo data (synthetic faces, four BadNets) into var/demo: a few minutes, once.",
                flush=True,
            )
        demo = spawn([python, "manage.py", "demo_data"], env)  # imports what is missing; quick when done
        cleanup.callback(stop_process_group, demo)

        url = f"http://{args.host}:{args.port}/"
        if wait_until_healthy(url, children, stop):
            print(f"\nPrunelab is up: {url}  (worker queues: {queues}; Ctrl-C stops everything)\n", flush=True)
        elif not stop.is_set():
            print(f"\nPrunelab did not report healthy; see {url}health and the log above.\n", flush=True)
        while not stop.is_set():
            exited = [child for child in children if child.poll() is not None]
            if exited:
                print(f"A child process exited (code {exited[0].returncode}); stopping the stack.", flush=True)
                return 1
            time.sleep(0.3)
        print("\nStopping Prunelab...", flush=True)
    print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
