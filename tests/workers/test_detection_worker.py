"""Neural Cleanse unlearning through the real queue: an experiment on the tiny preset's patch BadNet (target 4)
is queued, a real worker process runs it, and the stored points say the scan flagged 4 and the unlearning
lowered the attack success rate."""

import time

import pytest

from defenses.synthetic import BADNETS, build_benchmark
from tests.lab.factories import team_with_user
from webapp.lab.models import Dataset, Experiment, Run
from webapp.lab.services import add_badnet, add_dataset, submit

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_worker_scans_then_unlearns_the_tiny_patch_badnet(celery_worker, tmp_path):
    patch = next(spec for spec in BADNETS if spec.name == "anonymous")
    build_benchmark("tiny", tmp_path, badnets=(patch,), with_clean=False)
    team, user = team_with_user()
    data = tmp_path / "data"
    badnet = add_badnet(team, user, tmp_path / "anonymous" / "anonymous_bd_net.h5", "patch BadNet")
    valid = add_dataset(team, user, data / "clean_validation_data.h5", "valid", Dataset.CLEAN_VALID)
    test = add_dataset(team, user, data / "clean_test_data.h5", "test", Dataset.CLEAN_TEST)
    poisoned_file = tmp_path / "anonymous" / "patch_poisoned_data.h5"
    poisoned = add_dataset(team, user, poisoned_file, "patch", Dataset.POISONED_TEST, trigger="patch", target=4)
    space = {"defense": "nc-unlearn", "learning_rates": [0.001], "epochs": [4], "scan_steps": 200}
    experiment = Experiment.objects.create(
        team=team, owner=user, name="unlearn", badnet=badnet, valid=valid, test=test, space=space
    )
    experiment.poisoned.add(poisoned)
    (run,) = submit(experiment)
    deadline = time.monotonic() + 600
    while Run.objects.get(pk=run.pk).status not in (Run.DONE, Run.FAILED) and time.monotonic() < deadline:
        time.sleep(2)
    run.refresh_from_db()
    assert run.status == Run.DONE, run.error
    points = {point.position: point.metrics for point in run.points.all()}
    assert points[0]["flagged"] == [4], points[0].get("anomaly")
    assert points[0]["before"]["asr"]["patch"] > 95 and points[4]["asr"]["patch"] < 40, points[4]["asr"]
    assert points[4]["valid_acc"] > 95
