"""Delete a BadNet, dataset, experiment or GoodNet: a confirmation page that says what goes with it
(webapp.lab.deletion), then the deletion. A team admin may delete anything of the team; a member only what
is all their own (the row and everything it takes along)."""

from django.contrib import messages
from django.shortcuts import redirect, render

from webapp.lab.access import is_team_admin, owned_or_404, team_required
from webapp.lab.deletion import delete, plan_deletion
from webapp.lab.models import BadNet, Dataset, Experiment, GoodNet

# kind in the URL -> (model, what the page calls it, the list to go back to)
KINDS = {
    "badnet": (BadNet, "BadNet", "badnets"),
    "dataset": (Dataset, "dataset", "datasets"),
    "experiment": (Experiment, "experiment", "dashboard"),
    "goodnet": (GoodNet, "GoodNet", "goodnets"),
}


@team_required
def delete_row(request, kind: str, pk: int):
    model, what, back = KINDS[kind]
    row = owned_or_404(model.objects.select_related("team", "owner"), request.user, pk=pk)
    deletion = plan_deletion(row)
    allowed = deletion.owners() == {request.user.pk} or is_team_admin(request.user, row.team)
    context = {
        "row": row,
        "what": what,
        "summary": deletion.summary(),
        "running": deletion.running,
        "detecting": deletion.detecting,
        "allowed": allowed,
        "back": back,
    }
    if request.method != "POST":
        return render(request, "lab/delete.html", context)
    if not allowed:
        context["refusal"] = f"It takes along other members' work: only an admin of {row.team.name} may delete it."
        return render(request, "lab/delete.html", context, status=403)
    try:
        delete(deletion)
    except ValueError as refusal:
        return render(request, "lab/delete.html", context | {"refusal": str(refusal)}, status=409)
    messages.success(request, f"Deleted the {what} {row.name}: {'; '.join(deletion.summary())}.")
    return redirect(back)
