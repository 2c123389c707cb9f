"""Detection pages: a BadNet's Neural Cleanse scans (queued on a worker, polled until done)."""

from django.contrib import messages
from django.http import HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from webapp.lab.access import owned_or_404, team_required
from webapp.lab.detection import scans_context
from webapp.lab.models import BadNet
from webapp.lab.services import request_scan
from webapp.lab.views.files import chosen_clean_set


@team_required
@require_POST
def badnet_scan(request, pk: int):
    """Queue a Neural Cleanse scan on a clean set of the BadNet's own team; another team's dataset is a 404."""
    badnet = owned_or_404(BadNet.objects, request.user, pk=pk)
    dataset = chosen_clean_set(request, badnet)
    if isinstance(dataset, HttpResponseBadRequest):
        return dataset
    try:
        request_scan(badnet, dataset, request.user)
    except ValueError as refusal:
        messages.error(request, str(refusal))
    else:
        messages.info(request, f"The Neural Cleanse scan on {dataset.name} is being computed by a worker.")
    return redirect("badnet", badnet.pk)


@team_required
def badnet_scans(request, pk: int):
    """htmx partial: the scans' state and findings; stops polling once none is being computed."""
    badnet = owned_or_404(BadNet.objects.select_related("team"), request.user, pk=pk)
    context = scans_context(badnet)
    response = render(request, "lab/_scans.html", context)
    return response if context["scans_waiting"] else HttpResponseStopPolling(response.content)
