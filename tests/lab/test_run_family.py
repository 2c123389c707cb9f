"""Run.family, the reuse of a longer run for a shorter request, and migration 0008's fill of the families of
runs stored before it (a frozen copy of the formulas that must agree with Run.family_for)."""

import importlib

import pytest
from django.apps import apps

from defenses.jobs import Job
from tests.defenses.tiny import tiny_badnet_files
from tests.lab.factories import experiment_row, finished, team_with_user
from webapp.lab.models import Run

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny_badnet_files(tmp_path_factory.mktemp("family"))


def test_migration_0008_gives_old_runs_the_family_run_family_for_gives_new_ones(files):
    team, user = team_with_user()
    space = {"thresholds": [1.0], "learning_rates": [0.01], "epochs": [3]}
    experiment = experiment_row(team, user, files, space)
    experiment.poisoned.add(experiment.valid)  # a second set, so the fingerprint's sorted list is exercised
    (run,) = finished(experiment, lambda run, position: {"ca": 1.0})
    expected = Run.family_for(Job(run.kind, run.config), experiment.data_fingerprint(), team.pk)
    assert run.family == expected != "" and expected != run.key
    Run.objects.filter(pk=run.pk).update(family="")

    migration = importlib.import_module("webapp.lab.migrations.0008_run_family")
    migration.fill_families(apps, None)
    assert Run.objects.get(pk=run.pk).family == expected


def test_kinds_whose_points_are_not_epochs_have_no_family(files):
    team, user = team_with_user()
    experiment = experiment_row(team, user, files, {"defense": "prune-only", "thresholds": [0.5, 1.0]})
    (run,) = finished(experiment, lambda run, position: {"ca": 1.0})
    assert run.kind == "prune-curve" and run.family == ""
