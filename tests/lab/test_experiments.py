"""Experiments through the real queue: real Redis, a real worker process (one for the module), the test database
on disk. The SIGKILL test starts workers of its own: tests/lab/test_worker_kill.py."""

import time

import pytest

from defenses.methods.fineprune import run_finetune
from defenses.runner import Inputs, load_inputs
from tests.defenses.tiny import tiny_badnet_files, tiny_data, write_dataset
from tests.lab.factories import experiment_row, team_with_user
from webapp.lab.models import Point, Run
from webapp.lab.services import cancel, experiment_points, submit

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def celery_worker(module_worker):
    return module_worker


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny_badnet_files(tmp_path_factory.mktemp("lab-badnet"))


def wait_for(runs, statuses=(Run.DONE, Run.FAILED, Run.CANCELLED), timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = [Run.objects.get(pk=run.pk) for run in runs]
        if all(run.status in statuses for run in fresh):
            return fresh
        time.sleep(0.5)
    raise AssertionError(f"runs not finished in {timeout}s: {[(r.pk, r.status, r.progress) for r in fresh]}")


def strip(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key != "seconds"}


def test_experiment_runs_on_a_worker_and_matches_a_direct_library_call(celery_worker, files):
    team, user = team_with_user()
    space = {"thresholds": [0.5, 1.0], "learning_rates": [0.01], "epochs": [1, 2], "seed": 4}
    experiment = experiment_row(team, user, files, space)
    runs = submit(experiment)
    assert len(runs) == 2  # (T, LR) pairs; each trains to 2 epochs and serves epochs 1 and 2
    done = wait_for(runs)
    assert [run.status for run in done] == [Run.DONE, Run.DONE], [run.error for run in done]
    assert all(run.worker == celery_worker.name and run.attempts == 1 for run in done)

    loaded = load_inputs(
        Inputs(
            model=files["model"],
            arch=None,
            divisor=255.0,
            valid=files["valid"],
            test=files["test"],
            poisoned={"patch": files["poisoned"]},
        )
    )
    direct = {}
    run_finetune(
        loaded,
        {"threshold": 1.0, "lr": 0.01, "epochs": 2, "layers": [], "seed": 4},
        lambda position, metrics: direct.__setitem__(position, metrics),
    )
    points = {row["epochs"]: row["metrics"] for row in experiment_points(experiment) if row["threshold"] == 1.0}
    assert strip(points[2]) == strip(direct[2]) and strip(points[1]) == strip(direct[1])
    assert Point.objects.count() == 2 * 3  # epochs 0, 1, 2 of each run, once


def test_a_second_experiment_reuses_finished_runs(celery_worker, files):
    team, user = team_with_user()
    first = experiment_row(team, user, files, {"thresholds": [1.0], "learning_rates": [0.01], "epochs": [1]})
    wait_for(submit(first))
    second = experiment_row(team, user, files, {"thresholds": [1.0], "learning_rates": [0.01], "epochs": [1]}, "b")
    assert submit(second)[0].pk == first.runs.get().pk
    assert Run.objects.count() == 1


def test_shared_epochs_equal_separate_runs_to_the_last_digit(celery_worker, files):
    team, user = team_with_user()
    shared = experiment_row(team, user, files, {"thresholds": [1.0], "learning_rates": [0.01], "epochs": [1, 2, 3]})
    alone = experiment_row(team, user, files, {"thresholds": [1.0], "learning_rates": [0.01], "epochs": [2]}, "b")
    wait_for(submit(alone) + submit(shared))  # alone first: else the 3-epoch run would serve its 2 epochs
    shared_points = {row["epochs"]: row["metrics"] for row in experiment_points(shared)}
    alone_points = {row["epochs"]: row["metrics"] for row in experiment_points(alone)}
    assert Run.objects.count() == 2
    assert strip(shared_points[2]) == strip(alone_points[2])


def test_cancel_stops_the_runs_and_a_bad_dataset_fails_with_its_reason(celery_worker, files, tmp_path):
    team, user = team_with_user()
    long = experiment_row(team, user, files, {"thresholds": [1.0], "learning_rates": [0.01], "epochs": [60]})
    runs = submit(long)
    wait_for(runs, statuses=(Run.RUNNING,), timeout=120)
    cancel(long)
    cancelled = wait_for(runs, timeout=120)[0]
    assert cancelled.status == Run.CANCELLED
    assert cancelled.points.count() < 61

    pixels, labels = tiny_data(50)
    wrong = write_dataset(tmp_path / "wrong_labels.h5", pixels, labels + 7)  # a valid file, labels for 11 classes
    bad = experiment_row(
        team, user, {**files, "valid": wrong}, {"thresholds": [1.0], "learning_rates": [0.01], "epochs": [1]}, "bad"
    )
    failed = wait_for(submit(bad))[0]
    assert failed.status == Run.FAILED
    assert failed.error.startswith("Bad input: wrong_labels.h5: labels range")
    assert "outside the model's classes 0..3" in failed.error


def test_a_shorter_request_is_served_by_a_finished_longer_run_without_a_worker(celery_worker, files):
    team, user = team_with_user()
    longer = experiment_row(team, user, files, {"thresholds": [1.0], "learning_rates": [0.01], "epochs": [4]})
    run = wait_for(submit(longer))[0]
    assert run.status == Run.DONE
    shorter = experiment_row(team, user, files, {"thresholds": [1.0], "learning_rates": [0.01], "epochs": [3]}, "b")
    assert [served.pk for served in submit(shorter)] == [run.pk] and Run.objects.count() == 1
    assert Run.objects.get(pk=run.pk).attempts == 1  # nothing was queued or trained again
    loaded = load_inputs(
        Inputs(
            model=files["model"],
            arch=None,
            divisor=255.0,
            valid=files["valid"],
            test=files["test"],
            poisoned={"patch": files["poisoned"]},
        )
    )
    alone = {}
    run_finetune(loaded, {"threshold": 1.0, "lr": 0.01, "epochs": 3, "layers": [], "seed": 0}, alone.__setitem__)
    points = {row["epochs"]: row["metrics"] for row in experiment_points(shorter)}
    assert strip(points[3]) == strip(alone[3])


def test_redis_restart_between_two_runs_loses_nothing(celery_worker, files, restart_redis):
    team, user = team_with_user()
    first = experiment_row(team, user, files, {"thresholds": [1.0], "learning_rates": [0.01], "epochs": [1]})
    assert wait_for(submit(first))[0].status == Run.DONE
    restart_redis()
    second = experiment_row(team, user, files, {"thresholds": [0.5], "learning_rates": [0.01], "epochs": [1]}, "b")
    assert wait_for(submit(second))[0].status == Run.DONE
    assert Run.objects.filter(status=Run.DONE).count() == 2
    assert Point.objects.count() == 2 * 2


def test_a_run_writes_its_points_while_another_connection_holds_the_database_lock(celery_worker, files):
    """SQLite: the worker's writes wait (busy timeout, immediate transactions) instead of failing."""
    import sqlite3

    from django.db import connection

    team, user = team_with_user()
    experiment = experiment_row(team, user, files, {"thresholds": [1.0], "learning_rates": [0.01], "epochs": [4]})
    runs = submit(experiment)
    wait_for(runs, statuses=(Run.RUNNING,), timeout=120)
    locker = sqlite3.connect(connection.settings_dict["NAME"], timeout=30)
    locker.execute("BEGIN EXCLUSIVE")  # no other connection may read or write until this commits
    time.sleep(6)
    locker.commit()
    locker.close()
    run = wait_for(runs)[0]
    assert (run.status, run.error, run.attempts) == (Run.DONE, "", 1)
    assert sorted(Point.objects.filter(run=run).values_list("position", flat=True)) == [0, 1, 2, 3, 4]


def test_a_full_disk_fails_the_run_with_advice_and_a_rerun_completes_it(celery_worker, files):
    """The artifact's temporary file is /dev/full: the kernel answers ENOSPC to the worker's real write."""
    from webapp.lab.services import requeue

    team, user = team_with_user()
    experiment = experiment_row(team, user, files, {"thresholds": [1.0], "learning_rates": [0.01], "epochs": [2]})
    runs = submit(experiment, enqueue=False)
    folder = runs[0].artifact_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".repaired_net.partial.keras").symlink_to("/dev/full")
    requeue(runs[0])
    run = wait_for(runs)[0]
    assert run.status == Run.FAILED and "disk of worker" in run.error and "No space left" in run.error
    assert not (folder / "repaired_net.keras").exists()  # nothing half-written under the real name
    (folder / ".repaired_net.partial.keras").unlink()
    requeue(run)
    run = wait_for(runs)[0]
    assert run.status == Run.DONE and (folder / "repaired_net.keras").exists()
    assert sorted(Point.objects.filter(run=run).values_list("position", flat=True)) == [0, 1, 2]


def test_redis_restart_while_runs_are_queued_and_running_loses_nothing(celery_worker, files, restart_redis):
    team, user = team_with_user()
    space = {"thresholds": [0.5, 1.0, 1.5], "learning_rates": [0.01], "epochs": [3]}
    runs = submit(experiment_row(team, user, files, space))
    wait_for(runs[:1], statuses=(Run.RUNNING, Run.DONE), timeout=120)
    restart_redis()  # the other two runs are still queued in Redis' append-only file
    done = wait_for(runs)
    assert [run.status for run in done] == [Run.DONE] * 3, [run.error for run in done]
    assert Point.objects.count() == 3 * 4
