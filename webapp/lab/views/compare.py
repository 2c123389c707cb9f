"""Compare runs across the team's experiments and BadNets: table, CA-vs-ASR with the Pareto front,
parallel coordinates and the before/after summary per BadNet (the seed's Table 3)."""

from django.core.exceptions import ValidationError
from django.db.models import Prefetch
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import render

from webapp.lab.access import team_required
from webapp.lab.charts import ca_asr_scatter, figures_payload, parallel
from webapp.lab.forms import row_id
from webapp.lab.models import BadNet, Experiment, Run
from webapp.lab.results import run_summary

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


def before_after(rows: list[dict]) -> list[dict]:
    """Per BadNet: its own CA/ASR and the best chosen run's (highest score among the chosen ones)."""
    table = {}
    for row in rows:
        if row["score"] is None:
            continue
        best = table.get(row["badnet"])
        if best is None or row["score"] > best["score"]:
            table[row["badnet"]] = row
    return [table[name] for name in sorted(table)]


@team_required
def compare(request):
    # a run names the first of its experiments: only the team's own (runs are never shared across teams)
    own = Prefetch("experiments", queryset=Experiment.objects.filter(team=request.team))
    runs = (Run.objects.filter(team=request.team, status=Run.DONE).select_related("badnet").order_by("-pk")
            .prefetch_related("points", own, "experiments__poisoned", "experiments__owner"))  # fmt: skip
    badnet = request.GET.get("badnet", "")
    try:
        if badnet:
            runs = runs.filter(badnet_id=row_id(badnet, "badnet"))
        chosen_ids = {row_id(pk, "run") for pk in request.GET.getlist("run")}
    except ValidationError as error:
        return HttpResponseBadRequest(error.message, content_type="text/plain; charset=utf-8")
    every = [run_summary(run) for run in runs[:500]]
    chosen = [row for row in every if row["run"] in chosen_ids] or every
    key = request.GET.get("sort", "-score")
    key = key if key.lstrip("-") in SORTABLE else "-score"
    columns = PARAMETER_COLUMNS
    if request.GET.get("differences"):
        columns = differing(chosen, PARAMETER_COLUMNS)
    charts = [chart for chart in (ca_asr_scatter(chosen), parallel(chosen)) if chart is not None]
    wanted = next((chart for chart in charts if chart.slug == request.GET.get("csv")), None)
    if wanted is not None:
        response = HttpResponse(wanted.csv(), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="compare-{wanted.slug}.csv"'
        return response
    titles = {"threshold": "T", "lr": "LR", "epochs": "Epochs"}
    sort_columns = [("run", "Run"), ("experiment", "Experiment"), ("badnet", "BadNet"),
                    *[(c, titles[c]) for c in columns], ("ca", "CA"), ("asr", "ASR"), ("score", "Score"),
                    ("owner", "Who"), ("when", "When")]  # fmt: skip
    for row in every:
        row["shown"] = [row[c] for c in columns]
    query = request.GET.copy()
    query["csv"] = "SLUG"
    context = {"rows": sorted_rows(every, key), "sort_columns": sort_columns,
               "csv_url": f"?{query.urlencode(safe='SLUG')}", "chosen": chosen, "chosen_ids": chosen_ids, "sort": key,
               "columns": columns, "figures": figures_payload(charts), "summary": before_after(chosen),
               "badnets": BadNet.objects.filter(team=request.team).order_by("name"), "badnet": badnet,
               "differences": bool(request.GET.get("differences"))}  # fmt: skip
    return render(request, "lab/compare.html", context)
