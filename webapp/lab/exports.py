"""What the app hands out as a chart's or a table's file: CSV for every table and chart (spreadsheet-safe), and a
chart as a vector PDF drawn by Kaleido in the server's Chromium. SVG and PNG are drawn in the user's browser by
plotly.js itself (charts.js); PDF needs a print engine, hence the server."""

import csv
import io
import logging
import threading

from django.conf import settings
from django.http import HttpResponse

# OWASP's CSV injection rule: a spreadsheet runs a cell that begins with one of these as a formula
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CONTENT_TYPES = {"csv": "text/csv", "pdf": "application/pdf"}
# A chart's PDF page: the size the SVG and PNG downloads have (charts.js), in CSS pixels.
PDF_WIDTH, PDF_HEIGHT = 1000, 600
RENDERS = threading.BoundedSemaphore(settings.MAX_CHART_RENDERS)  # Chromiums at once in this process
# Kaleido 1.5 can ask a freshly loaded tab for its script before the tab's new page has it ("kaleido_scopes is
# not defined"): seen once in the suite on a loaded 2-core machine. A second Chromium draws it.
RENDER_ATTEMPTS = 2
log = logging.getLogger(__name__)


class RenderRefused(Exception):
    """A chart could not be drawn as PDF now; the message says why and what to do."""


def csv_cell(value):
    """A cell as a spreadsheet will see it: text that would start a formula gets a leading single quote. Only
    text (names, labels, triggers: what users typed) is changed; numbers, negative ones included, stay numbers."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def csv_text(rows: list[dict]) -> str:
    """Every CSV the app writes: one column per key seen in the rows, every cell through csv_cell."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([csv_cell(column) for column in columns])
    writer.writerows([csv_cell(row.get(column, "")) for column in columns] for row in rows)
    return out.getvalue()


def chart_pdf(figure) -> bytes:
    """The figure as a one-page vector PDF. Kaleido loads plotly.js from the plotly package and MathJax not at
    all (its default is a CDN): nothing leaves the server. One render at a time per process (a Chromium is about
    200 MB and 2 s); a request that waits longer than CHART_RENDER_WAIT seconds is refused."""
    import kaleido

    if not settings.CHROMIUM_PATH.exists():
        raise RenderRefused(
            f"PDF needs Chromium on the server and {settings.CHROMIUM_PATH} is missing: ask the administrator to "
            "install it (apt-get install chromium) or set PRUNELAB_CHROMIUM; the SVG download needs nothing."
        )
    if not RENDERS.acquire(timeout=settings.CHART_RENDER_WAIT):
        raise RenderRefused("The server is drawing other PDFs: try again in a minute, or download the SVG.")
    options = {"format": "pdf", "width": PDF_WIDTH, "height": PDF_HEIGHT}
    browser = {"path": str(settings.CHROMIUM_PATH), "mathjax": False, "timeout": settings.CHART_RENDER_WAIT}
    try:
        for attempt in range(RENDER_ATTEMPTS):
            try:
                return kaleido.calc_fig_sync(figure, opts=options, kopts=browser)
            except Exception as error:  # Chromium's failures reach us as many kinds; the user's advice is one
                log.warning("PDF render %d of %d failed: %r", attempt + 1, RENDER_ATTEMPTS, error)
                failure = error
    finally:
        RENDERS.release()
    raise RenderRefused(
        f"Chromium failed to draw this chart ({type(failure).__name__}) twice: try again in a minute, or download "
        "the SVG, which your browser draws."
    )


def chart_download(chart, fmt: str, stem: str) -> HttpResponse:
    """A chart's file, `fmt` one of CONTENT_TYPES, named `stem`-<slug>.<fmt>; RenderRefused passes through."""
    body = chart.csv() if fmt == "csv" else chart_pdf(chart.figure)
    response = HttpResponse(body, content_type=CONTENT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="{stem}-{chart.slug}.{fmt}"'
    return response
