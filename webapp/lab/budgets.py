"""Budgets of training work, in fine-tuning-epoch units (defenses.methods.training_epochs), per team and per
user: work that is queued or running counts until it ends, and a request that would take a team or a user past
its budget is refused with what it needs and what is left (settings TEAM_EPOCH_BUDGET, USER_EPOCH_BUDGET)."""

from django.conf import settings

from defenses.jobs import Job
from defenses.methods import training_epochs
from webapp.lab.models import SEARCH_ENDED, Experiment, Run


def outstanding(runs, experiments) -> float:
    """Units still to train: each unfinished run's cost times the share it has left, and each unfinished
    search's budget less what it spent (a search's rungs are counted in its budget, not again as runs)."""
    unfinished = runs.filter(status__in=[Run.QUEUED, Run.RUNNING]).exclude(experiments__space__has_key="search")
    units = sum(
        training_epochs(Job(kind, config)) * (1 - progress)
        for kind, config, progress in unfinished.distinct().values_list("kind", "config", "progress")
    )
    for search in experiments.filter(space__has_key="search").values_list("search", flat=True):
        if search and search.get("status") not in SEARCH_ENDED:
            units += max(0.0, float(search.get("budget", 0)) - float(search.get("spent", 0)))
    return units


def team_outstanding(team) -> float:
    return outstanding(Run.objects.filter(team=team), Experiment.objects.filter(team=team))


def user_outstanding(user) -> float:
    return outstanding(Run.objects.filter(experiments__owner=user), Experiment.objects.filter(owner=user))


def needed(team, space: dict, plan, fingerprint: dict | None) -> float:
    """Units a new experiment adds: a search's budget, or its plan's jobs that no run of the team has done or
    is doing (those are stored, or counted already)."""
    if "search" in space:
        return float(space["search"]["budget"])
    stored = Run.stored_for(plan.jobs, fingerprint, team.pk) if fingerprint else [None] * len(plan.jobs)
    serving = (Run.DONE, Run.RUNNING, Run.QUEUED)
    return float(
        sum(
            training_epochs(job)
            for job, run in zip(plan.jobs, stored, strict=True)
            if not run or run.status not in serving
        )
    )


def refusal(team, user, needed: float) -> str | None:
    """Why a request of `needed` units may not be queued now, in words that say what to do; None: it may."""
    if needed <= 0:
        return None
    limits = [("your team", settings.TEAM_EPOCH_BUDGET, team_outstanding(team))]
    if user is not None:
        limits.append(("you", settings.USER_EPOCH_BUDGET, user_outstanding(user)))
    for who, budget, taken in limits:
        left = max(0.0, budget - taken)
        if needed > left:
            has = "have" if who == "you" else "has"
            return (
                f"This needs {needed:,.0f} fine-tuning epochs; {who} {has} {left:,.0f} of {budget:,} left "
                f"({taken:,.0f} queued or running). Make the grid or the budget smaller, cancel queued work, or "
                "wait for it to end (an operator sets the budgets: PRUNELAB_TEAM_EPOCH_BUDGET, "
                "PRUNELAB_USER_EPOCH_BUDGET)."
            )
    return None


def in_words(team, user) -> str:
    """What is left, for the forms: "your team has 2,450 of 3,000 epochs left; you have 1,450 of 2,000"."""
    team_left = max(0.0, settings.TEAM_EPOCH_BUDGET - team_outstanding(team))
    text = f"your team has {team_left:,.0f} of {settings.TEAM_EPOCH_BUDGET:,} fine-tuning epochs left"
    if user is not None:
        user_left = max(0.0, settings.USER_EPOCH_BUDGET - user_outstanding(user))
        text += f"; you have {user_left:,.0f} of {settings.USER_EPOCH_BUDGET:,}"
    return text
