"""Rows for tests, made from real files (tiny BadNets from tests.defenses.tiny) through the services."""

from django.contrib.auth import get_user_model

from webapp.lab.models import Dataset, Experiment, Membership, Team
from webapp.lab.services import add_badnet, add_dataset


def team_with_user(name: str = "blue", username: str = "alice"):
    user = get_user_model().objects.create_user(username, password=f"password-{username}")
    team = Team.objects.create(name=name)
    Membership.objects.create(user=user, team=team, is_admin=True)
    return team, user


def experiment_row(team, user, files: dict, space: dict, name: str = "study") -> Experiment:
    badnet = add_badnet(team, user, files["model"], "tiny")
    valid = add_dataset(team, user, files["valid"], "valid", Dataset.CLEAN_VALID)
    test = add_dataset(team, user, files["test"], "test", Dataset.CLEAN_TEST)
    poisoned = add_dataset(team, user, files["poisoned"], "patch", Dataset.POISONED_TEST, "patch", 0)
    experiment = Experiment.objects.create(team=team, owner=user, name=name, badnet=badnet, valid=valid, test=test,
                                           space=space)  # fmt: skip
    experiment.poisoned.add(poisoned)
    return experiment
