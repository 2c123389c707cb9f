"""The experiments list: experiments found by words, state, tag or archive, a page at a time. Each row's state
comes from counts of its runs (one query for the whole list), and its selected point is cached on the row
(Experiment.listed) while its runs are unchanged: the selection reads every point, too much to do for each
row of a list of a thousand on every request."""

import json
import re
from dataclasses import dataclass

from django.core.paginator import Page, Paginator
from django.db.models import Count, Max, Q, QuerySet, Sum

from defenses.methods import method_of
from webapp.lab.models import Experiment, Run, Status

PAGE_SIZE = 50
STATES = tuple(Status.values)  # what the list filters by
MAX_TAGS, TAG = 6, re.compile(r"[a-z0-9][a-z0-9 _.-]{0,29}")


@dataclass
class Listed:
    experiment: Experiment
    state: str  # in words: "running", "2 of 4 failed or cancelled"
    kind: str  # one of STATES: what the filter and the colour read
    fraction: float
    best: dict | None  # {"ca", "asr", "where"} of the selected point


def parse_tags(text: str) -> str:
    """',a,b,' from 'A, b' (lowercased, without repeats); ValueError with the reason for a tag that is not
    1-30 letters, digits, spaces, '_', '.' or '-', or for more than MAX_TAGS."""
    tags = list(dict.fromkeys(tag.strip().lower() for tag in text.split(",") if tag.strip()))
    bad = [tag for tag in tags if not TAG.fullmatch(tag)]
    if bad:
        raise ValueError(f"'{bad[0][:40]}' is not a tag: 1-30 ASCII letters, digits, spaces, '_', '.' or '-'.")
    if len(tags) > MAX_TAGS:
        raise ValueError(f"{len(tags)} tags; an experiment takes at most {MAX_TAGS}.")
    return f",{','.join(tags)}," if tags else ""


def with_run_counts(experiments: QuerySet) -> QuerySet:
    statuses = {f"n_{status}": Count("runs", filter=Q(runs__status=status)) for status in Run.Status.values}
    return experiments.annotate(
        n_runs=Count("runs"),
        **statuses,
        progress_sum=Sum("runs__progress"),
        last_beat=Max("runs__heartbeat_at"),
        last_end=Max("runs__finished_at"),
    )


def state_of(row) -> tuple[str, str]:
    """(words, kind) of an annotated row: a search's own state; else running, queued, or what ended."""
    if row.is_search:
        status = row.search.get("status", Status.QUEUED)
        return status, status if status in STATES else Status.QUEUED
    if row.n_running:
        return Status.RUNNING, Status.RUNNING
    if row.n_queued or not row.n_runs:  # no run yet: its submission has not been stored
        return Status.QUEUED, Status.QUEUED
    stopped = row.n_failed + row.n_cancelled
    if stopped:
        kind = Status.FAILED if row.n_failed else Status.CANCELLED
        return f"{stopped} of {row.n_runs} failed or cancelled", kind
    return Status.DONE, Status.DONE


def fraction_of(row) -> float:
    if row.is_search:
        if row.search.get("status") == Status.DONE:
            return 1.0
        return min(1.0, row.search.get("spent", 0.0) / (row.search.get("budget") or 1))
    return (row.progress_sum or 0.0) / row.n_runs if row.n_runs else 0.0


def stamp_of(row) -> str:
    """What the selected point depends on, short of its points: it changes whenever a point is stored."""
    counts = [getattr(row, f"n_{status}") for status in Run.Status.values]
    beats = [str(row.last_beat), str(row.last_end), round(row.progress_sum or 0.0, 6)]
    search = [row.search.get("status"), row.search.get("spent")]
    return json.dumps([row.n_runs, counts, beats, search, row.max_ca_drop])


def best_of(row) -> dict | None:
    """The row's selected point from its cache, computed and stored when its runs changed since."""
    stamp = stamp_of(row)
    if row.listed.get("stamp") == stamp:
        return row.listed["best"]
    from webapp.lab.results import experiment_rows, experiment_selection, point_words

    method = method_of(row.space)
    best = None
    if not method.steps:
        chosen = experiment_selection(row, experiment_rows(row)).best
        if chosen:
            best = {"ca": chosen["ca"], "asr": chosen["asr"], "where": point_words(method, chosen)}
    Experiment.objects.filter(pk=row.pk).update(listed={"stamp": stamp, "best": best})
    return best


def found(team, words: str = "", state: str = "", tag: str = "", archived: bool = False) -> list:
    """The team's experiments that match, newest first, annotated with their runs' counts."""
    rows = Experiment.objects.filter(team=team, archived=archived)
    if words:
        rows = rows.filter(
            Q(name__icontains=words) | Q(badnet__name__icontains=words) | Q(space__defense__icontains=words)
        )
    if tag:
        rows = rows.filter(tags__icontains=f",{tag.strip().lower()},")
    rows = with_run_counts(rows.select_related("badnet", "owner")).order_by("-created", "-pk")
    return [row for row in rows if not state or state_of(row)[1] == state]


def page_of(rows: list, number) -> Page:
    """One page of the found rows, each made a Listed (its best point from the cache)."""
    page = Paginator(rows, PAGE_SIZE).get_page(number)
    page.object_list = [
        Listed(row, *state_of(row), fraction=fraction_of(row), best=best_of(row)) for row in page.object_list
    ]
    return page
