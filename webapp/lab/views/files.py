"""BadNets and datasets: upload (checked before anything is stored), list, detail, previews."""

import io

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from defenses.data import DataError, inspect_dataset, sample_pixels, tile
from webapp.lab.access import owned_or_404, team_required
from webapp.lab.charts import activation_profiles, figures_payload
from webapp.lab.detection import scans_context
from webapp.lab.forms import BadNetForm, DatasetForm
from webapp.lab.limits import dataset_limits
from webapp.lab.models import BadNet, Dataset, Profile
from webapp.lab.parsing import brief, row_id
from webapp.lab.results import own_figures
from webapp.lab.services import AlreadyStored, request_profile, store_badnet, store_dataset
from webapp.lab.views.downloads import chart_file

PREVIEW_IMAGES = 24


@team_required
def badnets(request):
    form = BadNetForm(request.POST or None, request.FILES or None, team=request.team, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            badnet = store_badnet(form, request.team, request.user)
        except AlreadyStored as duplicate:
            messages.info(request, str(duplicate))
            return redirect("badnet", duplicate.row.pk)
        if badnet is not None:
            messages.success(request, f"{badnet.name}: {badnet.n_classes} classes, checked and stored.")
            return redirect("badnet", badnet.pk)
    rows = BadNet.objects.filter(team=request.team).annotate(n_experiments=Count("experiments")).order_by("-created")
    return render(request, "lab/badnets.html", {"badnets": rows, "form": form}, status=400 if form.errors else 200)


def profiles_context(badnet: BadNet) -> dict:
    """The BadNet's profiles (of its own team's sets), the charts of the first finished one, and whether
    one is still being computed (the page then polls)."""
    profiles = own_profiles(badnet)
    return {
        "badnet": badnet,
        "profiles": profiles,
        "profiles_waiting": any(p.status == Profile.Status.QUEUED for p in profiles),
        "figures": figures_payload(profile_charts(profiles)),
    }


def own_profiles(badnet: BadNet) -> list[Profile]:
    return list(Profile.objects.filter(badnet=badnet, dataset__team=badnet.team).select_related("dataset"))


def profile_charts(profiles: list[Profile]) -> list:
    """The mean activation per channel of the first finished profile, the one the page shows."""
    done = next((p for p in profiles if p.status == Profile.Status.DONE), None)
    return activation_profiles(done.means, done.dataset.name) if done else []


@team_required
def badnet_chart(request, pk: int, slug: str, fmt: str):
    """An activation profile's chart as CSV or PDF."""
    badnet = owned_or_404(BadNet.objects.select_related("team"), request.user, pk=pk)
    return chart_file(request, profile_charts(own_profiles(badnet)), slug, fmt, f"badnet-{badnet.pk}")


@team_required
def badnet(request, pk: int):
    """A BadNet of any of the user's teams; its profile form and lists are of the BadNet's own team. The
    profile form offers the clean validation sets that fit the BadNet (Dataset.misfit)."""
    badnet = owned_or_404(BadNet.objects.select_related("team"), request.user, pk=pk)
    clean = Dataset.objects.filter(team=badnet.team, role=Dataset.CLEAN_VALID).order_by("name")
    context = (
        profiles_context(badnet)
        | scans_context(badnet)
        | {
            "clean_sets": [d for d in clean if not d.misfit(badnet)],
            "datasets": Dataset.objects.filter(team=badnet.team).order_by("role", "name"),
            "experiments": badnet.experiments.order_by("-created"),
            "own_figures": own_figures(badnet),
        }
    )
    return render(request, "lab/badnet.html", context)


@team_required
def badnet_profiles(request, pk: int):
    """htmx partial: the profiles' state and charts; stops polling once none is being computed."""
    badnet = owned_or_404(BadNet.objects.select_related("team"), request.user, pk=pk)
    context = profiles_context(badnet)
    response = render(request, "lab/_profiles.html", context)
    return response if context["profiles_waiting"] else HttpResponseStopPolling(response.content)


@team_required
@require_POST
def badnet_profile(request, pk: int):
    """Queue a profile on a clean set of the BadNet's own team; another team's dataset is a 404."""
    badnet = owned_or_404(BadNet.objects, request.user, pk=pk)
    dataset = chosen_clean_set(request, badnet)
    if isinstance(dataset, HttpResponseBadRequest):
        return dataset
    request_profile(badnet, dataset)
    messages.info(request, f"The activation profile on {dataset.name} is being computed by a worker.")
    return redirect("badnet", badnet.pk)


def chosen_clean_set(request, badnet: BadNet) -> Dataset | HttpResponseBadRequest:
    """The POSTed `dataset`: a clean validation set of the BadNet's own team (else 404) that fits it and that
    a worker can hold; a 400 saying why not."""
    try:
        dataset_id = row_id(request.POST.get("dataset", ""), "dataset")
    except ValidationError as error:
        return HttpResponseBadRequest(error.message, content_type="text/plain; charset=utf-8")
    dataset = owned_or_404(Dataset.objects, request.user, pk=dataset_id, team=badnet.team)
    if dataset.role != Dataset.CLEAN_VALID:
        message = f"{dataset.name} is a {dataset.get_role_display()} set; choose a clean validation set."
        return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
    if dataset.misfit(badnet):
        return HttpResponseBadRequest(dataset.misfit(badnet), content_type="text/plain; charset=utf-8")
    if dataset.memory_bytes > settings.MAX_RUN_PIXEL_BYTES:
        return HttpResponseBadRequest(
            f"{dataset.name} holds {dataset.memory_bytes / 2**30:.1f} GiB of pixels as a "
            "worker reads them; over PRUNELAB_MAX_RUN_PIXEL_BYTES.",
            content_type="text/plain; charset=utf-8",
        )
    return dataset


@team_required
def datasets(request):
    form = DatasetForm(request.team, request.POST or None, request.FILES or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            dataset = store_dataset(form, request.team, request.user)
        except AlreadyStored as duplicate:
            messages.info(request, str(duplicate))
            return redirect("dataset", duplicate.row.pk)
        if dataset is not None:
            messages.success(request, f"{dataset.name}: {dataset.count} images, checked and stored.")
            return redirect("dataset", dataset.pk)
    rows = Dataset.objects.filter(team=request.team).order_by("role", "name")
    return render(request, "lab/datasets.html", {"datasets": rows, "form": form}, status=400 if form.errors else 200)


@team_required
def dataset(request, pk: int):
    dataset = owned_or_404(Dataset.objects.select_related("team"), request.user, pk=pk)
    try:
        info = inspect_dataset(dataset.file.path, image_shape=None, limits=dataset_limits())
    except DataError as refusal:  # stored before a check it now fails (manage.py audit_files lists such sets)
        return render(request, "lab/dataset.html", {"dataset": dataset, "refusal": refusal})
    labels = info.labels[:PREVIEW_IMAGES].tolist()  # the preview grid's images, read by dataset_preview
    context = {"dataset": dataset, "labels": labels, "info": info, "fitting": fitting_badnets(dataset)}
    return render(request, "lab/dataset.html", context)


def fitting_badnets(dataset: Dataset) -> list[tuple[BadNet, bool]]:
    """The team's BadNets this set fits, each with whether the set is declared its data."""
    declared = set(dataset.badnets.values_list("pk", flat=True))
    badnets = BadNet.objects.filter(team=dataset.team).order_by("name")
    return [(badnet, badnet.pk in declared) for badnet in badnets if not dataset.misfit(badnet)]


@team_required
@require_POST
def dataset_badnets(request, pk: int):
    """Declare which of the team's BadNets this set is the data of (only those it fits can be chosen)."""
    dataset = owned_or_404(Dataset.objects.select_related("team"), request.user, pk=pk)
    offered = {str(badnet.pk): badnet for badnet, _ in fitting_badnets(dataset)}
    asked = request.POST.getlist("badnets")
    unknown = [pk for pk in asked if pk not in offered]
    if unknown:  # nothing changes: the page offers only the team's BadNets the set fits
        messages.error(
            request, f"Not changed: {brief(unknown[0])} is not one of the BadNets offered for {dataset.name}."
        )
        return redirect("dataset", dataset.pk)
    chosen = [offered[pk] for pk in asked]
    dataset.badnets.remove(*offered.values())
    dataset.badnets.add(*chosen)
    names = ", ".join(badnet.name for badnet in chosen) or "no BadNet"
    messages.info(request, f"{dataset.name} is declared the data of {names}.")
    return redirect("dataset", dataset.pk)


@team_required
@cache_control(private=True, max_age=3600)
def dataset_preview(request, pk: int):
    """The first images of the set as one PNG grid."""
    from PIL import Image

    dataset = owned_or_404(Dataset.objects, request.user, pk=pk)
    try:
        info = inspect_dataset(dataset.file.path, image_shape=None, limits=dataset_limits())
        pixels, _ = sample_pixels(info, PREVIEW_IMAGES)
    except DataError as refusal:  # e.g. NaN pixels: the set was stored, but its first images cannot be drawn
        message = f"No preview of {dataset.name}: {refusal} Upload the set again with pixels in 0..255."
        return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
    picture = Image.fromarray(tile(pixels))
    picture = picture.resize((picture.width * 2, picture.height * 2), Image.Resampling.NEAREST)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return HttpResponse(out.getvalue(), content_type="image/png")
