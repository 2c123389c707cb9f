"""Who sees what: every row belongs to a team and only its members see it. Views fetch rows through these
functions, so a user of another team gets 404 (not 403: the row's existence is not revealed)."""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect

from webapp.lab.models import Membership, Team

SESSION_KEY = "team_id"


def teams_of(user):
    return Team.objects.filter(membership__user=user).order_by("name")


def owned_or_404(queryset, user, **lookup):
    """One row of `queryset` whose team the user belongs to, else 404 (a malformed id too).

    Any of the user's teams, not only the current one: a link from another of their teams (a bookmark, a
    colleague's message) opens. The page then names the row's team when it is not the current one
    (templates/lab/_other_team.html) and every form on it acts on the row's own team, never the current
    one; the current team is never switched silently (the page offers a "Work in ..." button)."""
    try:
        return get_object_or_404(queryset.filter(team__membership__user=user), **lookup)
    except (ValueError, ValidationError):  # pk="abc": no such row, not a server error
        raise Http404("No such row.") from None


def first_team(user) -> Team | None:
    """The team the user joined first: the default wherever none is chosen (pages, API). Not the first by
    name: which teams exist and what they are called is up to other people."""
    first = Membership.objects.filter(user=user).order_by("pk").select_related("team").first()
    return first.team if first else None


def current_team(request) -> Team | None:
    """The team the user works in now: the one chosen in the session, else the one they joined first."""
    chosen = teams_of(request.user).filter(pk=request.session.get(SESSION_KEY)).first()
    return chosen or first_team(request.user)


def choose_team(request, team: Team) -> None:
    if not Membership.objects.filter(user=request.user, team=team).exists():
        raise Http404("No such team.")
    request.session[SESSION_KEY] = team.pk


def team_required(view):
    """Signed in and a member of a team; sets request.team. A user without a team is sent to create one."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        request.team = current_team(request)
        if request.team is None:
            return redirect("teams")
        return view(request, *args, **kwargs)

    return wrapper


def is_team_admin(user, team: Team) -> bool:
    return Membership.objects.filter(user=user, team=team, is_admin=True).exists()
