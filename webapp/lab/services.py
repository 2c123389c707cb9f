"""What the views, the API and the management commands do with experiments: one place for each rule."""

from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from kombu.utils.uuid import uuid

from defenses.data import DataError, validate_dataset
from defenses.jobs import Plan
from defenses.methods import METHODS, job_kind, method_of, plan_space, training_epochs
from defenses.modelcheck import ModelRefused
from defenses.models import file_digest, verify_model_file
from defenses.search import can_search
from webapp.celery_app import CALIBRATE_STRIP, COMPUTE_PROFILE, COMPUTE_SCAN, EXECUTE_RUN, side_lane
from webapp.celery_app import app as celery_app
from webapp.lab import budgets, limits, searches
from webapp.lab.models import (
    STRIP_WAITING,
    BadNet,
    Dataset,
    Experiment,
    GoodNet,
    Leaderboard,
    Profile,
    Run,
    Status,
    TriggerScan,
    detections_lost_before,
    lock_requesters,
)
from webapp.lab.uploads import store_checked

SIDE = side_lane("cpu")  # profiles, scans and STRIP run on CPU workers, beside their runs (side_lane)


class AlreadyStored(Exception):
    """The team already has this file (same sha256): the stored row is offered instead of a second copy."""

    def __init__(self, row, original_name: str):
        self.row = row
        when = row.created.strftime("%Y-%m-%d %H:%M")
        super().__init__(
            f"{original_name} is already stored as {row.name!r} (uploaded by {row.owner.username}, "
            f"{when}): here it is. Nothing new was stored."
        )


def refuse_duplicate(model, team, path: Path) -> str:
    """The file's sha256; AlreadyStored when a row of the team already holds the same bytes."""
    digest = file_digest(path)
    existing = model.objects.filter(team=team, sha256=digest).select_related("owner").first()
    if existing is not None:
        raise AlreadyStored(existing, Path(path).name)
    return digest


def add_badnet(team, user, path: Path, name: str, arch: str = "", divisor: float = 255.0) -> BadNet:
    """Verify a model file in the sandbox (ModelRefused says why not), then store it; nothing is stored
    for a refused file, and a file the team already has is offered instead (AlreadyStored)."""
    digest = refuse_duplicate(BadNet, team, path)
    report = verify_model_file(path, arch or None, limits=limits.model_limits())
    with open(path, "rb") as handle:
        return BadNet.objects.create(
            team=team,
            owner=user,
            name=name,
            file=File(handle, name=Path(path).name),
            original_name=Path(path).name,
            sha256=digest,
            arch=arch,
            divisor=divisor,
            n_classes=report.n_classes,
            report=report.as_dict(),
        )


def store_badnet(form, team, user) -> BadNet | None:
    """The BadNet a valid BadNetForm (page or API) describes, checked and stored; None with the refusal on the
    form; AlreadyStored when the team has the file."""

    def store(path: Path, data: dict) -> BadNet:
        return add_badnet(team, user, path, data["name"], data["arch"], data["divisor"])

    return store_checked(form, store, ModelRefused)


def store_dataset(form, team, user) -> Dataset | None:
    """The set a valid DatasetForm (page or API) describes, checked and stored; None with the refusal on the
    form; AlreadyStored when the team has the file."""

    def store(path: Path, data: dict) -> Dataset:
        fields = {key: data[key] for key in ("role", "trigger", "target", "badnet")}
        return add_dataset(team, user, path, data["name"], **fields)

    return store_checked(form, store, DataError)


def add_dataset(
    team,
    user,
    path: Path,
    name: str,
    role: str,
    trigger: str = "",
    target: int | None = None,
    n_classes: int | None = None,
    badnet: BadNet | None = None,
) -> Dataset:
    """Validate a CSAW dataset file completely (DataError says why not), then store it. With a BadNet, its
    input size and classes are checked too, and the set is declared its data. A file the team already has is
    offered instead (AlreadyStored; declared for the named BadNet), unless it does not fit the named BadNet:
    then that is the refusal."""
    try:
        digest = refuse_duplicate(Dataset, team, path)
    except AlreadyStored as duplicate:
        if badnet is not None and duplicate.row.misfit(badnet):
            raise DataError(f"{Path(path).name}: {duplicate.row.misfit(badnet)}") from None
        if badnet is not None:
            duplicate.row.badnets.add(badnet)
        raise
    image_shape = tuple(badnet.report["input_shape"]) if badnet else None
    n_classes = badnet.n_classes if badnet else n_classes
    info = validate_dataset(path, image_shape, n_classes, limits.dataset_limits())
    with open(path, "rb") as handle:
        dataset = Dataset.objects.create(
            team=team,
            owner=user,
            name=name,
            role=role,
            trigger=trigger,
            target=target,
            file=File(handle, name=Path(path).name),
            original_name=Path(path).name,
            sha256=digest,
            **dataset_facts(info),
        )
    if badnet is not None:
        dataset.badnets.add(badnet)
    return dataset


def declare_used(badnet: BadNet, datasets) -> None:
    """Sets used in one of the BadNet's experiments are its data (Dataset.badnets)."""
    badnet.declared_sets.add(*datasets)


def declared_initial(badnet: BadNet) -> dict:
    """A form's initial sets for the BadNet: its declared clean validation and test sets (the newest of each)
    and its declared poisoned sets."""
    sets = badnet.declared_sets.order_by("-created")
    first = {
        role: sets.filter(role=role).values_list("pk", flat=True).first()
        for role in (Dataset.CLEAN_VALID, Dataset.CLEAN_TEST)
    }
    poisoned = list(sets.filter(role__in=[Dataset.POISONED_TEST, Dataset.POISONED_VALID]).values_list("pk", flat=True))
    return {"valid": first[Dataset.CLEAN_VALID], "test": first[Dataset.CLEAN_TEST], "poisoned": poisoned}


def dataset_facts(info) -> dict:
    """A checked set's size, image size and labels as Dataset fields (migration 0004 has a frozen copy)."""
    return {
        "count": info.count,
        "height": info.image_shape[0],
        "width": info.image_shape[1],
        "label_min": int(info.labels.min()),
        "label_max": int(info.labels.max()),
        "classes_present": len(set(info.labels.tolist())),
    }


def plan_for(experiment: Experiment) -> Plan:
    """The experiment's jobs and points, by its defense's own planner (defenses.methods)."""
    return plan_space(experiment.space)


@transaction.atomic
def submit(experiment: Experiment, enqueue: bool = True) -> list[Run]:
    """Create (or reuse) the runs the planner asks for and queue the ones not done yet (on Celery, unless
    `enqueue` is False: the caller then runs them itself). A job is served by the team's stored run of the
    same work, or by a longer run of its family (Run.stored_for); runs are reused only inside the
    experiment's team (Run.key_for): another team's run of the same files is never found, linked or queued."""
    if experiment.is_search:  # its runs are made rung by rung as the search goes (webapp/lab/searches.py)
        if enqueue:
            searches.start(experiment)
        return []
    fingerprint, team = experiment.data_fingerprint(), experiment.team_id
    jobs = plan_for(experiment).jobs
    runs = []
    for job, stored in zip(jobs, Run.stored_for(jobs, fingerprint, team), strict=True):
        run = (
            stored
            or Run.objects.get_or_create(
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
            )[0]
        )
        runs.append(run)
    experiment.runs.add(*runs)
    for run in runs:
        sent = run.status == Run.QUEUED and run.task_id  # its message is waiting: another would be a spare turn
        if enqueue and run.status in (Run.QUEUED, Run.FAILED, Run.CANCELLED) and not sent:
            requeue(run)
    return runs


def requeue(run: Run) -> None:
    """Queue a run (again): failed or cancelled points re-run in place, without a new experiment. Its
    message's id is stored before the message is sent, so a worker never finds a queued run without one
    (Run.next_in_line leaves those out)."""
    Run.objects.filter(pk=run.pk).update(status=Run.QUEUED, cancel_requested=False, error="", progress=0.0)

    def send() -> None:
        task_id = uuid()
        Run.objects.filter(pk=run.pk).update(task_id=task_id)
        celery_app.send_task(EXECUTE_RUN, args=[run.pk], queue=run.queue, task_id=task_id)

    transaction.on_commit(send)


def cancel(experiment: Experiment) -> int:
    """Stop every unfinished run of the experiment (its own team's) and return how many: queued ones end at
    once, running ones at their next batch check; a search asks no new trial. The queued runs' messages are
    revoked (one broadcast): a worker drops a revoked message on arrival instead of spending a child process
    on a turn with nothing to serve. Every queued run keeps a message: each queued run has one, and a run a
    turn served early left its own behind."""
    if experiment.is_search:
        searches.cancel(experiment)
    asked = experiment.own_runs().filter(status__in=[Run.QUEUED, Run.RUNNING]).update(cancel_requested=True)
    queued = experiment.own_runs().filter(status=Run.QUEUED)
    messages = list(queued.exclude(task_id="").values_list("task_id", flat=True))
    queued.update(status=Run.CANCELLED, finished_at=timezone.now())
    if messages:  # a re-run sends a new message, under a new id
        transaction.on_commit(lambda: celery_app.control.revoke(messages))
    return asked


def experiment_points(experiment: Experiment) -> list[dict]:
    """Every point of the experiment (its defense's columns, e.g. T, LR, epochs) with its metrics, read from
    the team's runs that serve its jobs (Run.stored_for); a search's are its trials' epochs."""
    if experiment.is_search:
        return search_points(experiment)
    columns = [column.name for column in method_of(experiment.space).columns]
    the_plan = plan_for(experiment)
    runs = Run.stored_for(the_plan.jobs, experiment.data_fingerprint(), experiment.team_id)
    rows = []
    for coordinates, (job_index, position) in sorted(the_plan.points.items()):
        run = runs[job_index]
        point = next((p for p in run.points.all() if p.position == position), None) if run else None
        rows.append(
            dict(zip(columns, coordinates, strict=True))
            | {
                "run": run.pk if run else None,
                "position": position,
                "status": run.status if run else None,
                "metrics": point.metrics if point else None,
            }
        )
    return rows


def search_points(experiment: Experiment) -> list[dict]:
    """Every epoch of every trial of a search, read from the run of its last rung, with the trial's number."""
    from defenses.search import Trial, searchable

    method = method_of(experiment.space)
    own = [p.name for p in searchable(method) if not p.axis]  # the axes are the columns
    trials = [Trial.from_dict(record) for record in experiment.search.get("trials", []) if record["jobs"]]
    jobs = [trial.jobs[-1] for trial in trials]
    runs = Run.stored_for(jobs, experiment.data_fingerprint(), experiment.team_id)
    rows = []
    for trial, job, run in zip(trials, jobs, runs, strict=True):
        points = {p.position: p.metrics for p in run.points.all()} if run else {}
        for epoch in range(1, int(job.config["epochs"]) + 1):
            coordinates = {c.name: epoch if c.name == "epochs" else job.config.get(c.name) for c in method.columns}
            coordinates |= {name: job.config.get(name) for name in own}  # FST's alpha, SAU's budget
            status = run.status if run else None
            rows.append(
                coordinates
                | {"trial": trial.number, "run": run.pk if run else None, "position": epoch}
                | {"status": status, "metrics": points.get(epoch)}
            )
    return rows


def plan_reuse(team, the_plan: Plan, fingerprint: dict) -> list[dict]:
    """For the planner's preview: each job of the plan that a stored (or running) run of the team already
    serves, with that run's epoch count, so the page can say what will not be trained again."""
    stored = Run.stored_for(the_plan.jobs, fingerprint, team.pk)
    return [
        {"run": run, "job": job, "epochs": run.config.get("epochs"), "asked": job.config.get("epochs")}
        for job, run in zip(the_plan.jobs, stored, strict=True)
        if run is not None and run.status in (Run.DONE, Run.RUNNING, Run.QUEUED)
    ]


def describe_plan(experiment: Experiment) -> dict:
    the_plan = plan_for(experiment)
    return {
        "points": len(the_plan.points),
        "jobs": len(the_plan.jobs),
        "training_epochs": training_epochs(the_plan),
        "space": experiment.space,
    }


def request_profile(badnet: BadNet, dataset: Dataset) -> Profile:
    """The BadNet's activation profile on a clean set: the stored one, or a new one queued on a worker.
    Both rows must be of one team (the views fetch the dataset within the BadNet's team; this is the last
    check, so that no caller can read another team's file through a profile)."""
    if badnet.team_id != dataset.team_id:
        raise ValueError(f"{dataset.name} is not a dataset of {badnet.name}'s team.")
    profile, created = Profile.objects.get_or_create(badnet=badnet, dataset=dataset)
    if created or profile.status == Profile.Status.FAILED:
        Profile.objects.filter(pk=profile.pk).update(status=Profile.Status.QUEUED, error="")
        transaction.on_commit(lambda: celery_app.send_task(COMPUTE_PROFILE, args=[profile.pk], queue=SIDE))
    return profile


def detection_refusal(what: str, pending: QuerySet, team_filter: dict, user_filter: dict, team) -> str | None:
    """Why one more `what` (scans or STRIP calibrations) may not be queued: the team, or the user across all
    their teams, has as many waiting or running as the settings allow (TEAM_/USER_PENDING_DETECTIONS)."""
    for count, limit, who in (
        (pending.filter(**team_filter).count(), settings.TEAM_PENDING_DETECTIONS, team.name),
        (pending.filter(**user_filter).count(), settings.USER_PENDING_DETECTIONS, "You (in all your teams)"),
    ):
        if count >= limit:
            has = "have" if who.startswith("You") else "has"
            return f"{who} {has} {count} {what} waiting or running already; ask again once one of them is done."
    return None


@transaction.atomic
def request_scan(badnet: BadNet, dataset: Dataset, user) -> TriggerScan:
    """The BadNet's Neural Cleanse scan on a clean set: the stored one, or a new one queued on a worker. Both
    rows must be of one team (as for profiles: no caller can scan with another team's file). ValueError when
    the team or the user has as many scans waiting as allowed."""
    if badnet.team_id != dataset.team_id:
        raise ValueError(f"{dataset.name} is not a dataset of {badnet.name}'s team.")
    lock_requesters(badnet.team, user)
    scan, created = TriggerScan.objects.get_or_create(badnet=badnet, dataset=dataset)
    if created or scan.status == TriggerScan.Status.FAILED or scan.stale:
        waiting = TriggerScan.Status.QUEUED, TriggerScan.Status.RUNNING
        pending = TriggerScan.objects.filter(status__in=waiting, updated__gte=detections_lost_before())
        team, mine = {"badnet__team": badnet.team}, {"requested_by": user}
        refusal = detection_refusal("Neural Cleanse scans", pending.exclude(pk=scan.pk), team, mine, badnet.team)
        if refusal:
            raise ValueError(refusal)  # the transaction's end takes a row it made along
        TriggerScan.objects.filter(pk=scan.pk).update(
            status=TriggerScan.Status.QUEUED, error="", requested_by=user, updated=timezone.now()
        )
        transaction.on_commit(lambda: celery_app.send_task(COMPUTE_SCAN, args=[scan.pk], queue=SIDE))
    return scan


@transaction.atomic
def request_strip(goodnet: GoodNet, data: dict, user) -> GoodNet:
    """STRIP for a GoodNet (a valid StripForm's data): calibrated and measured by a worker; until it is done
    the GoodNet answers by the disagreement rule alone. Every set must be of the GoodNet's team. ValueError
    when the GoodNet is being calibrated already, or the team or the user has as many waiting as allowed."""
    sets = [data["valid"], data["test"], *data["poisoned"]]
    if any(dataset.team_id != goodnet.team_id for dataset in sets):
        raise ValueError(f"Every set must be one of {goodnet.team.name}'s.")
    lock_requesters(goodnet.team, user)
    pending = GoodNet.objects.filter(strip_status__in=STRIP_WAITING, strip_queued_at__gte=detections_lost_before())
    if pending.filter(pk=goodnet.pk).exists():
        raise ValueError("STRIP is being calibrated already; wait until this page shows its figures.")
    refusal = detection_refusal(
        "STRIP calibrations", pending, {"team": goodnet.team}, {"strip_requested_by": user}, goodnet.team
    )
    if refusal:
        raise ValueError(refusal)
    GoodNet.objects.filter(pk=goodnet.pk).update(
        strip_frr=data["frr"],
        strip_valid=data["valid"],
        strip_status=Status.QUEUED,
        strip_queued_at=timezone.now(),
        strip_requested_by=user,
        strip_error="",
        figures={},
    )
    args = [goodnet.pk, data["test"].pk, [dataset.pk for dataset in data["poisoned"]]]
    transaction.on_commit(lambda: celery_app.send_task(CALIBRATE_STRIP, args=args, queue=SIDE))
    goodnet.refresh_from_db()
    return goodnet


@transaction.atomic
def train_network_at(run: Run, epoch: int, user) -> Run:
    """A run that trains `run`'s job to `epoch` and keeps that epoch's network (a run keeps only its last):
    the same configuration, seed and data, so the same figures on the same machine (an epoch's image order is
    a function of the seed and the epoch: defenses.finetune), and a network to compose a GoodNet from. It has
    a key of its own and no family, so it serves no other request and no other run serves it. The stored one
    when it exists and has not failed; budgets.OverBudget past a budget; ValueError for an epoch it cannot."""
    kind = job_kind(run.kind)
    if not (kind.repairs and kind.epoch_prefix):
        raise ValueError(f"Run {run.pk} ({run.kind}) trains no network epoch by epoch: there is none to keep.")
    if not 1 <= epoch < int(run.config.get("epochs", 0)):
        last = int(run.config["epochs"])
        raise ValueError(f"Run {run.pk} has no epoch {epoch} to keep a network of: choose 1 to {last - 1}.")
    key = run.network_key(epoch)
    stored = Run.objects.filter(key=key).first()
    if stored is not None and stored.status in (Run.QUEUED, Run.RUNNING, Run.DONE):
        return stored
    config = run.config | {"epochs": int(epoch)}
    experiments = list(run.experiments.filter(team_id=run.team_id).select_related("valid"))
    n_valid = experiments[0].valid.count if experiments else 1
    budgets.charge(run.team, user, kind.cost(config, n_valid, run.badnet.n_classes))
    fields = {"badnet": run.badnet, "family": "", "kind": run.kind, "config": config, "inputs": run.inputs}
    # not linked to the experiments: it is none of their points, and a finished experiment stays finished
    network, _ = Run.objects.update_or_create(team=run.team, key=key, defaults=fields | {"queue": run.queue})
    requeue(network)
    return network


@transaction.atomic
def rerun_failed(experiment: Experiment, user) -> int:
    """Queue the experiment's (own team's) failed and cancelled runs again, in place; a failed or cancelled
    search goes on from its trials (its runs are its rungs: the search queues them). budgets.OverBudget when
    what they have left would pass the team's or the user's budget."""
    if experiment.is_search:
        if experiment.search.get("status") not in (Status.FAILED, Status.CANCELLED):
            return 0
        budgets.charge(experiment.team, user, budgets.rerun_units(experiment, []))
        searches.start(experiment)
        return 1
    runs = list(experiment.own_runs().filter(status__in=[Run.FAILED, Run.CANCELLED]))
    budgets.charge(experiment.team, user, budgets.rerun_units(experiment, runs))
    for run in runs:
        requeue(run)
    return len(runs)


@transaction.atomic
def create_experiment(team, user, data: dict) -> Experiment:
    """Store an experiment from a validated form or API payload and queue its runs; budgets.OverBudget when the
    work it adds (the form's `units`) would pass the team's or the user's budget now."""
    budgets.charge(team, user, data.get("units", 0.0))
    experiment = Experiment.objects.create(
        team=team,
        owner=user,
        name=data["name"],
        badnet=data["badnet"],
        valid=data["valid"],
        test=data["test"],
        queue=data["queue"],
        max_ca_drop=data["max_ca_drop"],
        space=data["space"],
    )
    experiment.poisoned.set(data["poisoned"])
    declare_used(experiment.badnet, [experiment.valid, experiment.test, *data["poisoned"]])
    submit(experiment)
    return experiment


def same_leaderboard(badnet: BadNet, data: dict) -> Leaderboard | None:
    """The BadNet's leaderboard on the same sets, floor, held-out share, budget, seed and queue, if one exists."""
    wanted = sorted(d.pk for d in data["poisoned"])
    boards = Leaderboard.objects.filter(
        badnet=badnet, max_ca_drop=data["max_ca_drop"], budget=data["budget"], seed=data["seed"]
    )
    for board in boards.order_by("-pk"):
        first = board.experiments.order_by("pk").first()
        if (
            first is not None
            and (first.valid_id, first.test_id, first.queue) == (data["valid"].pk, data["test"].pk, data["queue"])
            and first.holdout == data["holdout"]
            and sorted(first.poisoned.values_list("pk", flat=True)) == wanted
        ):
            return board
    return None


@transaction.atomic
def start_leaderboard(team, user, data: dict) -> tuple[Leaderboard, bool]:
    """One experiment per registered defense on the BadNet and sets of `data` (a valid LeaderboardForm's),
    queued at once: a search within the board's budget for every training defense (the same budget for each),
    the defense's small sweep (defenses.methods `sweep`) for the others. Every experiment holds out the same
    part of the clean validation set, so the ranking compares like with like. Returns the board and whether it
    is new: the same board asked again (a second click, six POSTs at once) is the one that exists. The BadNet's
    row is locked first (SQLite's IMMEDIATE transactions do the same), so the check and the insert are one."""
    BadNet.objects.select_for_update().filter(pk=data["badnet"].pk).first()
    same = same_leaderboard(data["badnet"], data)
    if same is not None:
        return same, False
    budgets.charge(team, user, data.get("units", 0.0))
    board = Leaderboard.objects.create(
        team=team,
        owner=user,
        badnet=data["badnet"],
        max_ca_drop=data["max_ca_drop"],
        budget=data["budget"],
        seed=data.get("seed", 0),
    )
    for method in METHODS.values():
        space = {"defense": method.name, **method.sweep, "holdout": data["holdout"], "seed": board.seed}
        if can_search(method):
            space["search"] = {"budget": data["budget"]}
        experiment = Experiment.objects.create(
            team=team,
            owner=user,
            name=f"{method.title} ({board.name})",
            badnet=data["badnet"],
            valid=data["valid"],
            test=data["test"],
            queue=data["queue"],
            max_ca_drop=data["max_ca_drop"],
            space=space,
            leaderboard=board,
        )
        experiment.poisoned.set(data["poisoned"])
        submit(experiment)
    declare_used(data["badnet"], [data["valid"], data["test"], *data["poisoned"]])
    return board, True
