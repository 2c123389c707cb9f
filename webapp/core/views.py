import math

from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.db.models import Max
from django.http import JsonResponse
from django.shortcuts import render
from django.template.defaultfilters import pluralize
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from webapp.core.clients import client_ip
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


def locked_out(request, original_response=None, credentials=None):
    """django-axes' answer once a username+address pair has too many failed sign-ins: the sign-in page
    again (429), saying when the lock lifts, so the user knows a correct password will not work yet."""
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    form = AuthenticationForm(request, initial={"username": username})
    until = lock_lifts_at(request, username)
    wait = max(1, math.ceil((until - timezone.now()).total_seconds() / 60))
    lockout = (
        f"Too many failed sign-ins for {username} from your address: sign-in is locked for about {wait} "
        f"more minute{pluralize(wait)} (until {until:%H:%M} UTC). Wait, then try again; an administrator "
        "can lift the lock sooner (manage.py axes_reset_username)."
    )
    return render(request, "registration/login.html", {"form": form, "lockout": lockout}, status=429)


def lock_lifts_at(request, username: str):
    """The last counted failure for this pair plus the cool-off (failures during the lock are not counted)."""
    last = AccessAttempt.objects.filter(username=username, ip_address=client_ip(request)).aggregate(
        last=Max("attempt_time")
    )["last"]
    return (last or timezone.now()) + settings.AXES_COOLOFF_TIME
