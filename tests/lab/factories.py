"""Rows for tests, made from real files (tiny BadNets from tests.defenses.tiny)."""

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.files import File

from defenses.models import file_digest, verify_model_file
from webapp.lab.models import BadNet, Dataset, Experiment, Membership, Team


def team_with_user(name: str = "blue", username: str = "alice"):
    user = get_user_model().objects.create_user(username, password=f"password-{username}")
    team = Team.objects.create(name=name)
    Membership.objects.create(user=user, team=team, is_admin=True)
    return team, user


def badnet_row(team, user, path: Path, arch: str = "", divisor: float = 255.0) -> BadNet:
    report = verify_model_file(path, arch or None)
    with open(path, "rb") as handle:
        return BadNet.objects.create(team=team, owner=user, name=path.stem, file=File(handle, name=path.name),
                                     original_name=path.name, sha256=file_digest(path), arch=arch, divisor=divisor,
                                     n_classes=report.n_classes, report=report.as_dict())  # fmt: skip


def dataset_row(team, user, path: Path, role: str, trigger: str = "", target: int | None = None) -> Dataset:
    with open(path, "rb") as handle:
        return Dataset.objects.create(team=team, owner=user, name=path.stem, role=role, trigger=trigger,
                                      target=target, file=File(handle, name=path.name), original_name=path.name,
                                      sha256=file_digest(path), count=0)  # fmt: skip


def experiment_row(team, user, files: dict, space: dict, name: str = "study") -> Experiment:
    badnet = badnet_row(team, user, files["model"])
    valid = dataset_row(team, user, files["valid"], Dataset.CLEAN_VALID)
    test = dataset_row(team, user, files["test"], Dataset.CLEAN_TEST)
    poisoned = dataset_row(team, user, files["poisoned"], Dataset.POISONED_TEST, "patch", 0)
    experiment = Experiment.objects.create(team=team, owner=user, name=name, badnet=badnet, valid=valid, test=test,
                                           space=space)  # fmt: skip
    experiment.poisoned.add(poisoned)
    return experiment
