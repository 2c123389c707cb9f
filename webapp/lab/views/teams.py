"""Teams: create, choose the current one, invite and remove members (team admins)."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling
from rest_framework.authtoken.models import Token

from webapp.lab import budgets, storage
from webapp.lab.access import choose_team, current_team, is_team_admin, team_required, teams_of
from webapp.lab.demo import DEMO_TEAM, read_status
from webapp.lab.forms import InviteForm, TeamForm
from webapp.lab.models import Invitation, Membership, Team


@login_required
def teams(request):
    form = TeamForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            team = Team.objects.create(name=form.cleaned_data["name"])
            Membership.objects.create(user=request.user, team=team, is_admin=True)
        choose_team(request, team)
        return redirect("team", team.pk)
    invitations = Invitation.objects.filter(user=request.user).select_related("team", "invited_by")
    context = {
        "teams": teams_of(request.user),
        "form": form,
        "current": current_team(request),
        "invitations": invitations,
    }
    return render(request, "lab/teams.html", context)


def member_team_or_404(request, team_id: int) -> Team:
    return get_object_or_404(teams_of(request.user), pk=team_id)


@login_required
def team(request, team_id: int):
    team = member_team_or_404(request, team_id)
    admin = is_team_admin(request.user, team)
    form = InviteForm(request.POST or None)
    if request.method == "POST":
        if not admin:
            raise Http404("Only a team admin invites members.")
        if form.is_valid():
            name = form.cleaned_data["username"]
            user = get_user_model().objects.filter(username=name).first()
            if user is not None and not Membership.objects.filter(user=user, team=team).exists():
                Invitation.objects.get_or_create(user=user, team=team, defaults={"invited_by": request.user})
            # the same words whether the account exists or not: the form does not tell who has an account
            messages.success(
                request,
                f"If an account named {name!r} exists, it is invited to {team.name}: it "
                "joins when it accepts on its Teams page.",
            )
            return redirect("team", team.pk)
    members = Membership.objects.filter(team=team).select_related("user").order_by("user__username")
    context = {"team": team, "members": members, "form": form, "admin": admin}
    context |= {"usage": storage.Usage.of(team, request.user), "work": budgets.in_words(team, request.user)}
    context |= {"team_quota": settings.TEAM_STORAGE_BYTES, "user_quota": settings.USER_STORAGE_BYTES}
    return render(request, "lab/team.html", context)


@login_required
@require_POST
def answer_invitation(request, team_id: int):
    """Accept (join as a member) or decline an invitation made to this user."""
    invitation = get_object_or_404(Invitation, user=request.user, team_id=team_id)
    with transaction.atomic():
        if request.POST.get("answer") == "accept":
            Membership.objects.get_or_create(user=request.user, team=invitation.team)
            messages.success(request, f"You are now a member of {invitation.team.name}.")
        else:
            messages.info(request, f"You declined {invitation.team.name}'s invitation.")
        invitation.delete()
    return redirect("teams")


@login_required
@require_POST
def leave_team(request, team_id: int):
    """Leave a team; its last admin stays until another admin exists."""
    team = member_team_or_404(request, team_id)
    membership = Membership.objects.get(team=team, user=request.user)
    if membership.is_admin and not Membership.objects.filter(team=team, is_admin=True).exclude(pk=membership.pk):
        messages.error(request, f"You are {team.name}'s last admin: make someone else admin first.")
        return redirect("team", team.pk)
    membership.delete()
    messages.success(request, f"You left {team.name}; its rows are no longer visible to you.")
    return redirect("teams")


@login_required
@require_POST
def remove_member(request, team_id: int, user_id: int):
    team = member_team_or_404(request, team_id)
    if not is_team_admin(request.user, team):
        raise Http404("Only a team admin removes members.")
    membership = get_object_or_404(Membership, team=team, user_id=user_id)
    if membership.is_admin and not Membership.objects.filter(team=team, is_admin=True).exclude(pk=membership.pk):
        messages.error(request, "A team keeps at least one admin: make someone else admin first.")
    else:
        membership.delete()
        messages.success(request, f"{membership.user.username} was removed from {team.name}.")
    return redirect("team", team.pk)


@login_required
@require_POST
def make_admin(request, team_id: int, user_id: int):
    """An admin makes a member admin too (so that the last admin can hand over and leave)."""
    team = member_team_or_404(request, team_id)
    if not is_team_admin(request.user, team):
        raise Http404("Only a team admin makes admins.")
    membership = get_object_or_404(Membership, team=team, user_id=user_id)
    Membership.objects.filter(pk=membership.pk).update(is_admin=True)
    messages.success(request, f"{membership.user.username} is now an admin of {team.name}.")
    return redirect("team", team.pk)


@login_required
@require_POST
def switch_team(request, team_id: int):
    choose_team(request, member_team_or_404(request, team_id))
    target = request.POST.get("next", "")
    local = target.startswith("/") and url_has_allowed_host_and_scheme(target, {request.get_host()})
    return HttpResponseRedirect(target) if local else redirect("dashboard")


@login_required
@cache_control(no_store=True, private=True)
def api_token(request):
    """The user's API token: shown, created or replaced."""
    if request.method == "POST":
        Token.objects.filter(user=request.user).delete()
        Token.objects.create(user=request.user)
        messages.success(request, "A new token was made; the old one no longer works.")
        return redirect("api-token")
    return render(request, "lab/api_token.html", {"token": Token.objects.filter(user=request.user).first()})


@team_required
def demo_status(request):
    """htmx partial: the demo data's preparation (webapp.lab.demo); stops the polling once it is over."""
    status = read_status() if request.team.name == DEMO_TEAM else None
    if status is None:
        return HttpResponseStopPolling("")
    response = render(request, "lab/_demo_status.html", {"demo_status": status})
    return HttpResponseStopPolling(response.content) if status["done"] or status["error"] else response
