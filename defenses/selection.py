"""The honest "best" of a sweep and the figures it is judged by, as plain functions on flat rows (one dict per
point), shared by the dashboard's pages and `bench/leaderboard.py`: the seed's score, a point's flat row, the
validation-only selection within a clean-accuracy floor (DESIGN.md, "Honest selection") and BackdoorBench's
defense effectiveness rating.
"""

from dataclasses import dataclass
from statistics import mean

from defenses.methods import METHODS, job_kind

SELECTED_WITH_POISONED_VALID = "selected with poisoned validation data"
SELECTED_ON_CLEAN_VALID = "selected on clean validation accuracy (no poisoned validation set was given)"


def score(ca: float | None, asr: list[float]) -> float | None:
    """The seed's score, (CA + (100 - mean ASR)) / 2; None without a CA or any poisoned set."""
    return None if ca is None or not asr else (ca + 100.0 - mean(asr)) / 2.0


def point_coordinates(method, job, position: int, metrics: dict | None = None) -> dict:
    """A point's coordinates in the defense's columns (T, LR, epochs...): what the point's metrics record of
    them (a prune curve's threshold), else its job's config; epochs are the position of a job whose positions
    are epochs, and 0 for a job that trains none (a prune curve)."""
    metrics = metrics or {}
    epochs = position if job_kind(job.kind).x[0] == "epoch" else 0
    coordinates = {}
    for column in method.columns:
        if column.name == "epochs":
            coordinates[column.name] = epochs
        else:
            coordinates[column.name] = metrics.get(column.name, job.config.get(column.name))
    return coordinates


def point_rows(method, found, triggers: list[str], before_valid: float) -> list[dict]:
    """Flat rows of every (job, position, metrics) found, each with its point's coordinates and the job and
    position it came from; a trigger's poisoned validation set, where the point was measured on one, is named
    "<trigger> (validation)"."""
    rows = []
    for job, position, metrics in found:
        valid = [f"{t} (validation)" for t in triggers if f"{t} (validation)" in (metrics.get("asr") or {})]
        coords = {} if method.steps else point_coordinates(method, job, position, metrics)
        row = coords | flat_row(metrics, triggers, valid) | {"before_valid_acc": before_valid}
        rows.append(row | {"job": job, "position": position})
    return rows


def flat_row(metrics: dict, test: list[str], valid: list[str]) -> dict:
    """CA, per-trigger and mean ASR, score and the validation-only selection score of one point."""
    asr = metrics.get("asr") or {}
    test_asr = [asr[name] for name in test if asr.get(name) is not None]
    valid_asr = [asr[name] for name in valid if asr.get(name) is not None]
    valid_acc = metrics.get("valid_acc")
    before = metrics.get("before") or {}
    before_asr = [before["asr"][name] for name in test if name in before.get("asr", {})]
    goodnet = metrics.get("goodnet") or {}
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
        **{f"before asr {name}": before.get("asr", {}).get(name) for name in test},
        "before_valid_acc": before.get("valid_acc"),
        "held_out": held_out_count(before.get("holdout")),  # what its validation CA was read on
        "false_alarm": goodnet.get("false_alarm"),
        **{f"detection {name}": (goodnet.get("detection") or {}).get(name) for name in test},
    }


@dataclass(frozen=True)
class Selection:
    """The honest "best" of some points and the rule that chose it, in words every page shows beside it."""

    best: dict | None
    rule: str
    baseline: float | None  # the BadNet's own validation CA
    floor: float | None  # the lowest validation CA a chosen point may have


def held_out_count(holdout: dict | None) -> str | None:
    """A split as a table shows it, "180 of 900" (held-out images of the clean validation set); None without."""
    return f"{holdout['images']} of {holdout['of']}" if holdout and "images" in holdout else None


def held_out_words(holdout: dict | None) -> str:
    """What a selection read, in words: "held-out 180 of 900 clean validation images", or, for runs made before
    held-out selection (`holdout` None), that their validation accuracy is training accuracy."""
    if holdout is None:
        return (
            "chosen the old way: these runs measured validation CA on the images the repair trained on "
            "(training accuracy, not validation); run the experiment again to choose on held-out images"
        )
    if "images" in holdout:
        return f"read on held-out {holdout['images']} of {holdout['of']} clean validation images"
    return f"read on a held-out {float(holdout['share']):.0%} of the clean validation set"


# Below this clean accuracy of its own, a BadNet does not recognise the images it is given (another network's
# data, or the wrong scaling): a floor relative to its figure would then bless noise (the real 1283-class CSAW
# BadNet reads 0.78 % on the synthetic 100-label sets, and a "best" at 8.4 % was named). A BadNet of this kind
# reads 90-100 % on its own clean images.
RECOGNISED_CA = 50.0


def unrecognised_words(before_valid_acc: float) -> str:
    """Why no point is named when the BadNet does not recognise its clean validation images."""
    return (
        f"no point is named: this BadNet does not recognise these images (its own validation CA is "
        f"{before_valid_acc:.2f} %, below {RECOGNISED_CA:g} %); are these sets its own data, scaled as it was "
        "trained? Choose the clean sets made for this BadNet"
    )


def select(rows: list[dict], max_ca_drop: float, with_poisoned_valid: bool, holdout: dict | None = None) -> Selection:
    """The best point by the validation-only selection score among the points whose validation CA is at
    most `max_ca_drop` points below the BadNet's own (each row's `before_valid_acc`; DESIGN.md, "Honest
    selection"); none when no point meets that floor or the BadNet's validation CA is not known. Ties: the
    smaller T, LR, epochs. With `with_poisoned_valid`, only points scored on poisoned validation data compete
    (a validation-accuracy-only score is not comparable with theirs).

    The floor is what keeps a destroyed network from being "best": the seed's score alone ranks a point at
    CA 8 % above the untouched BadNet. Every page's "best" and before/after table comes from here. `holdout`
    (the split the rows' validation CA was read on, defenses.runner.Loaded.holdout; None: none) is said in
    the rule."""
    how = SELECTED_WITH_POISONED_VALID if with_poisoned_valid else SELECTED_ON_CLEAN_VALID
    how = f"{how}, {held_out_words(holdout)}"
    scored = [
        r
        for r in rows
        if r.get("selection") is not None
        and r.get("valid_acc") is not None
        and (r.get("valid_asr") is not None or not with_poisoned_valid)
    ]
    known = [r for r in scored if r.get("before_valid_acc") is not None]
    baselines = {round(r["before_valid_acc"], 6) for r in known}
    if scored and not known:
        return Selection(
            None,
            f"{how}; no point is named: the BadNet's own validation accuracy is not recorded "
            "for these runs (runs made before Prunelab recorded it need a re-run)",
            None,
            None,
        )
    baseline = next(iter(baselines)) if len(baselines) == 1 else None
    if known and min(baselines) < RECOGNISED_CA:
        return Selection(None, f"{how}; {unrecognised_words(min(baselines))}", baseline, None)
    of_badnet = f"the BadNet's {baseline:.2f} %" if baseline is not None else "the BadNet's own (per run)"
    rule = f"{how}, among points whose validation CA is at most {max_ca_drop:g} points below {of_badnet}"
    meeting = [r for r in known if r["valid_acc"] >= r["before_valid_acc"] - max_ca_drop - 1e-9]
    best = max(meeting, key=lambda row: (row["selection"], *(-value for value in coordinates(row))), default=None)
    if best is None and known:
        rule += "; no point meets that floor, so none is named best"
    return Selection(best, rule, baseline, None if baseline is None else baseline - max_ca_drop)


def coordinates(row: dict) -> tuple:
    """A row's point as numbers (ties go to the smaller ones: the least pruning, the lowest LR, the fewest
    epochs): the defense's columns are the row's numeric keys before its results."""
    columns = {column.name for method in METHODS.values() for column in method.columns}
    return tuple(value or 0 for key, value in row.items() if key in columns)


def der(before_ca: float | None, before_asr: float | None, ca: float | None, asr: float | None) -> float | None:
    """BackdoorBench's defense effectiveness rating, in [0, 1]: (max(0, ASR drop) - max(0, CA drop) + 1) / 2
    with rates as fractions; 1 is an attack removed at no cost, 0.5 nothing done."""
    if None in (before_ca, before_asr, ca, asr):
        return None
    return (max(0.0, before_asr - asr) / 100 - max(0.0, before_ca - ca) / 100 + 1) / 2


def objective(row: dict, max_ca_drop: float) -> float | None:
    """What a search maximises for one point (a flat row with `before_valid_acc`): the selection score when
    the point's held-out CA meets the floor, else minus its shortfall (so any point that meets the floor beats
    every point that does not, and among those, nearer is better). None: the point has no selection score."""
    if row.get("selection") is None or row.get("valid_acc") is None or row.get("before_valid_acc") is None:
        return None
    shortfall = row["before_valid_acc"] - max_ca_drop - row["valid_acc"]
    return row["selection"] if shortfall <= 1e-9 else -shortfall
