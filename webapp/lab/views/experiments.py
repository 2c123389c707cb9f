"""Experiments: the new-experiment form with the planner's preview, the live page, charts and CSV."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from defenses.methods import METHODS, job_kind, method_of, separate_training_epochs, training_epochs
from defenses.search import searchable
from webapp.core.throttles import PreviewThrottle, throttled
from webapp.lab import budgets, listing, searches
from webapp.lab.access import owned_or_404, team_required
from webapp.lab.charts import experiment_charts, figures_payload, importance_bars, search_progress
from webapp.lab.exports import csv_text
from webapp.lab.forms import TEMPLATE_TITLES, ExperimentFilterForm, ExperimentForm, data_size
from webapp.lab.models import BadNet, Experiment, Run, data_fingerprint
from webapp.lab.parsing import row_id
from webapp.lab.results import (
    befores,
    experiment_rows,
    experiment_selection,
    point_words,
    progress,
    rounded,
    seed_report_context,
    step_rows,
)
from webapp.lab.services import cancel, create_experiment, declared_initial, plan_reuse, rerun_failed
from webapp.lab.views.downloads import chart_file


@team_required
def experiments(request):
    """The team's experiments, a page at a time, found by the filters."""
    form = ExperimentFilterForm(request.GET)
    if not form.is_valid():
        context = {"form": form, "page": None, "templates": TEMPLATE_TITLES}
        return render(request, "lab/experiments.html", context, status=400)
    filters = {
        "words": form.cleaned_data["q"].strip(),
        **{k: form.cleaned_data[k] for k in ("state", "tag", "archived")},
    }
    page = listing.page_of(listing.found(request.team, **filters), request.GET.get("page"))
    kept = request.GET.copy()
    kept.pop("page", None)
    context = {
        "form": form,
        "page": page,
        "filtered": any(filters.values()),
        "query": kept.urlencode(),
        "templates": TEMPLATE_TITLES,
        "badnets": request.team.badnets.order_by("name")[:5],
    }
    return render(request, "lab/experiments.html", context)


@team_required
@require_POST
def experiment_tags(request, pk: int):
    """Set the experiment's tags (the team's words to find it by)."""
    experiment = owned_or_404(Experiment.objects, request.user, pk=pk)
    try:
        tags = listing.parse_tags(request.POST.get("tags", ""))
    except ValueError as refusal:
        messages.error(request, f"Tags not changed: {refusal}")
    else:
        Experiment.objects.filter(pk=experiment.pk).update(tags=tags)
        messages.info(request, "Tags saved." if tags else "Tags removed.")
    return redirect("experiment", experiment.pk)


@team_required
@require_POST
def experiment_archive(request, pk: int):
    """Archive the experiment (hidden from the list unless asked for), or bring it back."""
    experiment = owned_or_404(Experiment.objects, request.user, pk=pk)
    Experiment.objects.filter(pk=experiment.pk).update(archived=not experiment.archived)
    if experiment.archived:
        messages.info(request, "Back in the experiments list.")
    else:
        messages.info(request, "Archived: hidden from the experiments list (tick 'archived ones' there to see it).")
    return redirect("experiment", experiment.pk)


def runs_in_words(experiment: Experiment) -> str:
    """What submitting did, honestly: a run the team had already finished is shown, not queued again."""
    if experiment.is_search:
        return (
            f"search queued within {experiment.space['search']['budget']:g} fine-tuning-epoch units; its trials "
            "appear below as they end (a rung your team has already trained costs nothing)."
        )
    statuses = list(experiment.runs.values_list("status", flat=True))
    done = statuses.count(Run.DONE)
    waiting = len(statuses) - done
    if not waiting:
        its = "Its run was" if done == 1 else f"All {done} of its runs were"
        return f"{its} already done in your team: its points are shown, nothing is trained again."
    said = f"{waiting} run{pluralize(waiting)} queued or under way"
    return f"{said}, {done} already done (nothing trained again)." if done else f"{said}."


def preselected(request) -> dict:
    """?badnet=ID: that BadNet of the team, with its declared sets (services.declared_initial)."""
    try:
        pk = row_id(request.GET.get("badnet"), "badnet")
    except ValidationError:
        return {}  # none asked for, or not a number: the form starts empty
    badnet = BadNet.objects.filter(team=request.team, pk=pk).first()
    return {"badnet": badnet.pk} | declared_initial(badnet) if badnet else {}


@team_required
def new_experiment(request):
    initial = ExperimentForm.initial_for(request.GET.get("template", "")) | preselected(request)
    form = ExperimentForm(request.team, request.POST or None, initial=initial, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            experiment = create_experiment(request.team, request.user, form.cleaned_data)
        except budgets.OverBudget as refusal:  # another request took the budget since the form's check
            form.add_error(None, str(refusal))
        else:
            messages.success(request, f"{experiment.name}: {runs_in_words(experiment)}")
            return redirect("experiment", experiment.pk)
    context = {"form": form, "templates": TEMPLATE_TITLES, "chosen": request.GET.get("template", "")}
    return render(request, "lab/experiment_new.html", context, status=400 if form.errors else 200)


@team_required
@require_POST
@throttled(PreviewThrottle)
def plan_preview(request):
    """htmx partial: what the planner will run for the form as it stands."""
    form = ExperimentForm(request.team, request.POST, user=request.user)
    form.is_valid()
    the_plan = form.cleaned_data.get("plan")
    method = METHODS.get(request.POST.get("defense", ""))
    space = form.cleaned_data.get("space") or {}
    budget = {"left": budgets.in_words(request.team, request.user), "refused": form.non_field_errors()}
    if "search" in space and not [name for name in form.errors if name != "__all__"]:
        size = data_size(form.cleaned_data)
        context = {"method": method, "search": search_preview(method, space, size), "budget": budget}
        return render(request, "lab/_plan.html", context)
    if the_plan is None:
        errors = [f"{name}: {' '.join(errors)}" for name, errors in form.errors.items() if name in form.parameter_names]
        return render(request, "lab/_plan.html", {"errors": errors + list(form.non_field_errors()), "method": method})
    data = form.cleaned_data
    naive = separate_training_epochs(data["space"])
    chosen = [data.get(name) for name in ("badnet", "valid", "test")]
    fingerprint = data_fingerprint(*chosen, data.get("poisoned") or []) if all(chosen) else None
    reused = plan_reuse(request.team, the_plan, fingerprint) if fingerprint else []
    planned = training_epochs(the_plan)
    new_epochs = planned - sum(training_epochs(entry["job"]) for entry in reused)
    context = {"plan": the_plan, "points": len(the_plan.points), "naive": naive, "method": method, "planned": planned}
    context["budget"] = budget
    return render(request, "lab/_plan.html", context | {"reused": reused, "new_epochs": new_epochs})


def search_preview(method, space: dict, size: tuple[int, int]) -> dict:
    """What a search will do, for the preview: its budget, the rungs that can fit it, how many first rungs it
    buys and the ranges its trials draw from."""
    from defenses.search import SearchSettings, first_rung_cost

    settings = SearchSettings(budget=space["search"]["budget"])
    rungs = settings.rungs()
    per_epoch = first_rung_cost(method, space, settings, *size) / rungs[0]
    ranges = [
        f"{p.label} {', '.join(map(str, p.choices))}"
        if p.choices
        else f"{p.label} from {p.search[0]:g} to {p.search[1]:g}{' (log scale)' if p.log else ''}"
        for p in searchable(method)
    ]
    return {
        "budget": settings.budget,
        "rungs": [r for r in rungs if r * per_epoch <= settings.budget],
        "per_epoch": per_epoch,
        "first_rungs": int(settings.budget // (rungs[0] * per_epoch)),
        "ranges": ranges,
    }


def experiment_results(experiment: Experiment) -> dict:
    """The points (or incremental steps), the table rows and the validation-selected best point."""
    test = experiment.triggers()
    stepwise = method_of(experiment.space).steps
    rows = [] if stepwise else experiment_rows(experiment)
    steps = step_rows(experiment) if stepwise else None
    selection = experiment_selection(experiment, rows)
    best = selection.best
    if best is not None:  # a run keeps its final network only: a GoodNet of the best point needs its last one
        run = experiment.own_runs().select_related("badnet").filter(pk=best["run"]).first()
        last = run is not None and best["position"] == run.total_positions - 1
        repairs = run is not None and job_kind(run.kind).repairs
        best = best | {"composable": best["status"] == Run.DONE and repairs and last}
        if run is not None and repairs and not last and job_kind(run.kind).epoch_prefix:  # its own run may keep it
            best["network_run"] = Run.objects.filter(key=run.network_key(best["position"])).first()
    method = method_of(experiment.space)
    if best is not None:
        best["where"] = point_words(method, best)
    headings = [{"name": c.name, "label": c.label, "heading": c.heading or c.label} for c in method.columns]
    if experiment.is_search:  # a trial's number and its own searched values beside the columns (its axes)
        own = [{"name": p.name, "label": p.label, "heading": p.label.split(": ")[-1]} for p in searchable(method)]
        headings = [{"name": "trial", "label": "search trial", "heading": "Trial"}, *headings]
        headings += [h for h, p in zip(own, searchable(method), strict=True) if not p.axis]
    table = [
        row
        | {
            "asr_values": [row[f"asr {name}"] for name in test],
            "coords": [rounded(row.get(h["name"])) for h in headings],
            "is_best": row is selection.best,
            "under_floor": selection.floor is not None
            and row.get("valid_acc") is not None
            and row["valid_acc"] < selection.floor - 1e-9,
        }
        for row in rows
    ]
    return {
        "rows": rows,
        "table": table,
        "steps": steps,
        "triggers": test,
        "selection": selection,
        "best": best,
        "columns": headings,
    }


def charts_of(experiment: Experiment) -> list:
    """The experiment's charts; only the figures and CSV views build them (the polled partial does not)."""
    results = experiment_results(experiment)
    method = method_of(experiment.space)
    if experiment.is_search:  # continuous values: the search's own charts, then CA and ASR by epoch
        search = searches.summary(experiment)
        charts = [search_progress(search), importance_bars(search["importance"])]
        return [chart for chart in charts if chart is not None]
    return experiment_charts(method, results["rows"], results["triggers"], results["selection"], results["steps"])


@team_required
def experiment(request, pk: int):
    experiment = owned_or_404(Experiment.objects.select_related("team", "badnet", "valid", "test"), request.user, pk=pk)
    context = results_context(experiment) | {"method": method_of(experiment.space)}
    context["seed"] = seed_report_context(experiment, context["table"] or [])
    return render(request, "lab/experiment.html", context)


@team_required
def experiment_report(request, pk: int):
    """A printable study report of the experiment: what was run, the rule and its choice, every point, the
    charts and the glossary (the browser prints it, or saves it as a PDF)."""
    experiment = owned_or_404(Experiment.objects.select_related("team", "badnet", "valid", "test"), request.user, pk=pk)
    context = results_context(experiment) | {"method": method_of(experiment.space)}
    context["space_items"] = [(name, value) for name, value in experiment.space.items() if name != "defense"]
    return render(request, "lab/experiment_report.html", context)


def results_context(experiment: Experiment) -> dict:
    """What the experiment's page, its report and its polled partial show: points, choice, progress and the
    held-out split."""
    state = {"experiment": experiment, "progress": progress(experiment)}
    return experiment_results(experiment) | state | held_out_context(experiment)


def held_out_context(experiment: Experiment) -> dict:
    """What the page says of the held-out part of the clean validation set the choice reads."""
    if experiment.holdout is None:
        return {"held_out": None}
    before = next(iter(befores(experiment.own_runs()).values()), {})
    split = before.get("holdout") or {}
    count = experiment.valid.count
    images, of = split.get("images", round(experiment.holdout * count)), split.get("of", count)
    return {"held_out": {"share": experiment.holdout, "images": images, "of": of, "repair": of - images}}


@team_required
def experiment_progress(request, pk: int):
    """htmx partial polled by the page; tells the page to redraw its charts, and stops polling when done."""
    experiment = owned_or_404(Experiment.objects, request.user, pk=pk)
    context = results_context(experiment)
    response = render(request, "lab/_progress.html", context)
    if context["progress"]["finished"]:
        stop = HttpResponseStopPolling(response.content)
        stop["HX-Trigger"] = "charts-changed"
        return stop
    response["HX-Trigger"] = "charts-changed"
    return response


@team_required
def experiment_figures(request, pk: int):
    """Every chart's figure as JSON, for Plotly.react on the page."""
    experiment = owned_or_404(Experiment.objects, request.user, pk=pk)
    return JsonResponse({"charts": figures_payload(charts_of(experiment))})


@team_required
def experiment_chart(request, pk: int, slug: str, fmt: str):
    experiment = owned_or_404(Experiment.objects, request.user, pk=pk)
    return chart_file(request, charts_of(experiment), slug, fmt, f"experiment-{experiment.pk}")


@team_required
@require_POST
def experiment_cancel(request, pk: int):
    experiment = owned_or_404(Experiment.objects, request.user, pk=pk)
    stopped = cancel(experiment)
    if stopped:
        done = "queued ones now, running ones at their next batch"
        messages.info(request, f"{stopped} run{pluralize(stopped)} stopped: {done}.")
    else:
        messages.info(request, "Nothing to stop: every run of this experiment had already ended.")
    return redirect("experiment", experiment.pk)


@team_required
@require_POST
def experiment_rerun(request, pk: int):
    experiment = owned_or_404(Experiment.objects, request.user, pk=pk)
    try:
        count = rerun_failed(experiment, request.user)
    except budgets.OverBudget as refusal:
        messages.error(request, f"Nothing was queued again. {refusal}")
        return redirect("experiment", experiment.pk)
    messages.info(request, f"{count} failed or cancelled run{pluralize(count)} queued again.")
    return redirect("experiment", experiment.pk)


@team_required
def experiment_export(request, pk: int, fmt: str):
    """Every point of the experiment in one file: CSV (one row per point), or JSON with the experiment's
    definition, its selection rule and selected point."""
    experiment = owned_or_404(Experiment.objects.select_related("badnet", "valid", "test"), request.user, pk=pk)
    rows = experiment_rows(experiment)
    selection = experiment_selection(experiment, rows)
    name = f"experiment-{experiment.pk}-points.{fmt}"
    if fmt == "csv":
        response = HttpResponse(csv_text(rows), content_type="text/csv")
    else:
        sets = {"valid": file_entry(experiment.valid), "test": file_entry(experiment.test)}
        sets |= {f"poisoned {d.metric_name}": file_entry(d) for d in experiment.poisoned.all()}
        definition = {
            "id": experiment.pk,
            "name": experiment.name,
            "team": experiment.team_id,
            "sets": sets,
            "badnet": file_entry(experiment.badnet),
            "space": experiment.space,
            "max_ca_drop": experiment.max_ca_drop,
        }
        body = {"experiment": definition, "rule": selection.rule, "best": selection.best, "points": rows}
        response = JsonResponse(body, json_dumps_params={"indent": 1})
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def file_entry(row) -> dict:
    """A BadNet or dataset in an export: which row and which file (its hash), as the user named it."""
    return {
        "id": row.pk,
        "name": row.name,
        "sha256": row.sha256,
        **({"role": row.role} if hasattr(row, "role") else {}),
    }
