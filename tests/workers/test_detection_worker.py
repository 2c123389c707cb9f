"""Neural Cleanse unlearning through the real queue: an experiment on the palette BadNet (24 labels, a white
patch sends any image to label 0; tests/defenses/tiny.py) is queued, a real worker process runs it, and the
stored points say the scan flagged 0, the run showed the scan's progress as its stage, and the unlearning
lowered the attack success rate. The library's own test on the face-size DeepID BadNet of the tiny preset is
tests/defenses/test_methods.py; this one proves the worker's path, on the network that scans in seconds."""

import time

import pytest

from tests.defenses.tiny import add_trigger, palette_badnet, palette_data, write_dataset
from tests.lab.factories import team_with_user
from webapp.lab.models import Dataset, Experiment, Run
from webapp.lab.services import add_badnet, add_dataset, submit

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_worker_scans_then_unlearns_the_palette_badnet(celery_worker, tmp_path):
    model, (pixels, labels) = palette_badnet(24, target=0, seed=0)
    model.save(tmp_path / "bd_net.keras")
    test, test_labels = palette_data(240, 24, seed=5)
    team, user = team_with_user()
    badnet = add_badnet(team, user, tmp_path / "bd_net.keras", "palette BadNet")
    valid = add_dataset(team, user, write_dataset(tmp_path / "valid.h5", pixels, labels), "valid", Dataset.CLEAN_VALID)
    clean = add_dataset(team, user, write_dataset(tmp_path / "test.h5", test, test_labels), "test", Dataset.CLEAN_TEST)
    stamped = write_dataset(tmp_path / "patch.h5", add_trigger(test), [0] * len(test))
    poisoned = add_dataset(team, user, stamped, "patch", Dataset.POISONED_TEST, trigger="patch", target=0)
    space = {"defense": "nc-unlearn", "learning_rates": [0.003], "epochs": [4], "scan_steps": 300}
    experiment = Experiment.objects.create(
        team=team, owner=user, name="unlearn", badnet=badnet, valid=valid, test=clean, space=space
    )
    experiment.poisoned.add(poisoned)
    (run,) = submit(experiment)
    stages, deadline = set(), time.monotonic() + 600
    while (now := Run.objects.get(pk=run.pk)).status not in (Run.DONE, Run.FAILED) and time.monotonic() < deadline:
        stages.add(now.stage)
        time.sleep(0.2)
    run.refresh_from_db()
    assert run.status == Run.DONE, run.error
    assert any(stage.startswith("Neural Cleanse scan") and "of 24 labels" in stage for stage in stages), stages
    points = {point.position: point.metrics for point in run.points.all()}
    assert points[0]["flagged"] == [0], points[0].get("anomaly")
    before, after = points[0]["before"]["asr"]["patch"], points[4]["asr"]["patch"]
    assert before > 95 and after < 40 and points[4]["valid_acc"] > 90, (before, after, points[4]["valid_acc"])
