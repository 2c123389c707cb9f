"""Shared base for view tests (one test file per view, as in healthchecks): two teams, and rows made
quickly for pages to show. Uploads and their checks are tested through the upload views themselves; here a
BadNet row is made directly so that access and chart tests need no model loading."""

import tempfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.test import TestCase, override_settings

from tests.defenses.tiny import tiny_data, write_dataset
from tests.lab.factories import finished
from webapp.lab.models import BadNet, Dataset, Experiment, Membership, Run, Team

TINY_REPORT = {
    "kind": "keras-h5",
    "input_shape": [12, 10, 3],
    "n_classes": 4,
    "conv_layers": ["conv_a", "conv_b"],
    "conv_channels": [6, 8],
    "layers": [["conv_a", "Conv2D", 168], ["conv_b", "Conv2D", 200]],
    "params": 700,
}


class BaseTestCase(TestCase):
    def setUp(self):
        super().setUp()
        self.enterContext(override_settings(MEDIA_ROOT=self.enterContext(tempfile.TemporaryDirectory())))
        users = get_user_model().objects
        self.alice = users.create_user("alice", password="password-alice")
        self.bob = users.create_user("bob", password="password-bob")
        self.blue = Team.objects.create(name="blue")
        self.red = Team.objects.create(name="red")
        Membership.objects.create(user=self.alice, team=self.blue, is_admin=True)
        Membership.objects.create(user=self.bob, team=self.red, is_admin=True)

    def badnet(self, team=None, name="sunglasses") -> BadNet:
        return BadNet.objects.create(
            team=team or self.blue,
            owner=self.alice,
            name=name,
            original_name=f"{name}.h5",
            file=ContentFile(b"not read by these tests", name="bd.h5"),
            sha256=name * 2,
            n_classes=4,
            report=TINY_REPORT,
        )

    def dataset(self, role=Dataset.CLEAN_VALID, team=None, name=None, trigger="", count=30) -> Dataset:
        pixels, labels = tiny_data(count, seed=len(name or role))
        folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        path = write_dataset(folder / f"{name or role}.h5", pixels, labels)
        facts = {
            "count": count,
            "height": pixels.shape[1],
            "width": pixels.shape[2],
            "label_min": int(labels.min()),
            "label_max": int(labels.max()),
            "classes_present": len(set(labels)),
        }
        return Dataset.objects.create(
            team=team or self.blue,
            owner=self.alice,
            name=name or role,
            role=role,
            trigger=trigger,
            target=0 if trigger else None,
            **facts,
            file=ContentFile(path.read_bytes(), name=path.name),
            original_name=path.name,
            sha256=(name or role).ljust(64, "0"),
        )

    def experiment(self, space: dict, team=None, triggers=("sunglasses",), with_poisoned_valid=False) -> Experiment:
        team = team or self.blue
        badnet = self.badnet(team, f"{team.name}-badnet")
        valid = self.dataset(team=team, name=f"{team.name}-valid")
        test = self.dataset(Dataset.CLEAN_TEST, team, f"{team.name}-test")
        experiment = Experiment.objects.create(
            team=team, owner=self.alice, name=f"{team.name}-study", badnet=badnet, valid=valid, test=test, space=space
        )
        for trigger in triggers:
            experiment.poisoned.add(self.dataset(Dataset.POISONED_TEST, team, f"{team.name}-{trigger}", trigger))
        if with_poisoned_valid:
            experiment.poisoned.add(self.dataset(Dataset.POISONED_VALID, team, f"{team.name}-pv", triggers[0]))
        return experiment

    def finish(self, experiment: Experiment, metrics_for) -> list[Run]:
        """Create the experiment's runs (not queued) and store the points `metrics_for(run, position)` gives,
        as a worker would (tests.lab.factories.finished)."""
        return finished(experiment, metrics_for)


def stored_detector_figures(trigger: str = "sunglasses") -> dict:
    """A GoodNet's detector figures as a STRIP calibration stores them (defenses.goodnet.detector_figures)."""
    rates = {"false_alarm": 1.0, "detection": {trigger: 90.0}}
    curve = {"false_alarm": [100.0, 0.0], "detection": [100.0, 0.0], "auc": 0.9}
    return {
        "rules": {rule: rates for rule in ("disagreement", "STRIP", "either")},
        "roc": {trigger: {"disagreement": curve, "STRIP": curve}},
        "images": {"clean": 30, trigger: 30},
        "threshold": 0.2,
        "frr": 1.0,
    }
