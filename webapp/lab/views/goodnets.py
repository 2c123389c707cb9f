"""GoodNets (compose from a run or an upload, download the bundle) and the image-test form."""

import shutil

from django.contrib import messages
from django.http import FileResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from defenses.data import DataError
from defenses.modelcheck import ModelRefused
from webapp.lab import inference
from webapp.lab.access import owned_or_404, team_required
from webapp.lab.forms import ClassifyForm, GoodNetFromRunForm, GoodNetUploadForm
from webapp.lab.models import GoodNet
from webapp.lab.uploads import store_checked


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
            goodnet = inference.compose_from_run(form.cleaned_data["run"], form.cleaned_data["name"], request.user)
        except ValueError as refusal:
            form.add_error("run", str(refusal))
        else:
            messages.success(request, f"GoodNet {goodnet.name} composed.")
            return redirect("goodnets")
    return goodnets_page(request, from_run=form, status=400)


@team_required
@require_POST
def goodnet_upload(request):
    form = GoodNetUploadForm(request.team, request.POST, request.FILES, prefix="upload")
    if form.is_valid():

        def store(path, data):
            return inference.compose_from_upload(data["badnet"], path, data["file"].name, data["name"], request.user)

        goodnet = store_checked(form, store, ModelRefused)
        if goodnet is not None:
            messages.success(request, f"GoodNet {goodnet.name} composed from {goodnet.original_name}.")
            return redirect("goodnets")
    return goodnets_page(request, upload=form, status=400)


@team_required
def goodnet_bundle(request, pk: int):
    """The standalone bundle: both networks, bundle.json and eval.py, zipped."""
    goodnet = owned_or_404(GoodNet.objects.select_related("badnet", "run"), request.user, pk=pk)
    archive = inference.bundle_zip(goodnet)
    handle = open(archive, "rb")  # noqa: SIM115 - FileResponse closes it; the folder goes once it is read
    shutil.rmtree(archive.parent, ignore_errors=True)  # POSIX: the open file stays readable
    return FileResponse(handle, as_attachment=True, filename=archive.name)


@team_required
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
