"""Budgets of training work, in fine-tuning-epoch units (passes over the clean validation set, as each job kind
counts them: JobKind.cost), per team and per user: work that is queued or running counts until it ends, and a
request that would take a team or a user past its budget is refused with what it needs and what is left
(settings TEAM_EPOCH_BUDGET, USER_EPOCH_BUDGET). Forms ask `refusal` for the message; the services `charge`
inside the transaction that stores the work, behind a lock on the team, so requests at once cannot all pass."""

import math

from django.conf import settings

from defenses.methods import job_kind, method_of
from webapp.lab.models import SEARCH_ENDED, Experiment, Run, lock_requesters


class OverBudget(ValueError):
    """The request would take a team or a user past its budget; the message says by how much and what to do."""


def run_units(kind: str, config: dict, n_valid: int, n_classes: int) -> float:
    """A job's cost in fine-tuning-epoch units on a clean validation set of `n_valid` images, for a BadNet of
    `n_classes` labels."""
    return job_kind(kind).cost(config, max(n_valid, 1), n_classes)


def outstanding(runs, experiments) -> float:
    """Units still to train: each unfinished run's cost times the share it has left, and each unfinished
    search's budget less what it spent (a search's rungs are counted in its budget, not again as runs)."""
    unfinished = runs.filter(status__in=[Run.QUEUED, Run.RUNNING]).exclude(experiments__space__has_key="search")
    seen, units = set(), 0.0
    for pk, kind, config, progress, n_valid, n_classes in unfinished.values_list(
        "pk", "kind", "config", "progress", "experiments__valid__count", "badnet__n_classes"
    ):
        if pk not in seen:  # a run shared by several experiments is one run
            seen.add(pk)
            units += run_units(kind, config, n_valid or 1, n_classes) * (1 - progress)
    for search in experiments.filter(space__has_key="search").values_list("search", flat=True):
        if search and search.get("status") not in SEARCH_ENDED:
            units += search_left(search)
    return units


def search_setup(space: dict, n_valid: int, n_classes: int) -> float:
    """What a search does once before its trials (defenses.search.setup_cost): charged when it is asked for,
    and counted until the search ends (search_left)."""
    from defenses.search import setup_cost

    return setup_cost(method_of(space), space, n_valid, n_classes)


def search_left(search: dict) -> float:
    """What a search (Experiment.search) may still spend: its budget less what it spent, and its setup (a scan)
    until it ends."""
    return max(0.0, float(search.get("budget", 0)) - float(search.get("spent", 0))) + float(search.get("setup", 0))


def team_outstanding(team) -> float:
    return outstanding(Run.objects.filter(team=team), Experiment.objects.filter(team=team))


def user_outstanding(user) -> float:
    return outstanding(Run.objects.filter(experiments__owner=user), Experiment.objects.filter(owner=user))


def needed(team, space: dict, plan, fingerprint: dict | None, n_valid: int, n_classes: int) -> float:
    """Units a new experiment adds: a search's budget and what it does once before its trials (a scan), or
    its plan's jobs that no run of the team has done or is doing (those are stored, or counted already)."""
    if "search" in space:
        return float(space["search"]["budget"]) + search_setup(space, n_valid, n_classes)
    stored = Run.stored_for(plan.jobs, fingerprint, team.pk) if fingerprint else [None] * len(plan.jobs)
    serving = (Run.DONE, Run.RUNNING, Run.QUEUED)
    new = [job for job, run in zip(plan.jobs, stored, strict=True) if run is None or run.status not in serving]
    return sum(run_units(job.kind, job.config, n_valid, n_classes) for job in new)


def rerun_units(experiment: Experiment, runs: list[Run]) -> float:
    """Units a re-run queues: a search's budget less what it spent, or what the failed and cancelled runs
    have left."""
    if experiment.is_search:
        return search_left(experiment.search)
    n_valid, n_classes = experiment.valid.count, experiment.badnet.n_classes
    return sum(run_units(r.kind, r.config, n_valid, n_classes) * (1 - r.progress) for r in runs)


def limits(team, user) -> list[tuple[str, str, int, float]]:
    """(who, verb, budget, units queued or running) of the team and, with a user, of the user."""
    found = [("your team", "has", settings.TEAM_EPOCH_BUDGET, team_outstanding(team))]
    if user is not None:
        found.append(("you", "have", settings.USER_EPOCH_BUDGET, user_outstanding(user)))
    return found


def refusal(team, user, units: float) -> str | None:
    """Why `units` more may not be queued now, naming the budget that binds, in words that say what to do;
    None: they may."""
    if units <= 0:
        return None
    who, has, budget, taken = min(limits(team, user), key=lambda limit: limit[2] - limit[3])
    left = max(0.0, budget - taken)
    if units <= left + 1e-9:
        return None
    needs = math.ceil(units)
    return (
        f"This needs {needs:,} fine-tuning epoch{'s' if needs != 1 else ''}; "
        f"{who} {has} {math.floor(left):,} of {budget:,} left "
        f"({math.ceil(taken):,} queued or running). Make the grid or the budget smaller, cancel queued work, or "
        "wait for it to end (an operator sets the budgets: PRUNELAB_TEAM_EPOCH_BUDGET, PRUNELAB_USER_EPOCH_BUDGET)."
    )


def charge(team, user, units: float) -> None:
    """Inside the transaction that queues the work: lock the team's and the user's rows (SQLite's IMMEDIATE
    transactions do the same for the whole database; the user's, for one user asking in two teams at once),
    then refuse (OverBudget) what would pass a budget."""
    lock_requesters(team, user)
    message = refusal(team, user, units)
    if message:
        raise OverBudget(message)


def in_words(team, user) -> str:
    """What is left, for the forms: "your team has 2,450 of 3,000 fine-tuning epochs left; you have 1,450 of
    2,000"."""
    parts = [
        f"{who} {has} {math.floor(max(0.0, budget - taken)):,} of {budget:,}"
        for who, has, budget, taken in limits(team, user)
    ]
    return parts[0] + " fine-tuning epochs left" + "".join(f"; {part}" for part in parts[1:])
