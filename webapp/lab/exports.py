"""What the app hands out as a chart's or a table's file: CSV for every table and chart (spreadsheet-safe), and a
chart as a vector PDF drawn by Kaleido in the server's Chromium. SVG and PNG are drawn in the user's browser by
plotly.js itself (charts.js); PDF needs a print engine, hence the server."""

import csv
import io
import logging
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from django.conf import settings
from django.http import HttpResponse

from defenses.models import sandbox_environment

# OWASP's CSV injection rule: a spreadsheet runs a cell that begins with one of these as a formula
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CONTENT_TYPES = {"csv": "text/csv", "pdf": "application/pdf"}
# A chart's PDF page: the size the SVG and PNG downloads have (charts.js), in CSS pixels.
PDF_WIDTH, PDF_HEIGHT = 1000, 600
RENDERS = threading.BoundedSemaphore(settings.MAX_CHART_RENDERS)  # Chromiums at once in this process
# Kaleido 1.5 can ask a freshly loaded tab for its script before the tab's new page has it ("kaleido_scopes is
# not defined"): seen once in the suite on a loaded 2-core machine. A second Chromium draws it.
RENDER_ATTEMPTS = 2
RENDERER = Path(__file__).with_name("pdf_render.py")
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
    """The figure as a one-page vector PDF, drawn by Kaleido in a child process (pdf_render.py). plotly.js comes
    from the plotly package and MathJax not at all: nothing leaves the server. One render at a time per process
    (a Chromium is about 200 MB and 2 s); a request that waits longer than CHART_RENDER_WAIT seconds is refused,
    and so is a chart Chromium failed to draw twice."""
    if not settings.CHROMIUM_PATH.exists():
        raise RenderRefused(
            f"PDF needs Chromium on the server and {settings.CHROMIUM_PATH} is missing: ask the administrator to "
            "install it (apt-get install chromium) or set PRUNELAB_CHROMIUM; the SVG download needs nothing."
        )
    if not RENDERS.acquire(timeout=settings.CHART_RENDER_WAIT):
        raise RenderRefused("The server is drawing other PDFs: try again in a minute, or download the SVG.")
    figure_json, limit = figure.to_json().encode(), settings.CHART_RENDER_WAIT + 15
    page = [str(PDF_WIDTH), str(PDF_HEIGHT), str(settings.CHART_RENDER_WAIT)]  # and Kaleido's own wait
    command = [sys.executable, str(RENDERER), str(settings.CHROMIUM_PATH), *page]
    try:
        for attempt in range(1, RENDER_ATTEMPTS + 1):
            # the figure carries what users typed: its Chromium gets none of the server's secrets (as a sandbox)
            with tempfile.TemporaryDirectory(prefix="prunelab-pdf-") as scratch:
                try:
                    done = subprocess.run(
                        command, input=figure_json, capture_output=True, timeout=limit, env=sandbox_environment(scratch)
                    )
                except subprocess.TimeoutExpired:
                    log.warning("PDF render %d of %d took over %d s", attempt, RENDER_ATTEMPTS, limit)
                    continue
            if done.returncode == 0 and done.stdout.startswith(b"%PDF-"):
                return done.stdout
            log.warning("PDF render %d of %d failed: %s", attempt, RENDER_ATTEMPTS, done.stderr.decode()[-500:])
    finally:
        RENDERS.release()
    raise RenderRefused(
        "Chromium failed to draw this chart twice: try again in a minute, or download the SVG, which your browser "
        "draws."
    )


def chart_download(chart, fmt: str, stem: str) -> HttpResponse:
    """A chart's file, `fmt` one of CONTENT_TYPES, named `stem`-<slug>.<fmt>; RenderRefused passes through."""
    body = chart.csv() if fmt == "csv" else chart_pdf(chart.figure)
    response = HttpResponse(body, content_type=CONTENT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="{stem}-{chart.slug}.{fmt}"'
    return response
