"""GoodNets (compose from a run or an upload, download the bundle) and the image-test form."""

from django.contrib import messages
from django.http import FileResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from defenses.data import DataError
from defenses.modelcheck import ModelRefused
from webapp.core.throttles import ClassifyThrottle, ExportThrottle, throttled
from webapp.lab import composition, inference
from webapp.lab.access import owned_or_404, team_required
from webapp.lab.charts import detector_charts, figures_payload
from webapp.lab.forms import ClassifyForm, GoodNetFromRunForm, GoodNetUploadForm, StripForm
from webapp.lab.models import GoodNet
from webapp.lab.services import declared_initial, request_strip
from webapp.lab.uploads import store_checked
from webapp.lab.views.downloads import chart_file


def goodnets_page(request, from_run=None, upload=None, status: int = 200):
    """The GoodNets list with both compose forms (a form passed in keeps the user's input and errors)."""
    rows = GoodNet.objects.filter(team=request.team).select_related("badnet", "run").order_by("-created")
    context = {
        "goodnets": rows,
        "from_run": from_run or GoodNetFromRunForm(request.team, prefix="run"),
        "upload": upload or GoodNetUploadForm(request.team, prefix="upload"),
    }
    return render(request, "lab/goodnets.html", context, status=status)


@team_required
def goodnets(request):
    return goodnets_page(request)


@team_required
@require_POST
def goodnet_from_run(request):
    form = GoodNetFromRunForm(request.team, request.POST, prefix="run")
    if form.is_valid():
        try:
            goodnet = composition.compose_from_run(form.cleaned_data["run"], form.cleaned_data["name"], request.user)
        except ValueError as refusal:
            form.add_error("run", str(refusal))
        else:
            messages.success(request, f"GoodNet {goodnet.name} composed.")
            return redirect("goodnets")
    return goodnets_page(request, from_run=form, status=400)


@team_required
@require_POST
def goodnet_upload(request):
    form = GoodNetUploadForm(request.team, request.POST, request.FILES, prefix="upload", user=request.user)
    if form.is_valid():

        def store(path, data):
            return composition.compose_from_upload(data["badnet"], path, data["file"].name, data["name"], request.user)

        goodnet = store_checked(form, store, ModelRefused)
        if goodnet is not None:
            messages.success(request, f"GoodNet {goodnet.name} composed from {goodnet.original_name}.")
            return redirect("goodnets")
    return goodnets_page(request, upload=form, status=400)


def detector_context(goodnet: GoodNet) -> dict:
    figures = goodnet.figures or {}
    return {
        "goodnet": goodnet,
        "figures": figures_payload(detector_charts(figures)),
        "rules": figures.get("rules", {}),
        "triggers": list(figures.get("roc", {})),
        "waiting": goodnet.strip_pending,
        "rule_rows": [
            (rule, rates["false_alarm"], [rates["detection"].get(name) for name in figures.get("roc", {})])
            for rule, rates in figures.get("rules", {}).items()
        ],
        "csv_url": reverse("goodnet-chart", args=[goodnet.pk, "SLUG", "csv"]),
        "pdf_url": reverse("goodnet-chart", args=[goodnet.pk, "SLUG", "pdf"]),
    }


@team_required
def goodnet(request, pk: int, form: StripForm | None = None, status: int = 200):
    """A GoodNet: its networks, its bundle, and STRIP (the form, its state, the detector figures)."""
    goodnet = owned_or_404(GoodNet.objects.select_related("badnet", "run", "team"), request.user, pk=pk)
    # the BadNet's own sets (declared for it; the form ticks those it offers), then the last calibration's
    chosen = declared_initial(goodnet.badnet) | {"frr": goodnet.strip_frr or 1.0}
    if goodnet.strip_valid_id:
        chosen["valid"] = goodnet.strip_valid_id
    context = detector_context(goodnet) | {"form": form or StripForm(goodnet, initial=chosen)}
    return render(request, "lab/goodnet.html", context, status=status)


@team_required
@require_POST
def goodnet_strip(request, pk: int):
    """Calibrate STRIP for the GoodNet on a worker (its detector figures with it)."""
    row = owned_or_404(GoodNet.objects.select_related("badnet", "team"), request.user, pk=pk)
    form = StripForm(row, request.POST)
    if form.is_valid():
        try:  # one calibration at a time per GoodNet, a few per team and per user (services.request_strip)
            request_strip(row, form.cleaned_data, request.user)
        except ValueError as refusal:
            form.add_error(None, str(refusal))
    if not form.is_valid():
        return goodnet(request, pk, form=form, status=400)
    messages.info(request, "STRIP is being calibrated by a worker; this page updates when it is done.")
    return redirect("goodnet", row.pk)


@team_required
def goodnet_detector(request, pk: int):
    """htmx partial: STRIP's state and the detector figures; stops polling once calibrated or failed."""
    row = owned_or_404(GoodNet.objects.select_related("badnet", "team"), request.user, pk=pk)
    context = detector_context(row)
    response = render(request, "lab/_detector.html", context)
    return response if context["waiting"] else HttpResponseStopPolling(response.content)


@team_required
def goodnet_chart(request, pk: int, slug: str, fmt: str):
    row = owned_or_404(GoodNet.objects, request.user, pk=pk)
    return chart_file(request, detector_charts(row.figures or {}), slug, fmt, f"goodnet-{row.pk}")


@team_required
@throttled(ExportThrottle)
def goodnet_bundle(request, pk: int):
    """The standalone bundle: both networks, bundle.json and eval.py, zipped."""
    goodnet = owned_or_404(GoodNet.objects.select_related("badnet", "run"), request.user, pk=pk)
    try:
        archive = composition.cached_bundle(goodnet)
    except (ModelRefused, OSError) as refusal:
        messages.error(request, f"The bundle of {goodnet.name} cannot be built now: {refusal}")
        return redirect("goodnet", goodnet.pk)
    return FileResponse(open(archive, "rb"), as_attachment=True, filename=f"goodnet-{goodnet.pk}.zip")


@team_required
@throttled(ClassifyThrottle, methods=("POST",))
def classify(request):
    form = ClassifyForm(
        request.team, request.POST or None, request.FILES or None, initial={"network": request.GET.get("network")}
    )
    answers = None
    if request.method == "POST" and form.is_valid():
        try:
            answers = inference.answers_for(form.cleaned_data)
        except (DataError, ModelRefused) as refusal:
            form.add_error(None, f"Refused: {refusal}")
    status = 400 if form.errors else 200
    return render(request, "lab/classify.html", {"form": form, "answers": answers}, status=status)
