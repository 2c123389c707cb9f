"""Compare runs across the team's experiments and BadNets: table, CA-vs-ASR with the Pareto front,
parallel coordinates and the before/after summary per BadNet (the seed's Table 3)."""

import math

from csp.decorators import csp_update
from django.core.exceptions import ValidationError
from django.db.models import Prefetch
from django.http import HttpResponseBadRequest
from django.shortcuts import render

from defenses.selection import select
from webapp.lab.access import team_required
from webapp.lab.charts import ca_asr_scatter, figures_payload, parallel
from webapp.lab.models import BadNet, Experiment, Run
from webapp.lab.parsing import brief, row_id
from webapp.lab.results import run_summary
from webapp.lab.views.downloads import chart_file

SORTABLE = {"ca", "asr", "score", "owner", "when", "threshold", "lr", "epochs", "run", "badnet", "experiment"}
PARAMETER_COLUMNS = ["threshold", "lr", "epochs"]


def sorted_rows(rows: list[dict], key: str) -> list[dict]:
    """Rows by a column; '-' in front sorts descending; rows without a value go last."""
    column, descending = key.lstrip("-"), key.startswith("-")
    present = [r for r in rows if r.get(column) is not None]
    missing = [r for r in rows if r.get(column) is None]
    return sorted(present, key=lambda r: r[column], reverse=descending) + missing


def differing(rows: list[dict], columns: list[str]) -> list[str]:
    """Columns whose value is not the same in every row ("show differences only")."""
    return [c for c in columns if len({repr(r.get(c)) for r in rows}) > 1]


def before_after(rows: list[dict], max_ca_drop: float) -> list[dict]:
    """Per BadNet: its own CA/ASR beside the chosen run the honest rule selects (defenses.selection.select, on
    validation data, within the clean-accuracy floor), with the rule in words; no run when none meets it."""
    table = []
    for name in sorted({row["badnet"] for row in rows}):
        mine = [row for row in rows if row["badnet"] == name]
        held, holdout = held_out_first(mine)
        chosen = select(held, max_ca_drop, any(row.get("valid_asr") is not None for row in held), holdout)
        before = next((row for row in mine if row.get("before_ca") is not None), {})
        table.append({"badnet": name, "before": before, "after": chosen.best, "rule": chosen.rule})
    return table


def held_out_first(rows: list[dict]) -> tuple[list[dict], dict | None]:
    """The rows a choice may compare: those read on held-out images when there are any (a held-out CA and a
    training accuracy are not one measure), with the split they share ("180 of 900"; just "held-out" when the
    runs' splits differ); else every row, chosen the old way."""
    held = [row for row in rows if row.get("held_out")]
    if not held:
        return rows, None
    splits = {row["held_out"] for row in held}
    images, of = (int(number) for number in held[0]["held_out"].split(" of "))
    return held, {"images": images, "of": of} if len(splits) == 1 else {"share": images / of}


def floor_of(text: str) -> float:
    """The clean-accuracy floor typed in the compare form, in points (0..100; default 5)."""
    try:
        value = float(text) if text.strip() else 5.0
    except ValueError:
        value = math.nan
    if not 0 <= value <= 100:  # nan fails too
        raise ValidationError(f"floor={brief(text)} is not a number of points from 0 to 100.")
    return value


def trigger_columns(rows: list[dict]) -> list[str]:
    """The per-trigger ASR columns ("asr sunglasses", ...) that any of the rows has."""
    return sorted({key for row in rows for key in row if key.startswith("asr ") and row[key] is not None})


# Plotly's parallel-coordinates trace compiles its WebGL shaders' glue at run time (`new Function`): this page
# alone allows eval, or its main chart stays blank; every other page keeps script-src 'self' only.
@csp_update({"script-src": ["'unsafe-eval'"]})
@team_required
def compare(request):
    # a run names the first of its experiments: only the team's own (runs are never shared across teams)
    own = Prefetch("experiments", queryset=Experiment.objects.filter(team=request.team))
    runs = (
        Run.objects.filter(team=request.team, status=Run.DONE)
        .select_related("badnet")
        .order_by("-pk")
        .prefetch_related("points", own, "experiments__poisoned", "experiments__owner")
    )
    badnet = request.GET.get("badnet", "")
    try:
        if badnet:
            runs = runs.filter(badnet_id=row_id(badnet, "badnet"))
        chosen_ids = {row_id(pk, "run") for pk in request.GET.getlist("run")}
        max_ca_drop = floor_of(request.GET.get("floor", ""))
    except ValidationError as error:
        return HttpResponseBadRequest(error.message, content_type="text/plain; charset=utf-8")
    every = [run_summary(run) for run in runs[:500]]
    chosen = [row for row in every if row["run"] in chosen_ids] or every
    show_all = bool(request.GET.get("all")) or chosen is every
    charts = [chart for chart in (ca_asr_scatter(chosen), parallel(chosen)) if chart is not None]
    for fmt in ("csv", "pdf"):  # ?csv=SLUG or ?pdf=SLUG: that chart's file
        if request.GET.get(fmt):
            return chart_file(request, charts, request.GET[fmt], fmt, "compare")
    shown = every if show_all else chosen
    columns = differing(chosen, PARAMETER_COLUMNS) if request.GET.get("differences") else PARAMETER_COLUMNS
    asr_columns = trigger_columns(shown)
    key = request.GET.get("sort", "-score")
    key = key if key.lstrip("-") in SORTABLE or key.lstrip("-") in asr_columns else "-score"
    titles = {"threshold": "T", "lr": "LR", "epochs": "Epochs"}
    sort_columns = [
        ("run", "Run"),
        ("experiment", "Experiment"),
        ("badnet", "BadNet"),
        *[(c, titles[c]) for c in columns],
        ("ca", "CA"),
        *[(c, f"ASR {c[4:]}") for c in asr_columns],
        ("asr", "ASR (mean of the run's triggers)"),
        ("score", "Score"),
        ("owner", "Who"),
        ("when", "When"),
    ]
    sort_links = []
    for column, title in sort_columns:
        again = request.GET.copy()
        again["sort"] = column if key == f"-{column}" else f"-{column}"
        sort_links.append((title, f"?{again.urlencode()}"))
    for row in shown:
        row["shown"] = [row[c] for c in columns]
        row["asr_shown"] = [row.get(c) for c in asr_columns]
    query = request.GET.copy()
    query["csv"] = "SLUG"
    as_pdf = request.GET.copy()
    as_pdf["pdf"] = "SLUG"
    everything = request.GET.copy()
    everything["all"] = "1"
    context = {
        "rows": sorted_rows(shown, key),
        "sort_links": sort_links,
        "show_all": show_all,
        "all_url": f"?{everything.urlencode()}",
        "csv_url": f"?{query.urlencode(safe='SLUG')}",
        "pdf_url": f"?{as_pdf.urlencode(safe='SLUG')}",
        "chosen": chosen,
        "chosen_ids": chosen_ids,
        "sort": key,
        "columns": columns,
        "figures": figures_payload(charts),
        "summary": before_after(chosen, max_ca_drop),
        "floor": max_ca_drop,
        "badnets": BadNet.objects.filter(team=request.team).order_by("name"),
        "badnet": badnet,
        "differences": bool(request.GET.get("differences")),
    }
    return render(request, "lab/compare.html", context)
