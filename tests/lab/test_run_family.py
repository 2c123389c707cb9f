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


@pytest.mark.slow
def test_a_run_trained_to_an_earlier_epoch_keeps_that_epochs_network_with_the_same_figures(files):
    """The chosen epoch of a longer run becomes composable: trained again to it (services.train_network_at), with
    the same seed and data, its figures are the longer run's at that epoch and its network is kept."""
    from webapp.lab.composition import run_network
    from webapp.lab.services import submit, train_network_at
    from workers.tasks import perform

    team, user = team_with_user()
    experiment = experiment_row(team, user, files, {"thresholds": [1.0], "learning_rates": [0.01], "epochs": [1, 2]})
    (longer,) = submit(experiment, enqueue=False)
    assert perform(Run.claim(longer.pk, worker="here", stale_after=60)) == "done"
    network = train_network_at(longer, 1, user)
    assert perform(Run.claim(network.pk, worker="here", stale_after=60)) == "done"
    at_one = [run.points.get(position=1).metrics for run in (longer, network)]
    assert at_one[0]["ca"] == at_one[1]["ca"] and at_one[0]["asr"] == at_one[1]["asr"]
    assert run_network(Run.objects.get(pk=network.pk)).exists()
    assert Run.stored_for  # the experiment's points still come from the longer run
    assert [
        run.pk for run in Run.stored_for([Job(longer.kind, longer.config)], experiment.data_fingerprint(), team.pk)
    ] == [longer.pk]
