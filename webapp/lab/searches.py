"""Search experiments on the dashboard (defenses.search): queued as one task, their trials' rungs stored as
ordinary runs of the experiment's team, their state kept on the experiment (`Experiment.search`) for the live
page.

A rung is a run of the defense's job to 3, 9 or 27 epochs. A run the team already has that serves it (the
same work, or a longer finished run of its family) costs nothing and is read; otherwise the rung's run
starts from the previous rung's points and checkpoint (copied into its folder), so it trains only the new
epochs. The trials, their objective by epoch, what they cost and their state are written after every rung:
a second delivery of the task continues from there.
"""

import shutil
import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from defenses.finetune import CHECKPOINT, CHECKPOINTS, Cancelled
from defenses.jobs import Job
from defenses.methods import PARAMETERS, job_kind, method_of
from defenses.search import SearchSettings, Trial, best_trial, importance, rung_cost, search
from defenses.selection import flat_row, objective
from webapp.celery_app import RUN_SEARCH, side_lane
from webapp.celery_app import app as celery_app
from webapp.lab import budgets
from webapp.lab.models import SEARCH_ENDED, Dataset, Experiment, Point, Run, Status

WAIT_SECONDS = 5  # how often a rung that another worker is training is looked at
TRIAL_STATES = {
    "running": "training",
    "complete": "reached the last rung",
    "pruned": "stopped by successive halving",
    "budget": "stopped: its next rung would pass the budget",
    "cancelled": "cancelled",
}


class RungFailed(Exception):
    """A rung's run failed; the search stops and says why."""


def settings_of(experiment: Experiment) -> SearchSettings:
    return SearchSettings(budget=float(experiment.space["search"]["budget"]), seed=int(experiment.space.get("seed", 0)))


def start(experiment: Experiment) -> None:
    """Queue the search (again): a new one, or one that failed or was cancelled, which goes on from its trials.
    Its setup (a scan its worker does once before the trials: budgets.search_setup) is kept with its state, so
    that it counts against the budgets until the search ends."""
    setup = budgets.search_setup(experiment.space, experiment.valid.count, experiment.badnet.n_classes)
    state = dict(experiment.search) | {
        "status": Status.QUEUED,
        "error": "",
        "budget": settings_of(experiment).budget,
        "setup": setup,
    }
    state.setdefault("trials", [])
    Experiment.objects.filter(pk=experiment.pk).update(search=state)
    experiment.search = state
    args, queue = [experiment.pk], side_lane(experiment.queue)  # its rungs are runs it trains itself
    transaction.on_commit(lambda: celery_app.send_task(RUN_SEARCH, args=args, queue=queue))


def begin(experiment: Experiment, worker: str) -> bool:
    """Mark the search as running on `worker`; False when it has ended (done, or cancelled while queued)."""
    with transaction.atomic():
        row = Experiment.objects.select_for_update().get(pk=experiment.pk)
        status = row.search.get("status")
        if status in SEARCH_ENDED:
            return False
        if status == "cancelling":  # cancelled while its worker died: it ends here
            row.search = row.search | {"status": Status.CANCELLED, "ended": timezone.now().isoformat()}
            row.save(update_fields=["search"])
            return False
        row.search = row.search | {"status": Status.RUNNING, "worker": worker, "started": timezone.now().isoformat()}
        row.save(update_fields=["search"])
    experiment.search = row.search
    return True


def save(experiment: Experiment, **changes) -> None:
    """Write part of the search's state (the rest as it is in the database: cancel may have written too)."""
    with transaction.atomic():
        row = Experiment.objects.select_for_update().get(pk=experiment.pk)
        row.search = row.search | changes
        row.save(update_fields=["search"])
    experiment.search = row.search


def end(experiment: Experiment, status: str, error: str = "", trials: list[Trial] | None = None) -> None:
    changes = {"status": status, "error": error, "ended": timezone.now().isoformat()}
    if trials is not None:
        changes["importance"] = importance(method_of(experiment.space), trials)
    save(experiment, **changes)


def objective_of(experiment: Experiment, before_valid: float):
    """A point's objective: the experiment's held-out selection score within its floor (defenses.selection)."""
    test, valid = experiment.triggers(), experiment.triggers(Dataset.POISONED_VALID)

    def score(metrics: dict) -> float | None:
        row = flat_row(metrics, test, valid) | {"before_valid_acc": before_valid}
        return objective(row, experiment.max_ca_drop)

    return score


def carry_out(experiment: Experiment, loaded, perform, worker: str) -> str:
    """The search itself, from its stored trials; `perform(run)` runs one run claimed for `worker` on
    `loaded`."""
    space = experiment.space
    split = loaded.split(float(space["holdout"]), int(space.get("seed", 0))) if "holdout" in space else loaded
    history = [Trial.from_dict(record) for record in experiment.search.get("trials", [])]
    ended = {trial.number for trial in history if trial.state != "running"}
    n_valid, n_classes = len(loaded.valid[1]), loaded.report.n_classes

    def record(trials: list[Trial]) -> None:
        spent, trained = sum(t.cost for t in trials), sum(t.trained for t in trials)
        save(experiment, trials=[t.as_dict() for t in trials], spent=spent, trained=trained)
        for trial in trials:
            if trial.state != "running" and trial.number not in ended:  # never extended again: its checkpoint goes
                ended.add(trial.number)
                drop_checkpoints(experiment, trial.jobs[-1:])

    try:
        trials = search(
            method_of(space),
            {name: value for name, value in space.items() if name != "search"},
            settings_of(experiment),
            rung_runner(experiment, perform, worker, n_valid, n_classes),
            objective_of(experiment, split.baseline()["valid_acc"]),
            n_valid,
            n_classes,
            history=history,
            on_trial=record,
        )
    except Cancelled:
        end(experiment, Status.CANCELLED, "Cancelled by a user.", trials_of(experiment))
        return Status.CANCELLED
    except RungFailed as failure:
        end(experiment, Status.FAILED, str(failure))
        return Status.FAILED
    record(trials)
    end(experiment, Status.DONE, trials=trials)
    return Status.DONE


def rung_runner(experiment: Experiment, perform, worker: str, n_valid: int, n_classes: int):
    """defenses.search's RungRunner for the dashboard: each rung a run of the team (served, or trained here
    from the previous rung's checkpoint); its points and the units it cost."""
    fingerprint, team = experiment.data_fingerprint(), experiment.team_id

    def run_rung(job: Job, previous: Job | None) -> tuple[dict[int, dict], float]:
        stored = Run.stored_for([job], fingerprint, team)[0]
        if stored is not None and stored.status == Run.DONE:
            experiment.runs.add(stored)
            return points_of(stored, job), 0.0
        run = rung_run(experiment, job, stored)
        earlier = Run.stored_for([previous], fingerprint, team)[0] if previous else None
        if earlier is not None and earlier.status == Run.DONE:
            extend(run, earlier, int(previous.config["epochs"]))
        if experiment_cancelled(experiment):
            raise Cancelled("cancelled before a rung")
        outcome = train(run, perform, worker)
        if outcome == Run.CANCELLED:
            raise Cancelled("cancelled during a rung")
        if outcome != Run.DONE:
            raise RungFailed(f"Run {run.pk} ({job_kind(job.kind).describe(job.config)}) failed: {run.error}")
        units = rung_cost(job, previous, n_valid, n_classes)
        return points_of(run, job), units

    return run_rung


def rung_run(experiment: Experiment, job: Job, stored: Run | None) -> Run:
    """The team's run of this rung (its own key), made if missing, linked to the experiment."""
    fingerprint, team = experiment.data_fingerprint(), experiment.team_id
    run = stored if stored is not None and stored.key == Run.key_for(job, fingerprint, team) else None
    if run is None:
        run, _ = Run.objects.get_or_create(
            team=experiment.team,
            key=Run.key_for(job, fingerprint, team),
            defaults={
                "badnet": experiment.badnet,
                "family": Run.family_for(job, fingerprint, team),
                "kind": job.kind,
                "config": job.config,
                "inputs": experiment.run_inputs(),
                "queue": experiment.queue,
            },
        )
    experiment.runs.add(run)
    return run


def extend(run: Run, earlier: Run, epochs: int) -> None:
    """Start `run` where the done run `earlier` of the same trial stopped: its points up to `epochs` and its
    kept checkpoint, copied unless `run` has a checkpoint of its own (a rung resumed after a kill)."""
    folder, source = run.artifact_dir(), earlier.artifact_dir() / CHECKPOINT
    if (folder / CHECKPOINT).exists() or not source.exists():
        return
    for point in earlier.points.filter(position__lte=epochs):
        Point.objects.update_or_create(run=run, position=point.position, defaults={"metrics": point.metrics})
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, folder / CHECKPOINT)
    for checkpoint in earlier.artifact_dir().glob(CHECKPOINTS):  # the trial goes on from `run` now
        checkpoint.unlink(missing_ok=True)


def train(run: Run, perform, worker: str) -> str:
    """Claim and perform the run here; when another worker holds it (its heartbeat fresh), wait for its end."""
    Run.objects.filter(pk=run.pk, status__in=[Run.FAILED, Run.CANCELLED]).update(
        status=Run.QUEUED, cancel_requested=False, error="", progress=0.0
    )
    deadline = time.monotonic() + settings.LONGEST_RUN_SECONDS
    while time.monotonic() < deadline:
        claimed = Run.claim(run.pk, worker=worker, stale_after=settings.RUN_STALE_SECONDS)
        if claimed is not None:
            perform(claimed)
            claimed.refresh_from_db()
            return claimed.status
        run.refresh_from_db()
        if run.status in (Run.DONE, Run.FAILED, Run.CANCELLED):
            return run.status
        time.sleep(WAIT_SECONDS)
    return Run.FAILED


def drop_checkpoints(experiment: Experiment, jobs: list[Job]) -> None:
    for run in Run.stored_for(jobs, experiment.data_fingerprint(), experiment.team_id):
        if run is not None and run.status == Run.DONE:
            for checkpoint in run.artifact_dir().glob(CHECKPOINTS):
                checkpoint.unlink(missing_ok=True)


def experiment_cancelled(experiment: Experiment) -> bool:
    return Experiment.objects.filter(pk=experiment.pk, search__status="cancelling").exists()


def points_of(run: Run, job: Job) -> dict[int, dict]:
    """The run's points up to the job's epoch count, by position."""
    epochs = int(job.config.get("epochs", 0))
    return {p.position: p.metrics for p in Point.objects.filter(run=run, position__lte=epochs)}


def cancel(experiment: Experiment) -> None:
    """Stop a search: a queued one ends at once, a running one at its rung's next batch check."""
    with transaction.atomic():
        row = Experiment.objects.select_for_update().get(pk=experiment.pk)
        status = row.search.get("status")
        if status in SEARCH_ENDED:
            return
        row.search = row.search | {"status": Status.CANCELLED if status == Status.QUEUED else "cancelling"}
        row.save(update_fields=["search"])
    experiment.search = row.search


def trials_of(experiment: Experiment) -> list[Trial]:
    return [Trial.from_dict(record) for record in experiment.search.get("trials", [])]


def summary(experiment: Experiment) -> dict:
    """What the search page shows: trials (with their runs), the best so far against the units spent."""
    trials = trials_of(experiment)
    best = best_trial(trials)
    curve, so_far, spent = [], None, 0.0
    for trial in trials:
        spent += trial.cost
        if trial.value is not None and (so_far is None or trial.value > so_far):
            so_far = trial.value
        curve.append({"trial": trial.number, "spent": spent, "best": so_far, "value": trial.value})
    jobs = [job for trial in trials for job in trial.jobs]
    runs = dict(
        zip(
            [job.key for job in jobs],
            Run.stored_for(jobs, experiment.data_fingerprint(), experiment.team_id),
            strict=True,
        )
    )
    rows = [
        {
            "number": t.number,
            "params": {PARAMETERS[name].noun or PARAMETERS[name].label: value for name, value in t.params.items()},
            "epochs": t.epochs,
            "value": t.value,
            "best_epoch": t.best_epoch,
            "cost": t.cost,
            "trained": t.trained,
            "state": TRIAL_STATES[t.state],
            "runs": [runs[job.key].pk for job in t.jobs if runs.get(job.key) is not None],
        }
        for t in trials
    ]
    return {
        "status": experiment.search.get("status", Status.QUEUED),
        "budget": experiment.search.get("budget"),
        "spent": experiment.search.get("spent", 0.0),
        "trained": experiment.search.get("trained", experiment.search.get("spent", 0.0)),
        "error": experiment.search.get("error", ""),
        "trials": rows,
        "best": best,
        "curve": curve,
        "importance": experiment.search.get("importance", {}),
    }
