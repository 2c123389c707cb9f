"""A search experiment through the real queue: one task on a real worker, every rung an ordinary run of the team
that continues the previous rung's checkpoint, the trials and their cost stored on the experiment."""

import time

import pytest

from defenses.finetune import CHECKPOINTS
from tests.defenses.tiny import tiny_badnet_files
from tests.lab.factories import experiment_row, team_with_user
from webapp.lab.models import Experiment, Point, Run
from webapp.lab.results import experiment_rows, experiment_selection
from webapp.lab.services import submit

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def celery_worker(module_worker):
    return module_worker  # one worker for this module's tests


SPACE = {"defense": "fine-prune", "layers": [], "seed": 5, "holdout": 0.25, "search": {"budget": 20}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny_badnet_files(tmp_path_factory.mktemp("search-badnet"))


def wait_for_search(experiment: Experiment, timeout: float = 300) -> Experiment:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        experiment.refresh_from_db()
        if experiment.search.get("status") in ("done", "failed", "cancelled"):
            return experiment
        time.sleep(0.5)
    raise AssertionError(f"search not finished in {timeout} s: {experiment.search}")


def test_a_search_spends_at_most_its_budget_on_a_worker_and_its_best_is_the_best_of_its_trials(celery_worker, files):
    team, user = team_with_user()
    experiment = experiment_row(team, user, files, SPACE)
    submit(experiment)
    experiment = wait_for_search(experiment)
    state = experiment.search
    assert state["status"] == "done", state.get("error")
    assert 0 < state["spent"] <= 20 and state["spent"] == sum(t["cost"] for t in state["trials"])
    assert len(state["trials"]) >= 2 and all(t["state"] != "running" for t in state["trials"])
    assert any(len(t["jobs"]) > 1 for t in state["trials"])  # some trial went on to its 9-epoch rung

    runs = list(experiment.own_runs())
    assert all(run.status == Run.DONE and run.worker == celery_worker.name for run in runs)
    assert not [path for run in runs for path in run.artifact_dir().glob(CHECKPOINTS)]  # ended trials drop them
    extended = next(t for t in state["trials"] if len(t["jobs"]) > 1)
    nine = Run.objects.get(team=team, kind="finetune", config=extended["jobs"][1][1])
    positions = dict(Point.objects.filter(run=nine).values_list("position", "metrics"))
    assert sorted(positions) == list(range(10))  # the rung's run holds every epoch it serves
    assert all(positions[e].get("resumed_from") == 3 for e in range(4, 10))  # it trained epochs 4-9 only
    assert all(positions[e].get("resumed_from") is None for e in range(1, 4))  # 1-3 came from the first rung

    rows = experiment_rows(experiment)
    selection = experiment_selection(experiment, rows)
    best_objective = max(max(t["objective"].values()) for t in state["trials"] if t["objective"])
    assert selection.best is not None and selection.best["selection"] == pytest.approx(best_objective)
    assert f"held-out {round(0.25 * experiment.valid.count)} of {experiment.valid.count}" in selection.rule


def test_a_search_never_shows_its_repairs_the_held_out_images(celery_worker, files):
    """The BadNet's held-out CA and every point's validation CA are read on the held-out quarter alone: the
    runs' first points say how many images it held, a quarter of the clean validation set."""
    team, user = team_with_user("red", "bob")
    experiment = experiment_row(team, user, files, SPACE | {"search": {"budget": 6}})
    submit(experiment)
    experiment = wait_for_search(experiment)
    first = Point.objects.filter(run__in=experiment.own_runs(), position=0).first().metrics
    assert first["before"]["holdout"]["images"] == round(0.25 * experiment.valid.count)
    assert first["before"]["holdout"]["of"] == experiment.valid.count
