"""Two Celery workers against one on the same queue of independent runs (real Redis, real processes).

    .venv/bin/python -m bench.workers [--runs 6]

Uses the tiny sunglasses BadNet of bench/planner.py (var/bench-planner/) and a fresh SQLite database in
var/bench-workers/. Prints the wall time of each and the ratio.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from workers.launch import worker_command

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench-workers"


def start_workers(count: int) -> list[subprocess.Popen]:
    workers = []
    for index in range(count):
        command = worker_command("cpu", f"bench-{index}@%h", "WARNING")
        workers.append(subprocess.Popen(command, cwd=ROOT, env=os.environ.copy(), start_new_session=True))
    return workers


def stop(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        os.killpg(worker.pid, signal.SIGTERM)
    for worker in workers:
        worker.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args()
    shutil.rmtree(VAR, ignore_errors=True)
    VAR.mkdir(parents=True)
    from stack.redis import start_redis

    redis = start_redis(VAR / "redis")
    os.environ.update(PRUNELAB_VAR_DIR=str(VAR), REDIS_URL=redis.url, DJANGO_SETTINGS_MODULE="webapp.settings.local")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    from webapp.lab.models import Dataset, Experiment, Run, Team
    from webapp.lab.services import add_badnet, add_dataset, submit

    data = ROOT / "var" / "bench-planner"
    if not (data / "synth.json").exists():
        sys.exit("Run `python -m bench.planner` first: it writes the tiny BadNet this bench uses.")
    user = get_user_model().objects.create_user("bench")
    team = Team.objects.create(name="bench")
    badnet = add_badnet(team, user, data / "sunglasses" / "sunglasses_bd_net.h5", "sunglasses")
    valid = add_dataset(team, user, data / "data" / "clean_validation_data.h5", "valid", Dataset.CLEAN_VALID)
    test = add_dataset(team, user, data / "data" / "clean_test_data.h5", "test", Dataset.CLEAN_TEST)
    thresholds = [round(0.2 * i, 1) for i in range(args.runs)]
    experiment = Experiment.objects.create(
        team=team,
        owner=user,
        name="queue",
        badnet=badnet,
        valid=valid,
        test=test,
        space={"thresholds": thresholds, "learning_rates": [0.001], "epochs": [3]},
    )
    seconds = {}
    try:
        for count in (1, 2):
            Run.objects.all().delete()
            workers = start_workers(count)
            time.sleep(8)  # let them connect: start-up is not part of the figure
            started = time.perf_counter()
            runs = submit(experiment)
            while Run.objects.filter(pk__in=[r.pk for r in runs], status__in=[Run.QUEUED, Run.RUNNING]).exists():
                time.sleep(0.5)
            seconds[count] = time.perf_counter() - started
            stop(workers)
            assert Run.objects.filter(status=Run.DONE).count() == len(runs), "some runs did not finish"
    finally:
        redis.stop()
    print(f"{args.runs} independent runs (tiny BadNet, 3 epochs each) on {os.cpu_count()} cores")
    print(
        f"one worker {seconds[1]:.1f}s, two workers {seconds[2]:.1f}s: two finish in {seconds[2] / seconds[1]:.2f} "
        f"of the time ({seconds[1] / seconds[2]:.2f}x faster)"
    )


if __name__ == "__main__":
    main()
