"""Issue 12 on the real queue: two teams that upload the same files get a run each, computed separately
by a real worker; the second team's results are its own rows (equal numbers: same files, same seed)."""

import pytest

from tests.defenses.tiny import tiny_badnet_files
from tests.lab.factories import experiment_row, team_with_user
from tests.lab.test_experiments import strip, wait_for
from webapp.lab.models import Point, Run
from webapp.lab.services import experiment_points, submit

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_two_teams_with_the_same_files_each_get_their_own_run_on_the_worker(celery_worker, tmp_path):
    files = tiny_badnet_files(tmp_path)
    blue, alice = team_with_user()
    red, bob = team_with_user("red", "bob")
    space = {"thresholds": [1.0], "learning_rates": [0.01], "epochs": [1], "seed": 2}
    mine = experiment_row(blue, alice, files, space)
    [alice_run] = wait_for(submit(mine))
    theirs = experiment_row(red, bob, files, space)
    [bob_run] = submit(theirs)
    assert bob_run.pk != alice_run.pk and bob_run.team == red and bob_run.status == Run.QUEUED
    [bob_run] = wait_for([bob_run])
    assert (alice_run.status, bob_run.status) == (Run.DONE, Run.DONE), (alice_run.error, bob_run.error)
    assert bob_run.worker == celery_worker.name and bob_run.artifact_dir().parent.parent.name == f"team-{red.pk}"
    assert (bob_run.artifact_dir() / "repaired_net.keras").exists()
    assert Point.objects.filter(run=alice_run).count() == Point.objects.filter(run=bob_run).count() == 2
    [alice_point], [bob_point] = [[p for p in experiment_points(e) if p["epochs"] == 1] for e in (mine, theirs)]
    assert (alice_point["run"], bob_point["run"]) == (alice_run.pk, bob_run.pk)
    assert strip(alice_point["metrics"]) == strip(bob_point["metrics"])
