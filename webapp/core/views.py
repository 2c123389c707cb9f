from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from webapp.core.health import current_health


@require_GET
def landing(request):
    return render(request, "core/landing.html")


@never_cache
@require_GET
def health(request):
    """200 when the database, Redis and at least one worker answer; 503 with what is missing otherwise."""
    state = current_health()
    return JsonResponse(state.as_dict(), status=200 if state.ok else 503)


@never_cache
@require_GET
def alive(request):
    """Liveness for container health checks: this process serves requests (workers are checked apart)."""
    return JsonResponse({"ok": True})
