"""What the app hands out as a chart's or a table's file: CSV for every table and chart (spreadsheet-safe), and a
chart as a vector PDF drawn by Kaleido in the server's Chromium. SVG and PNG are drawn in the user's browser by
plotly.js itself (charts.js); PDF needs a print engine, hence the server."""

import csv
import io
import threading

from django.conf import settings
from django.http import HttpResponse

# OWASP's CSV injection rule: a spreadsheet runs a cell that begins with one of these as a formula
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CONTENT_TYPES = {"csv": "text/csv", "pdf": "application/pdf"}
# A chart's PDF page: the size the SVG and PNG downloads have (charts.js), in CSS pixels.
PDF_WIDTH, PDF_HEIGHT = 1000, 600
RENDERS = threading.BoundedSemaphore(settings.MAX_CHART_RENDERS)  # Chromiums at once in this process


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
    try:
        options = {"format": "pdf", "width": PDF_WIDTH, "height": PDF_HEIGHT}
        browser = {"path": str(settings.CHROMIUM_PATH), "mathjax": False, "timeout": settings.CHART_RENDER_WAIT}
        return kaleido.calc_fig_sync(figure, opts=options, kopts=browser)
    finally:
        RENDERS.release()


def chart_download(chart, fmt: str, stem: str) -> HttpResponse:
    """A chart's file, `fmt` one of CONTENT_TYPES, named `stem`-<slug>.<fmt>; RenderRefused passes through."""
    body = chart.csv() if fmt == "csv" else chart_pdf(chart.figure)
    response = HttpResponse(body, content_type=CONTENT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="{stem}-{chart.slug}.{fmt}"'
    return response
