"""Rows for tests, made from real files (tiny BadNets from tests.defenses.tiny) through the services."""

from django.contrib.auth import get_user_model

from webapp.lab.models import Dataset, Experiment, Membership, Team
from webapp.lab.services import AlreadyStored, add_badnet, add_dataset


def team_with_user(name: str = "blue", username: str = "alice"):
    user = get_user_model().objects.create_user(username, password=f"password-{username}")
    team = Team.objects.create(name=name)
    Membership.objects.create(user=user, team=team, is_admin=True)
    return team, user


def stored(add, *args):
    """The row `add(*args)` stores, or the one the team already has for the same file."""
    try:
        return add(*args)
    except AlreadyStored as duplicate:
        return duplicate.row


def experiment_row(team, user, files: dict, space: dict, name: str = "study") -> Experiment:
    badnet = stored(add_badnet, team, user, files["model"], "tiny")
    valid = stored(add_dataset, team, user, files["valid"], "valid", Dataset.CLEAN_VALID)
    test = stored(add_dataset, team, user, files["test"], "test", Dataset.CLEAN_TEST)
    poisoned = stored(add_dataset, team, user, files["poisoned"], "patch", Dataset.POISONED_TEST, "patch", 0)
    experiment = Experiment.objects.create(
        team=team, owner=user, name=name, badnet=badnet, valid=valid, test=test, space=space
    )
    experiment.poisoned.add(poisoned)
    return experiment


def finished(experiment: Experiment, metrics_for) -> list:
    """The experiment's runs made (not queued) and every point stored as `metrics_for(run, position)` says,
    as a worker would store them; each run marked done. A search gets one trial of one 3-epoch rung, stored as
    its task would store it."""
    from webapp.lab.models import Point, Run
    from webapp.lab.services import submit

    runs = searched(experiment) if experiment.is_search else submit(experiment, enqueue=False)
    for run in runs:
        for position in range(run.total_positions):
            Point.objects.update_or_create(run=run, position=position, defaults={"metrics": metrics_for(run, position)})
        run.finish(Run.DONE)
    return runs


def searched(experiment: Experiment) -> list:
    """A finished search's one trial (defenses.search) at the middle of its ranges and its rung's run, not yet
    holding points."""
    from defenses.methods import method_of
    from defenses.search import Trial, rung_job, searchable
    from webapp.lab import searches

    method = method_of(experiment.space)
    params = {p.name: p.choices[0] if p.choices else sum(p.search) / 2 for p in searchable(method)}
    space = {name: value for name, value in experiment.space.items() if name != "search"}
    job = rung_job(method, space, params, 3)
    run = searches.rung_run(experiment, job, None)
    trial = Trial(number=0, params=params, jobs=[job], objective={3: 50.0}, cost=3.0, state="complete")
    budget = experiment.space["search"]["budget"]
    experiment.search = {"status": "done", "trials": [trial.as_dict()], "spent": 3.0, "budget": budget}
    experiment.save(update_fields=["search"])
    return [run]
