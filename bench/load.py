"""Load: 20 concurrent API clients on loopback while a study runs on the worker, against the same study alone;
and (--scenario fairness) one team's flood of queued runs against another team's single run.

    .venv/bin/python -m bench.load [--clients 20] [--seconds 120]
    .venv/bin/python -m bench.load --scenario fairness [--flood 24]

Fairness: team A queues --flood one-epoch runs; once its first has started, team B queues one run. Prints how
long B's run waited and how many of A's started before it, beside A's queue length then and what first in,
first out would have made B wait (A's queue times A's measured mean run time), then cancels A's rest and prints
how long their (revoked) messages took to drain beside what unrevoked ones cost (3 empty turns measured).

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
    parser.add_argument("--scenario", choices=["load", "fairness"], default="load")
    parser.add_argument("--flood", type=int, default=24, help="fairness: team A's queued runs")
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

    def study(seed: int, space: dict | None = None, rows=(team, user, badnet, valid, test, poisoned)) -> Experiment:
        owner_team, owner, network, clean_valid, clean_test, poisoned_test = rows
        experiment = Experiment.objects.create(
            team=owner_team,
            owner=owner,
            name=f"seed {seed}",
            badnet=network,
            valid=clean_valid,
            test=clean_test,
            space=space or {"thresholds": [0.5, 1.0], "learning_rates": [0.001], "epochs": [10], "seed": seed},
        )
        experiment.poisoned.add(poisoned_test)
        return experiment

    if args.scenario == "fairness":
        other = get_user_model().objects.create_user("bench-b")
        team_b = Team.objects.create(name="bench-b")
        Membership.objects.create(user=other, team=team_b, is_admin=True)
        rows_b = (
            team_b,
            other,
            add_badnet(team_b, other, FIXTURES / "models" / "sunglasses_bd_weights.h5", "sunglasses", "deepid-csaw"),
            add_dataset(team_b, other, paths["valid"], "valid", Dataset.CLEAN_VALID),
            add_dataset(team_b, other, paths["test"], "test", Dataset.CLEAN_TEST),
            add_dataset(team_b, other, paths["poisoned"], "sunglasses", Dataset.POISONED_TEST, "sunglasses", 0),
        )
        worker = subprocess.Popen(
            worker_command("cpu", "bench-fair@%h", "WARNING"), cwd=ROOT, env=os.environ, start_new_session=True
        )
        try:
            fairness(study, rows_b, args.flood)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(60)
            redis.stop()
        return

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


def fairness(study, rows_b: tuple, flood: int) -> None:
    """Team A's flood, then team B's one run, on one worker: B's wait against A's queue (see the docstring)."""
    from django.utils import timezone

    from webapp.lab.models import Run
    from webapp.lab.services import cancel, submit

    one_epoch = {"learning_rates": [0.001], "epochs": [1], "seed": 0}
    flood_study = study(1, one_epoch | {"thresholds": [round(0.05 * n, 2) for n in range(1, flood + 1)]})
    a_runs = [run.pk for run in submit(flood_study)]
    wait_until(lambda: Run.objects.filter(pk__in=a_runs, status=Run.DONE).exists(), 900, "team A's first run")
    queued_then = Run.objects.filter(pk__in=a_runs, status=Run.QUEUED).count()
    asked = timezone.now()
    b_run = submit(study(2, one_epoch | {"thresholds": [1.0]}, rows_b))[0]
    wait_until(lambda: Run.objects.get(pk=b_run.pk).status == Run.DONE, 900, "team B's run")
    b = Run.objects.get(pk=b_run.pk)
    still_queued = Run.objects.filter(pk__in=a_runs, status=Run.QUEUED).count()
    cancelled_at = time.monotonic()
    cancel(flood_study)  # revokes the queued runs' messages
    wait_until(lambda: waiting_messages("cpu") == 0, 900, "the cancelled runs' messages to drain")
    drained = time.monotonic() - cancelled_at
    empty_turn = seconds_per_empty_turn(b_run.pk)
    ahead = Run.objects.filter(pk__in=a_runs, started_at__gte=asked, started_at__lt=b.started_at).count()
    done = Run.objects.filter(pk__in=a_runs, status=Run.DONE).exclude(started_at=None).exclude(finished_at=None)
    durations = [(r.finished_at - r.started_at).total_seconds() for r in done]
    mean = statistics.mean(durations)
    waited = (b.started_at - asked).total_seconds()
    fifo = queued_then * mean
    print(f"one worker on {os.cpu_count()} cores; team A queued {flood} one-epoch runs of the real sunglasses BadNet")
    print(
        f"  team B's one run waited {waited:.1f} s ({ahead} of team A's runs started before it) while team A had "
        f"{queued_then} queued; first in, first out would have made it wait for all {queued_then}: about "
        f"{fifo:.0f} s ({queued_then} x {mean:.1f} s, A's mean run), {fifo / waited:.0f}x longer"
    )
    naive = still_queued * empty_turn
    print(
        f"  cancelling A's {still_queued} queued runs: their revoked messages drained in {drained:.1f} s; unrevoked, "
        f"each is an empty turn of {empty_turn:.1f} s (a fresh worker child, measured on 3): about {naive:.0f} s, "
        f"{naive / max(drained, 0.1):.0f}x longer"
    )


def waiting_messages(queue: str) -> int:
    from webapp.celery_app import app

    with app.connection_for_write() as connection:
        return connection.default_channel.client.llen(queue)


def seconds_per_empty_turn(run_id: int, count: int = 3) -> float:
    """The naive cancel's cost per message: `count` messages (not revoked) for a run that has ended, each a turn
    with nothing left to serve, run one after another by the worker."""
    from webapp.celery_app import EXECUTE_RUN, app

    started = time.monotonic()
    turns = [app.send_task(EXECUTE_RUN, args=[run_id], queue="cpu") for _ in range(count)]
    for turn in turns:
        turn.get(timeout=300)
    return (time.monotonic() - started) / count


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
