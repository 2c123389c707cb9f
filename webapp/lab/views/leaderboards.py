"""A BadNet's leaderboard: one click runs every registered defense on its sets (a search within one budget for
the training defenses, a small sweep for the others), and the page ranks the defenses by their honestly
selected points (webapp.lab.results.leaderboard_rows), with a GoodNet to compose from each and the spread over
boards repeated with other seeds."""

from statistics import mean, stdev

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from webapp.lab import budgets, composition
from webapp.lab.access import owned_or_404, team_required
from webapp.lab.forms import LeaderboardForm
from webapp.lab.models import BadNet, Dataset, GoodNet, Leaderboard, Run
from webapp.lab.parsing import row_id
from webapp.lab.results import leaderboard_rows, point_words
from webapp.lab.services import declared_initial, same_leaderboard, start_leaderboard


@team_required
def new_leaderboard(request, pk: int):
    """The form on a BadNet's page: its fitting sets, the floor, the held-out share and the search budget; POST
    starts every defense (a search for each training defense, a sweep for the others)."""
    badnet = owned_or_404(BadNet.objects.select_related("team"), request.user, pk=pk)
    form = LeaderboardForm(badnet, request.POST or None, user=request.user, initial=declared_initial(badnet))
    if request.method == "POST" and form.is_valid():
        try:
            board, started = start_leaderboard(badnet.team, request.user, form.cleaned_data)
        except budgets.OverBudget as refusal:  # another request took the budget since the form's check
            form.add_error(None, str(refusal))
        else:
            if started:
                messages.success(request, f"{board.experiments.count()} defenses queued on {badnet.name}.")
            else:  # a second click, a reload, or the same POST at once: the board that exists, not a copy
                messages.info(request, "This leaderboard exists already (same sets, floor and budget); here it is.")
            return redirect("leaderboard", board.pk)
    boards = Leaderboard.objects.filter(badnet=badnet).order_by("-created")
    context = {"badnet": badnet, "form": form, "boards": boards}
    return render(request, "lab/leaderboard_new.html", context, status=400 if form.errors else 200)


def board_context(board: Leaderboard) -> dict:
    rows = leaderboard_rows(board)
    first = board.experiments.order_by("pk").first()
    names = first.triggers() if first else []
    before = next((row["before"] for row in rows if row["before"]), {})
    for row in rows:
        best = row["best"] or {}
        if row["method"].steps and best:
            row["where"] = f"stopped at step {best.get('step')}, {best.get('fraction') or 0:.0%} of the layer pruned"
        else:
            row["where"] = point_words(row["method"], best)
        row["asr_values"] = [best.get(f"asr {name}") for name in names]
        row["detection_values"] = [best.get(f"detection {name}") for name in names]
        run = Run.objects.filter(pk=best.get("run")).select_related("badnet").first() if best.get("run") else None
        row["composable"] = bool(run and composition.run_network(run, best.get("position")))
        row["compose_note"] = ""
        if best and run and not row["composable"] and best.get("epochs") is not None:
            row["compose_note"] = (
                f"its point is epoch {best['epochs']} of a run that keeps only its last epoch's network: "
                "nothing to compose"
            )
    add_spread(board, rows)
    finished = all(row["finished"] for row in rows)
    runs = Run.objects.filter(experiments__leaderboard=board)
    goodnets = GoodNet.objects.filter(team=board.team, run__in=runs).exclude(figures={}).distinct().order_by("pk")
    before_asr = [(name, before.get(f"before asr {name}")) for name in names]
    return {
        "board": board,
        "rows": rows,
        "triggers": names,
        "before": before,
        "before_asr": before_asr,
        "finished": finished,
        "blind": first is not None and not first.triggers(Dataset.POISONED_VALID),
        "detectors": [detector_row(goodnet, names) for goodnet in goodnets],
    }


def repeats(board: Leaderboard) -> list[Leaderboard]:
    """The team's boards that repeat this one with other seeds: same BadNet, sets, floor, budget, held-out
    share and queue."""
    first = board.experiments.order_by("pk").first()
    if first is None:
        return []
    wanted = {"valid": first.valid, "test": first.test, "poisoned": list(first.poisoned.all())}
    data = wanted | {"max_ca_drop": board.max_ca_drop, "budget": board.budget, "holdout": first.holdout}
    data |= {"queue": first.queue}
    others = Leaderboard.objects.filter(team=board.team, badnet=board.badnet).exclude(seed=board.seed)
    return [other for other in others if same_leaderboard(board.badnet, data | {"seed": other.seed}) == other]


def add_spread(board: Leaderboard, rows: list[dict]) -> None:
    """Each defense's chosen test CA and mean ASR over this board and its repeats with other seeds, as mean and
    standard deviation, where two or more boards chose a point (row["spread"])."""
    chosen = {row["method"].name: [row["best"]] if row["best"] else [] for row in rows}
    seeds = [board.seed]
    for other in repeats(board):
        seeds.append(other.seed)
        for row in leaderboard_rows(other):
            if row["best"] and row["method"].name in chosen:
                chosen[row["method"].name].append(row["best"])
    for row in rows:
        points = chosen[row["method"].name]
        if len(points) >= 2:
            ca, asr = [p["ca"] for p in points], [p["asr"] for p in points]
            row["spread"] = {"boards": len(points), "ca": (mean(ca), stdev(ca)), "asr": (mean(asr), stdev(asr))}
    board.seeds = sorted(seeds)


def detector_row(goodnet: GoodNet, names: list[str]) -> dict:
    """A composed GoodNet's detector figures for the leaderboard: the GoodNet's false alarms (either rule)
    and, per trigger, its detection and the AUC of the disagreement score and of STRIP."""
    figures = goodnet.figures
    either = figures["rules"]["either"]
    per_trigger = [
        (
            either["detection"].get(name),
            figures["roc"].get(name, {}).get("disagreement", {}).get("auc"),
            figures["roc"].get(name, {}).get("STRIP", {}).get("auc"),
        )
        for name in names
    ]
    return {"goodnet": goodnet, "false_alarm": either["false_alarm"], "per_trigger": per_trigger}


@team_required
def leaderboard(request, pk: int):
    board = owned_or_404(Leaderboard.objects.select_related("team", "badnet"), request.user, pk=pk)
    return render(request, "lab/leaderboard.html", board_context(board))


@team_required
def leaderboard_table(request, pk: int):
    """htmx partial: the ranking, polled until every defense's runs are finished."""
    board = owned_or_404(Leaderboard.objects.select_related("team", "badnet"), request.user, pk=pk)
    context = board_context(board)
    response = render(request, "lab/_leaderboard.html", context)
    return HttpResponseStopPolling(response.content) if context["finished"] else response


@team_required
@require_POST
def leaderboard_goodnet(request, pk: int):
    """Compose a GoodNet from one defense's selected point (the experiment names which)."""
    board = owned_or_404(Leaderboard.objects.select_related("team", "badnet"), request.user, pk=pk)
    row = next((r for r in leaderboard_rows(board) if r["experiment"].pk == _experiment_id(request)), None)
    best = (row or {}).get("best") or {}
    run = board.team.runs.filter(pk=best.get("run")).first() if best.get("run") else None
    try:
        if run is None:
            raise ValueError("That defense has no selected point to compose a GoodNet from.")
        name = f"{row['method'].title} on {board.badnet.name}"[: GoodNet._meta.get_field("name").max_length]
        goodnet = composition.compose_from_run(run, name, request.user, best.get("position"))
    except ValueError as refusal:
        messages.error(request, str(refusal))
        return redirect("leaderboard", board.pk)
    messages.success(request, f"GoodNet {goodnet.name} composed: test it with an image, or download its bundle.")
    return redirect("goodnets")


def _experiment_id(request) -> int | None:
    try:
        return row_id(request.POST.get("experiment", ""), "experiment")
    except Exception:  # a malformed id is no experiment of the board: the refusal below says so
        return None
