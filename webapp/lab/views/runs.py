"""One run's page (what MLflow calls a run): its points epoch by epoch, how and where it ran, its error, its
repaired network to download (for Keras 3, and for Keras 2 as a full model and as preset weights) and a GoodNet
to compose from it."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from defenses.export import ExportRefused
from defenses.methods import JOB_KINDS, job_kind
from defenses.modelcheck import ModelRefused
from webapp.core.throttles import ExportThrottle, throttled
from webapp.lab.access import owned_or_404, team_required
from webapp.lab.charts import figures_payload, run_curve
from webapp.lab.composition import keras2_export, run_network
from webapp.lab.exports import csv_text
from webapp.lab.models import Run
from webapp.lab.parsing import row_id
from webapp.lab.results import config_text, run_rows, run_triggers
from webapp.lab.services import train_network_at
from webapp.lab.views.downloads import chart_file


def repaired_file(run: Run):
    """The run's repaired network of its last point, when it keeps one (webapp.lab.composition.run_network)."""
    return run_network(run)


@team_required
def run(request, pk: int):
    run = owned_or_404(Run.objects.select_related("team", "badnet").prefetch_related("points"), request.user, pk=pk)
    triggers = run_triggers(run)
    rows = run_rows(run)
    seconds = (run.finished_at - run.started_at).total_seconds() if run.started_at and run.finished_at else None
    shown = [row | {"asr_values": [row[f"asr {t}"] for t in triggers]} for row in rows]
    context = {
        "run": run,
        "description": config_text(run.kind, run.config),
        "rows": shown,
        "triggers": triggers,
        "seconds": seconds,
        "goodnet_name": f"{run.badnet.name} run {run.pk}",
        "experiments": run.experiments.filter(team=run.team).order_by("pk"),
        "repaired": repaired_file(run),
        "preset": run.badnet.arch,
        "figures": figures_payload(run_charts(run, rows)),
        "resumed": sorted({p.metrics["resumed_from"] for p in run.points.all() if p.metrics.get("resumed_from")}),
        "by_epoch": job_kind(run.kind).x[0] == "epoch" if run.kind in JOB_KINDS else False,
        "held_out": run.config.get("holdout"),
    }
    return render(request, "lab/run.html", context)


def run_charts(run: Run, rows: list[dict]) -> list:
    """The run's curve (CA and ASR per point), when it has points to draw."""
    chart = run_curve(rows, run_triggers(run), run.kind, held_out="holdout" in run.config)
    return [chart] if chart else []


@team_required
def run_chart_pdf(request, pk: int, slug: str):
    run = owned_or_404(Run.objects.prefetch_related("points"), request.user, pk=pk)
    return chart_file(request, run_charts(run, run_rows(run)), slug, "pdf", f"run-{run.pk}")


@team_required
def run_csv(request, pk: int):
    """Every stored point of the run, as its chart and table show them."""
    run = owned_or_404(Run.objects.prefetch_related("points"), request.user, pk=pk)
    response = HttpResponse(csv_text(run_rows(run)), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="run-{run.pk}-points.csv"'
    return response


@team_required
@throttled(ExportThrottle)
def run_repaired(request, pk: int):
    """The run's repaired network as a Keras 3 file."""
    run = owned_or_404(Run.objects, request.user, pk=pk)
    path = repaired_file(run)
    if path is None:
        raise Http404("This run has no repaired network: only finished fine-tuning runs have one.")
    return FileResponse(open(path, "rb"), as_attachment=True, filename=f"run-{run.pk}-repaired_net.keras")  # noqa: SIM115


@team_required
@throttled(ExportThrottle)
def run_repaired_keras2(request, pk: int, weights: bool = False):
    """The run's repaired network for the Keras 2 API: the full model (.h5), or with `weights` the weights of
    its BadNet's architecture preset (Keras 2's save_weights layout). Written from the Keras 3 file on demand."""
    run = owned_or_404(Run.objects.select_related("badnet"), request.user, pk=pk)
    try:
        path = keras2_export(run, weights)
    except ExportRefused as refusal:
        message = f"{refusal} Download the Keras 3 file instead."
        return HttpResponse(message, status=409, content_type="text/plain; charset=utf-8")
    except ModelRefused as refusal:
        return HttpResponse(str(refusal), status=409, content_type="text/plain; charset=utf-8")
    except ValueError as missing:
        raise Http404(str(missing)) from None
    name = "repaired_net_keras2_weights.h5" if weights else "repaired_net_keras2.h5"
    return FileResponse(open(path, "rb"), as_attachment=True, filename=f"run-{run.pk}-{name}")


@team_required
@require_POST
def run_network_at(request, pk: int):
    """Train the run's job to an earlier epoch in a run that keeps that epoch's network (a selected point that
    is not its run's last one becomes composable): services.train_network_at."""
    run = owned_or_404(Run.objects.select_related("team", "badnet"), request.user, pk=pk)
    try:
        epoch = row_id(request.POST.get("epoch"), "epoch")
        network = train_network_at(run, epoch, request.user)
    except (ValidationError, ValueError) as refusal:  # OverBudget is a ValueError: its words say what is left
        messages.error(request, " ".join(getattr(refusal, "messages", [str(refusal)])))
        return redirect("run", run.pk)
    if network.status == Run.DONE:
        messages.info(request, f"Run {network.pk} keeps the network of epoch {epoch}: compose a GoodNet from it.")
    else:
        messages.info(
            request,
            f"Run {network.pk} trains the same job to epoch {epoch} (same seed and data: the same figures) and keeps "
            "that network; compose a GoodNet from it once it is done.",
        )
    return redirect("run", network.pk)
