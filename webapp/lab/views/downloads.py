"""A chart of any page as a file: its CSV (its exact rows) or its PDF (drawn by Kaleido on the server)."""

from django.http import Http404, HttpResponse

from webapp.core.throttles import FigureThrottle, throttled
from webapp.lab.exports import RenderRefused, chart_download


def chart_file(request, charts: list, slug: str, fmt: str, stem: str) -> HttpResponse:
    """The page's chart `slug` as `fmt` (csv or pdf), or a 404 when the page has no such chart (yet)."""
    chart = next((chart for chart in charts if chart.slug == slug), None)
    if chart is None:
        raise Http404("This page has no such chart (yet).")
    return chart_download(chart, fmt, stem) if fmt == "csv" else chart_pdf_file(request, chart, stem)


@throttled(FigureThrottle)
def chart_pdf_file(request, chart, stem: str) -> HttpResponse:
    try:
        return chart_download(chart, "pdf", stem)
    except RenderRefused as refusal:
        return HttpResponse(str(refusal), status=503, content_type="text/plain; charset=utf-8")
