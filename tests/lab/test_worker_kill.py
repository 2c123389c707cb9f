"""A worker SIGKILLed in the middle of a run: a new worker resumes the run from its checkpoint and it ends as
an uninterrupted run would. Its own module: no other worker may be alive to take the run."""

import time

import pytest

from defenses.finetune import CHECKPOINT, checkpoint_epoch
from defenses.methods.fineprune import run_finetune
from defenses.runner import Inputs, load_inputs
from tests.defenses.tiny import tiny_badnet_files
from tests.lab.factories import experiment_row, team_with_user
from tests.lab.test_experiments import strip, wait_for
from tests.processes import celery_worker_process
from webapp.lab.models import Point, Run
from webapp.lab.services import submit

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny_badnet_files(tmp_path_factory.mktemp("kill-badnet"))


def test_sigkill_mid_run_then_a_new_worker_resumes_it_and_ends_as_an_uninterrupted_run(files):
    from tests.conftest import test_database_env

    team, user = team_with_user()
    config = {"threshold": 1.0, "lr": 0.01, "epochs": 8, "layers": [], "seed": 0}
    experiment = experiment_row(team, user, files, {"thresholds": [1.0], "learning_rates": [0.01], "epochs": [8]})
    env = test_database_env() | {"PRUNELAB_RUN_STALE_SECONDS": "3"}
    with celery_worker_process(extra_env=env) as first:
        runs = submit(experiment)
        checkpoint = runs[0].artifact_dir() / CHECKPOINT
        deadline = time.monotonic() + 180
        while checkpoint_epoch(checkpoint) < 2:
            assert time.monotonic() < deadline, "the run never checkpointed epoch 2"
            time.sleep(0.05)
        first.kill()
    killed_at = checkpoint_epoch(checkpoint)
    assert Run.objects.get(pk=runs[0].pk).status == Run.RUNNING and 2 <= killed_at < 8
    before = {p.position: p.metrics for p in Point.objects.filter(run=runs[0], position__lte=killed_at)}
    time.sleep(3)
    with celery_worker_process(extra_env=env):
        run = wait_for(runs)[0]
    assert run.status == Run.DONE, run.error
    assert run.attempts == 2
    after = {p.position: p.metrics for p in Point.objects.filter(run=run)}
    assert sorted(after) == list(range(9))
    assert all(after[p] == before[p] for p in range(killed_at + 1))  # same rows, same timings: not trained again
    assert [p for p in range(9) if after[p].get("resumed_from") == killed_at] == list(range(killed_at + 1, 9))
    assert not checkpoint.exists()  # a finished run keeps its network, not its checkpoint

    paths = {name: files[name] for name in ("model", "valid", "test")}
    loaded = load_inputs(Inputs(**paths, arch=None, divisor=255.0, poisoned={"patch": files["poisoned"]}))
    uninterrupted = {}
    run_finetune(loaded, config, uninterrupted.__setitem__)
    resumed = {key: value for key, value in after[8].items() if key != "resumed_from"}
    assert strip(resumed) == strip(uninterrupted[8])
