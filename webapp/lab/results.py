"""An experiment's points as flat rows for tables, charts, CSV and the API, and the honest "best" choice.

Scores here use the poisoned *test* sets only; a poisoned *validation* set (if the user uploaded one as
such) is kept apart and is the only poisoned data a selection may look at (DESIGN.md, "Honest selection").
"""

import statistics

from defenses.methods import describe, method_of
from defenses.selection import (
    Selection,
    der,
    flat_row,
    held_out_count,
    select,
)
from webapp.lab import searches
from webapp.lab.models import Dataset, Experiment, Point, Run, Status
from webapp.lab.services import experiment_points


def experiment_rows(experiment: Experiment) -> list[dict]:
    """One row per requested point (its defense's columns, e.g. T, LR, epochs), metrics flattened; points
    without results yet have None metrics and the status of their run."""
    test, valid = experiment.triggers(), experiment.triggers(Dataset.POISONED_VALID)
    rows = []
    for point in experiment_points(experiment):
        metrics = point.pop("metrics")
        rows.append(point | flat_row(metrics or {}, test, valid))
    return rows


def step_rows(experiment: Experiment) -> list[dict]:
    """Every step of a steps defense's one run (incremental pruning): fraction pruned, CA, ASR, validation
    accuracy, and where its rule stopped."""
    test, valid = experiment.triggers(), experiment.triggers(Dataset.POISONED_VALID)
    run = experiment.own_runs().order_by("pk").first()
    if run is None:
        return []
    return [
        {"step": p.position, "fraction": p.metrics.get("fraction"), "stop": bool(p.metrics.get("stop"))}
        | flat_row(p.metrics, test, valid)
        for p in run.points.all()
    ]


def experiment_selection(experiment: Experiment, rows: list[dict]) -> Selection:
    """The experiment's best point (one of `rows` itself) by its own floor; the BadNet's held-out CA, which its
    runs record at their first point, is written into every row. An experiment made before held-out selection
    is chosen the old way, and its rule says so."""
    before = next(iter(befores(experiment.own_runs()).values()), {})
    for row in rows:
        row["before_valid_acc"] = before.get("valid_acc")
    holdout = None
    if experiment.holdout is not None:
        holdout = before.get("holdout") or {"share": experiment.holdout}
    for row in rows:  # every row (CSV, JSON, API) says what its validation figures were read on
        row["held_out"] = held_out_count(holdout) or (f"{holdout['share']:.0%}" if holdout else "none (old way)")
    return select(rows, experiment.max_ca_drop, bool(experiment.triggers(Dataset.POISONED_VALID)), holdout)


def befores(runs) -> dict[int, dict]:
    """run id -> the BadNet's own figures recorded at the run's first point (where it has them): its held-out
    CA (`valid_acc`) and the split it was read on (`holdout`)."""
    found = {}
    for run_id, metrics in Point.objects.filter(run__in=runs, position=0).values_list("run_id", "metrics"):
        before = metrics.get("before") or {}
        if before.get("valid_acc") is not None:
            found[run_id] = before
    return found


def own_figures(badnet, limit: int = 6) -> list[dict]:
    """The BadNet's own CA and ASR per trigger on the sets of its experiments, newest first, one row per set of
    sets: what its runs measured before repairing anything (their first point's "before"), with a warning
    when it does not recognise the clean images (selection.RECOGNISED_CA)."""
    from defenses.selection import RECOGNISED_CA

    rows, seen = [], set()
    started = badnet.experiments.filter(runs__points__position=0).distinct()  # a run measured the BadNet
    experiments = started.select_related("valid", "test").prefetch_related("poisoned").order_by("-created")
    for experiment in experiments[:50]:
        data = (experiment.valid_id, experiment.test_id, tuple(sorted(p.pk for p in experiment.poisoned.all())))
        if data in seen:
            continue
        before = next((b for b in befores(experiment.own_runs()).values() if b.get("ca") is not None), None)
        if before is None:
            continue
        seen.add(data)
        asr = before.get("asr") or {}
        rows.append(
            {
                "experiment": experiment,
                "ca": before["ca"],
                "valid_acc": before.get("valid_acc"),
                "asr": [(name, asr[name]) for name in experiment.triggers() if asr.get(name) is not None],
                "unrecognised": before["ca"] < RECOGNISED_CA,
            }
        )
        if len(rows) == limit:
            break
    return rows


def seconds_left(runs: list[Run]) -> float | None:
    """What the unfinished runs still need at the pace measured on these runs (seconds a stored point, the
    median over runs that stored one), one after another; None while none is running (queued work shows its
    place in line instead) or before a point was measured. Time a run waited in the queue is not pace."""
    paces = []
    for run in runs:
        stored = run.progress * run.total_positions
        end = run.finished_at if run.status == Run.DONE else run.heartbeat_at
        if run.started_at and end and stored >= 1:
            paces.append((end - run.started_at).total_seconds() / stored)
    if not paces or not any(run.status == Run.RUNNING for run in runs):
        return None
    left = sum((1 - run.progress) * run.total_positions for run in runs if run.status in (Run.QUEUED, Run.RUNNING))
    return statistics.median(paces) * left


def seed_report_context(experiment: Experiment, rows: list[dict]) -> dict:
    """The seed report's figures beside the experiment (defenses.seed_report): its Table 1 when a fine-pruning
    experiment holds Table 1's points, and its Table 2 and 3 rows when the BadNet is CSAW-HackML-2020's."""
    from defenses import seed_report

    scores = {}
    if method_of(experiment.space).name == "fine-prune":
        scores = {
            (row["threshold"], row["lr"], row["epochs"]): row["score"]
            for row in rows
            if None not in (row.get("threshold"), row.get("lr"), row.get("epochs"))
        }
    csaw = seed_report.CSAW_WEIGHTS.get(experiment.badnet.sha256)
    return {
        "table_1": seed_report.table_1_beside(scores),
        "csaw": csaw,
        "table_2": seed_report.TABLE_2.get(csaw),
        "table_3": seed_report.TABLE_3.get(csaw),
        "source": seed_report.SOURCE,
    }


def progress(experiment: Experiment) -> dict:
    """Overall and per-run progress: each queued run's place in its team's line, and time left while work runs
    (seconds_left)."""
    runs = list(experiment.own_runs().order_by("pk"))
    for run in runs:
        run.description = config_text(run.kind, run.config)
        run.place = run.place_in_line() if run.status == Run.QUEUED else None
    fraction = sum(run.progress for run in runs) / (len(runs) or 1)
    search = None
    if experiment.is_search:  # the budget spent is the progress; the runs are its rungs so far
        search = searches.summary(experiment)
        fraction = 1.0 if search["status"] == Status.DONE else min(1.0, search["spent"] / (search["budget"] or 1))
    waiting_runs = any(run.place for run in runs)
    return {
        "runs": runs,
        "fraction": fraction,
        "searches_first": searches_holding_workers(experiment) if waiting_runs else 0,
        "seconds_left": None if search else seconds_left(runs),
        "waiting": not any(run.status == Run.RUNNING for run in runs)
        and (waiting_runs or (search or {}).get("status") == Status.QUEUED),
        "finished": experiment.is_finished(),
        "failed": [run for run in runs if run.status in (Run.FAILED, Run.CANCELLED)],
        "search": search,
    }


def searches_holding_workers(experiment: Experiment) -> int:
    """The team's other searches that are queued or running: each holds a worker for all its trials (their
    rungs are run inside the search's task, not queued), so a run's place in line does not count them."""
    others = Experiment.objects.filter(team_id=experiment.team_id, search__status__in=[Status.QUEUED, Status.RUNNING])
    return others.exclude(pk=experiment.pk).count()


def run_summary(run: Run) -> dict:
    """A run's last point flattened, for the compare page: who, when, its parameters and its results."""
    # .all() rather than new queries: the compare page prefetches points and experiments for every run
    experiment = min(run.experiments.all(), key=lambda e: e.pk, default=None)
    test = experiment.triggers() if experiment else []
    valid = experiment.triggers(Dataset.POISONED_VALID) if experiment else []
    points = sorted(run.points.all(), key=lambda p: p.position)
    first, last = (points[0], points[-1]) if points else (None, None)
    metrics = dict(last.metrics) if last else {}
    if first and "before" in first.metrics:
        metrics["before"] = first.metrics["before"]
    config = run.config
    return {
        "run": run.pk,
        "kind": run.kind,
        "status": run.status,
        "badnet": run.badnet.name,
        "experiment": experiment.name if experiment else "",
        "owner": experiment.owner.username if experiment else "",
        "when": run.finished_at or run.created,
        "threshold": config.get("threshold"),
        "lr": config.get("lr"),
        "epochs": config.get("epochs"),
    } | flat_row(metrics, test, valid)


def pareto_front(rows: list[dict]) -> list[dict]:
    """Rows no other row beats on both CA (higher) and ASR (lower), ordered by ASR."""
    points = [r for r in rows if r.get("ca") is not None and r.get("asr") is not None]
    front = [
        r
        for r in points
        if not any(
            o["ca"] >= r["ca"] and o["asr"] <= r["asr"] and (o["ca"], o["asr"]) != (r["ca"], r["asr"]) for o in points
        )
    ]
    return sorted(front, key=lambda r: (r["asr"], -r["ca"]))


def config_text(kind: str, config: dict) -> str:
    """A run's configuration as a sentence, as its job kind says it (defenses.methods)."""
    return describe((kind, config))


def run_label(run: Run) -> str:
    """How a run is named in choices: its experiment, BadNet, configuration and last CA/ASR."""
    row = run_summary(run)
    results = "" if row["ca"] is None else f" · CA {row['ca']:.1f} %, ASR {row['asr']:.1f} %"
    experiment = f"{row['experiment']} · " if row["experiment"] else ""
    return f"run {run.pk} · {experiment}{row['badnet']} · {config_text(run.kind, run.config)}{results}"


def run_triggers(run: Run) -> list[str]:
    """Every ASR name a run's points carry (test triggers first, then validation ones)."""
    names = {name for point in run.points.all() for name in (point.metrics.get("asr") or {})}
    return sorted(names, key=lambda name: (name.endswith("(validation)"), name))


def run_rows(run: Run) -> list[dict]:
    """One row per stored point of a run: its position (epoch, threshold or step), CA, ASR per trigger,
    validation accuracy and, for fine-tuning epochs, the training loss and accuracy (on the validation set,
    which is the defender's training data) and the epoch's seconds."""
    names = run_triggers(run)
    rows = []
    for point in run.points.all():
        metrics = point.metrics
        asr = metrics.get("asr") or {}
        rows.append(
            {
                "position": point.position,
                "epoch": metrics.get("epoch"),
                "threshold": metrics.get("threshold"),
                "fraction": metrics.get("fraction"),
                "ca": metrics.get("ca"),
                **{f"asr {name}": asr.get(name) for name in names},
                "valid_acc": metrics.get("valid_acc"),
                "loss": metrics.get("loss"),
                "train_acc": metrics.get("train_acc"),
                "seconds": metrics.get("seconds"),
            }
        )
    return rows


STATE_KEYS = (("status", Status.QUEUED), ("spent", 0), ("budget", 0))


def cancelled_words(experiment: Experiment, runs: list[Run]) -> str:
    """What a user stopped, in words: "cancelled: 3 of 7 runs", or a search's "cancelled after 40 of 100 units";
    "" when nothing was cancelled."""
    if experiment.is_search:
        if experiment.search.get("status") != Status.CANCELLED:
            return ""
        spent, budget = experiment.search.get("spent", 0), experiment.search.get("budget", 0)
        return f"cancelled after {spent:g} of {budget:g} units"
    stopped = sum(run.status == Run.CANCELLED for run in runs)
    return f"cancelled: {stopped} of {len(runs)} run{'s' if len(runs) != 1 else ''}" if stopped else ""


def unfinished_words(experiment: Experiment, runs: list[Run]) -> str:
    """Where an unfinished experiment stands, from its runs' real status: "running: 3 of 7 runs done", "queued:
    0 of 7 runs done", or a search's "running: 40 of 100 units spent"; with what a running run is doing between
    its points (Run.stage: a Neural Cleanse scan's labels), which no count shows."""
    stage = next((run.stage for run in runs if run.status == Run.RUNNING and run.stage), "")
    doing = f" ({stage})" if stage else ""
    if experiment.is_search:
        search = experiment.search
        spent, budget = search.get("spent", 0), search.get("budget", 0)
        return f"{search.get('status', Status.QUEUED)}: {spent:g} of {budget:g} units spent{doing}"
    state = Run.RUNNING if any(run.status == Run.RUNNING for run in runs) else Run.QUEUED
    done = sum(run.status == Run.DONE for run in runs)
    return f"{state}: {done} of {len(runs)} run{'s' if len(runs) != 1 else ''} done{doing}"


def goodnet_label(goodnet) -> str:
    """How a GoodNet is named in choices: its name, BadNet and where its repaired network came from."""
    if goodnet.run_id:
        row = run_summary(goodnet.run)
        results = "" if row["ca"] is None else f", CA {row['ca']:.1f} %, ASR {row['asr']:.1f} %"
        source = f"run {goodnet.run_id} of {row['experiment'] or 'no experiment'}{results}"
    else:
        source = f"uploaded {goodnet.original_name}"
    return f"{goodnet.name} · BadNet {goodnet.badnet.name} · {source}"


def badnet_figures(experiment: Experiment, runs) -> dict:
    """The BadNet's own CA and mean ASR on the experiment's test sets, as its runs recorded them at their first
    point ({} before any run has one)."""
    before = next(iter(befores(runs).values()), None)
    if before is None:
        return {}
    per_trigger = {name: before["asr"][name] for name in experiment.triggers() if name in before.get("asr", {})}
    mean_asr = sum(per_trigger.values()) / len(per_trigger) if per_trigger else None
    return {"before_ca": before.get("ca"), "before_asr": mean_asr} | {
        f"before asr {name}": value for name, value in per_trigger.items()
    }


def rounded(value):
    """A coordinate to 4 significant digits (a search draws T 0.8232202558909871); other values unchanged."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


def point_words(method, row: dict) -> str:
    """A point's coordinates as a page says them ("T 0.8, LR 0.001, 30 ep"), with a search's own parameters
    that are not columns ("alpha 0.25")."""
    from defenses.search import searchable

    columns = [c.short.format(rounded(row[c.name])) for c in method.columns if row.get(c.name) is not None]
    own = [
        f"{p.label.split(': ')[-1]} {rounded(row[p.name])}"
        for p in searchable(method)
        if not p.axis and row.get(p.name) is not None
    ]
    return ", ".join(columns + own)


def explored(experiment: Experiment) -> str:
    """How an experiment explored its defense's space, in words."""
    if not experiment.is_search:
        return "sweep"
    trials = len(experiment.search.get("trials", []))
    return f"search, {trials} trial{'s' if trials != 1 else ''} within {experiment.space['search']['budget']:g} units"


def leaderboard_rows(board) -> list[dict]:
    """One row per defense of a leaderboard: its experiment's validation-selected point (the experiment's
    floor rule; a steps defense's own stop), its test figures (CA, ASR per trigger, the GoodNet's false alarms
    and detection), DER, and its cost (wall time of its runs, fine-tuning-epoch units). Ranked: defenses with a
    selected point first, by their validation selection score; then the others, saying why."""
    from defenses.methods import job_kind

    rows = []
    for experiment in board.experiments.select_related("badnet", "valid").order_by("pk"):
        method = method_of(experiment.space)
        points = step_rows(experiment) if method.steps else experiment_rows(experiment)
        if method.steps:
            stop = next((row for row in points if row.get("stop")), None)
            chosen = stop if stop and stop.get("valid_acc") is not None else None
            rule = "the defense's own validation rule (where it stopped)"
        else:
            selection = experiment_selection(experiment, points)
            chosen, rule = selection.best, selection.rule
        runs = list(experiment.own_runs())
        finished = experiment.is_finished()
        if not finished:  # nothing is ranked or offered for composing before its sweep or search has ended
            chosen = None
        seconds = sum((r.finished_at - r.started_at).total_seconds() for r in runs if r.started_at and r.finished_at)
        size = experiment.valid.count, experiment.badnet.n_classes
        units = sum(job_kind(r.kind).cost(r.config, *size) for r in runs)
        if experiment.is_search:
            units = experiment.search.get("spent", 0.0)
        before = badnet_figures(experiment, runs)
        rows.append(
            {
                "method": method,
                "experiment": experiment,
                "best": chosen,
                "rule": rule,
                "seconds": seconds,
                "epoch_units": units,
                "finished": finished,
                "state": unfinished_words(experiment, runs),
                "cancelled": cancelled_words(experiment, runs),
                "how": explored(experiment),
                "failed": sum(r.status == Run.FAILED for r in runs),
                "before": before,
            }
        )
    # One BadNet and one set of test sets per board: a defense whose runs did not record the BadNet's own
    # figures (incremental pruning's) is rated against those another defense's runs recorded.
    board_before = next((row["before"] for row in rows if row["before"]), {})
    for row in rows:
        before, chosen = row["before"] or board_before, row["best"] or {}
        row["der"] = der(before.get("before_ca"), before.get("before_asr"), chosen.get("ca"), chosen.get("asr"))
    return sorted(rows, key=lambda row: (row["best"] is None, -row["best"]["selection"] if row["best"] else 0))
