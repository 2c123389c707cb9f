"""Load: 20 concurrent API clients on loopback while a study runs on the worker, against the same study alone.

    .venv/bin/python -m bench.load [--clients 20] [--seconds 120]

Starts its own Redis, one Celery worker and gunicorn with docker/gunicorn.conf.py (3 sync workers), on a fresh
SQLite database in var/bench-load/. Data: the real sunglasses BadNet and small synthetic 55x47 sets. The
clients alternate the image test (POST /api/classify/, a real face crop) and the results read
(GET /api/experiments/ID/results/). Prints p50 and p99 latency per endpoint, the errors (any non-2xx answer
or failed connection; must be 0) and the study's wall time loaded against alone. Every request goes to
127.0.0.1; the clients stop at --seconds or when the loaded study finishes, whichever comes first.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench-load"
FIXTURES = ROOT.parent / "shared" / "fixtures" / "csaw"
CROP = FIXTURES / "images" / "cl_0_label=43.png"


def multipart(fields: dict[str, str], files: dict[str, Path]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    for key, path in files.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"; filename="{path.name}"\r\n'
        parts.append(head.encode() + b"Content-Type: image/png\r\n\r\n" + path.read_bytes() + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Client(threading.Thread):
    """One API client: alternates the two requests until told to stop; records (endpoint, seconds, ok)."""

    def __init__(self, base: str, token: str, network: str, experiment: int, stop: threading.Event, log: list):
        super().__init__(daemon=True)
        self.base, self.token, self.network, self.experiment, self.halt, self.log = (
            base,
            token,
            network,
            experiment,
            stop,
            log,
        )

    def request(self, endpoint: str, request: urllib.request.Request) -> None:
        request.add_header("Authorization", f"Token {self.token}")
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                ok = 200 <= response.status < 300
                response.read()
        except (urllib.error.URLError, OSError):
            ok = False
        self.log.append((endpoint, time.perf_counter() - started, ok))

    def run(self) -> None:
        body, content_type = multipart({"network": self.network}, {"images": CROP})
        while not self.halt.is_set():
            classify = urllib.request.Request(
                f"{self.base}/api/classify/", data=body, method="POST", headers={"Content-Type": content_type}
            )
            self.request("classify", classify)
            self.request("results", urllib.request.Request(f"{self.base}/api/experiments/{self.experiment}/results/"))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    shutil.rmtree(VAR, ignore_errors=True)
    VAR.mkdir(parents=True)
    from stack.redis import free_port, start_redis

    redis = start_redis(VAR / "redis")
    os.environ.update(
        PRUNELAB_VAR_DIR=str(VAR),
        REDIS_URL=redis.url,
        DJANGO_SETTINGS_MODULE="webapp.settings.local",
        DJANGO_DEBUG="false",
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from defenses.synthetic import make_identities, render_set, write_csaw_dataset
    from webapp.lab.models import Dataset, Experiment, Membership, Run, Team
    from webapp.lab.services import add_badnet, add_dataset, submit
    from workers.launch import worker_command

    user = get_user_model().objects.create_user("bench")
    team = Team.objects.create(name="bench")
    Membership.objects.create(user=user, team=team, is_admin=True)
    token = Token.objects.create(user=user).key
    badnet = add_badnet(team, user, FIXTURES / "models" / "sunglasses_bd_weights.h5", "sunglasses", "deepid-csaw")
    people = make_identities(20, seed=3)
    sets = {
        "valid": render_set(people, 20, 3, "valid"),
        "test": render_set(people, 10, 3, "test"),
        "poisoned": render_set(people, 0, 3, "poison-test", "sunglasses", 0, count=100),
    }
    paths = {name: write_csaw_dataset(VAR / f"{name}.h5", *arrays) for name, arrays in sets.items()}
    valid = add_dataset(team, user, paths["valid"], "valid", Dataset.CLEAN_VALID)
    test = add_dataset(team, user, paths["test"], "test", Dataset.CLEAN_TEST)
    poisoned = add_dataset(team, user, paths["poisoned"], "sunglasses", Dataset.POISONED_TEST, "sunglasses", 0)

    def study(seed: int) -> Experiment:
        experiment = Experiment.objects.create(
            team=team,
            owner=user,
            name=f"seed {seed}",
            badnet=badnet,
            valid=valid,
            test=test,
            space={"thresholds": [0.5, 1.0], "learning_rates": [0.001], "epochs": [10], "seed": seed},
        )
        experiment.poisoned.add(poisoned)
        return experiment

    def run_study(experiment: Experiment) -> float:
        started = time.perf_counter()
        runs = submit(experiment)
        ids = [run.pk for run in runs]
        wait_until(
            lambda: not Run.objects.filter(pk__in=ids, status__in=[Run.QUEUED, Run.RUNNING]).exists(), 1800, "the study"
        )
        assert Run.objects.filter(pk__in=ids, status=Run.DONE).count() == len(ids), "a run failed"
        return time.perf_counter() - started

    port = free_port()
    env = os.environ | {"GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "3"}
    children = [
        subprocess.Popen(worker_command("cpu", "bench-load@%h", "WARNING"), cwd=ROOT, env=env, start_new_session=True),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "webapp.wsgi:application",
                "-c",
                "docker/gunicorn.conf.py",
                "--access-logfile",
                "/dev/null",
            ],
            cwd=ROOT,
            env=env,
            start_new_session=True,
        ),
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _alive(base), 60, "gunicorn")
        time.sleep(8)  # the worker connects; start-up is not part of the figure
        alone = run_study(study(seed=1))
        loaded_experiment = study(seed=2)
        log: list = []
        stop = threading.Event()
        clients = [
            Client(base, token, f"badnet-{badnet.pk}", loaded_experiment.pk, stop, log) for _ in range(args.clients)
        ]
        warm_stop, warm_log = threading.Event(), []
        warmers = [
            Client(base, token, f"badnet-{badnet.pk}", loaded_experiment.pk, warm_stop, warm_log) for _ in range(6)
        ]
        for warmer in warmers:  # each gunicorn process loads TensorFlow and the network once, before measuring
            warmer.start()
        wait_until(lambda: len(warm_log) >= 12, 300, "the warm-up requests")
        warm_stop.set()
        for warmer in warmers:
            warmer.join(180)
        started = time.perf_counter()
        for client in clients:
            client.start()
        timer = threading.Timer(args.seconds, stop.set)
        timer.start()
        loaded = run_study(loaded_experiment)
        stop.set()
        timer.cancel()
        for client in clients:
            client.join(180)
        window = time.perf_counter() - started
    finally:
        for child in children:
            os.killpg(child.pid, signal.SIGTERM)
        for child in children:
            child.wait(60)
        redis.stop()
    report(log, window, args.clients, alone, loaded)


def _alive(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health/live", timeout=2) as response:
            return json.loads(response.read())["ok"]
    except OSError:
        return False


def report(log: list, window: float, clients: int, alone: float, loaded: float) -> None:
    print(f"{clients} clients for {window:.0f} s on {os.cpu_count()} cores, gunicorn 3 sync workers, one Celery worker")
    for endpoint in ("classify", "results"):
        seconds = [s for e, s, ok in log if e == endpoint]
        errors = sum(1 for e, _, ok in log if e == endpoint and not ok)
        print(
            f"  {endpoint:9s} {len(seconds):5d} requests  p50 {statistics.median(seconds) * 1000:7.0f} ms  "
            f"p99 {percentile(seconds, 0.99) * 1000:7.0f} ms  errors {errors}"
        )
    print(f"study (2 runs x 10 epochs): alone {alone:.1f} s, under load {loaded:.1f} s ({loaded / alone:.2f}x)")


if __name__ == "__main__":
    main()
