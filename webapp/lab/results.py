"""An experiment's points as flat rows for tables, charts, CSV and the API, and the honest "best" choice.

Scores here use the poisoned *test* sets only; a poisoned *validation* set (if the user uploaded one as
such) is kept apart and is the only poisoned data a selection may look at (DESIGN.md, "Honest selection").
"""

from statistics import mean

from webapp.lab.models import Dataset, Experiment, Run
from webapp.lab.services import experiment_points

SELECTED_WITH_POISONED_VALID = "selected with poisoned validation data"
SELECTED_ON_CLEAN_VALID = "selected on clean validation accuracy (no poisoned validation set was given)"


def triggers(experiment: Experiment, role: str = Dataset.POISONED_TEST) -> list[str]:
    return sorted(d.metric_name for d in experiment.poisoned.all() if d.role == role)


def score(ca: float | None, asr: list[float]) -> float | None:
    """The seed's score, (CA + (100 - mean ASR)) / 2; None without a CA or any poisoned set."""
    return None if ca is None or not asr else (ca + 100.0 - mean(asr)) / 2.0


def flat_row(metrics: dict, test: list[str], valid: list[str]) -> dict:
    """CA, per-trigger and mean ASR, score and the validation-only selection score of one point."""
    asr = metrics.get("asr") or {}
    test_asr = [asr[name] for name in test if asr.get(name) is not None]
    valid_asr = [asr[name] for name in valid if asr.get(name) is not None]
    valid_acc = metrics.get("valid_acc")
    before = metrics.get("before") or {}
    before_asr = [before["asr"][name] for name in test if name in before.get("asr", {})]
    return {
        "ca": metrics.get("ca"),
        **{f"asr {name}": asr.get(name) for name in test},
        "asr": mean(test_asr) if test_asr else None,
        "score": score(metrics.get("ca"), test_asr),
        "valid_acc": valid_acc,
        "valid_asr": mean(valid_asr) if valid_asr else None,
        "selection": score(valid_acc, valid_asr) if valid else valid_acc,
        "pruned": sum((metrics.get("pruned") or {}).values()) if isinstance(metrics.get("pruned"), dict) else None,
        "before_ca": before.get("ca"),
        "before_asr": mean(before_asr) if before_asr else None,
    }


def experiment_rows(experiment: Experiment) -> list[dict]:
    """One row per requested (T, LR, epochs) point, metrics flattened; points without results yet have
    None metrics and the status of their run."""
    test, valid = triggers(experiment), triggers(experiment, Dataset.POISONED_VALID)
    rows = []
    for point in experiment_points(experiment):
        base = {"threshold": point["threshold"], "lr": point["lr"], "epochs": point["epochs"],
                "run": point["run"], "status": point["status"]}  # fmt: skip
        rows.append(base | flat_row(point["metrics"] or {}, test, valid))
    return rows


def incremental_rows(experiment: Experiment) -> list[dict]:
    """Every step of an incremental-pruning run: fraction pruned, CA, ASR, validation accuracy, stop."""
    test, valid = triggers(experiment), triggers(experiment, Dataset.POISONED_VALID)
    run = experiment.own_runs().order_by("pk").first()
    if run is None:
        return []
    return [{"step": p.position, "fraction": p.metrics.get("fraction"), "stop": bool(p.metrics.get("stop"))}
            | flat_row(p.metrics, test, valid) for p in run.points.all()]  # fmt: skip


def selection_rule(experiment: Experiment) -> str:
    return SELECTED_WITH_POISONED_VALID if triggers(experiment, Dataset.POISONED_VALID) else SELECTED_ON_CLEAN_VALID


def best_row(rows: list[dict]) -> dict | None:
    """The point with the highest validation-only selection score (ties: the smaller T, LR, epochs)."""
    scored = [row for row in rows if row.get("selection") is not None]
    return max(scored, key=lambda r: (r["selection"], -r["threshold"], -r["lr"], -r["epochs"]), default=None)


def progress(experiment: Experiment) -> dict:
    """Overall and per-run progress, with a time-left estimate from the runs' own pace."""
    from django.utils import timezone

    runs = list(experiment.own_runs().order_by("pk"))
    done = sum(run.progress for run in runs)
    total = len(runs) or 1
    started = [run.started_at for run in runs if run.started_at]
    elapsed = (timezone.now() - min(started)).total_seconds() if started else 0.0
    fraction = done / total
    seconds_left = elapsed * (1 - fraction) / fraction if 0 < fraction < 1 else None
    return {"runs": runs, "fraction": fraction, "seconds_left": seconds_left,
            "finished": all(run.status in (Run.DONE, Run.FAILED, Run.CANCELLED) for run in runs),
            "failed": [run for run in runs if run.status in (Run.FAILED, Run.CANCELLED)]}  # fmt: skip


def run_summary(run: Run) -> dict:
    """A run's last point flattened, for the compare page: who, when, its parameters and its results."""
    # .all() rather than new queries: the compare page prefetches points and experiments for every run
    experiment = min(run.experiments.all(), key=lambda e: e.pk, default=None)
    test = triggers(experiment) if experiment else []
    valid = triggers(experiment, Dataset.POISONED_VALID) if experiment else []
    points = sorted(run.points.all(), key=lambda p: p.position)
    first, last = (points[0], points[-1]) if points else (None, None)
    metrics = dict(last.metrics) if last else {}
    if first and "before" in first.metrics:
        metrics["before"] = first.metrics["before"]
    config = run.config
    return {
        "run": run.pk, "kind": run.kind, "status": run.status, "badnet": run.badnet.name,
        "experiment": experiment.name if experiment else "", "owner": experiment.owner.username if experiment else "",
        "when": run.finished_at or run.created,
        "threshold": config.get("threshold"), "lr": config.get("lr"), "epochs": config.get("epochs"),
    } | flat_row(metrics, test, valid)  # fmt: skip


def pareto_front(rows: list[dict]) -> list[dict]:
    """Rows no other row beats on both CA (higher) and ASR (lower), ordered by ASR."""
    points = [r for r in rows if r.get("ca") is not None and r.get("asr") is not None]
    front = [r for r in points if not any(o["ca"] >= r["ca"] and o["asr"] <= r["asr"] and
                                          (o["ca"], o["asr"]) != (r["ca"], r["asr"]) for o in points)]  # fmt: skip
    return sorted(front, key=lambda r: (r["asr"], -r["ca"]))
