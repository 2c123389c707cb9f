"""Child process of exports.chart_pdf: read a plotly figure as JSON on stdin, write its one-page PDF on stdout.

    python webapp/lab/pdf_render.py CHROMIUM WIDTH HEIGHT TIMEOUT < figure.json > chart.pdf

Kaleido drives Chromium through choreographer, whose threads outlive a Chromium that failed to start: in the web
process they kept it (and a test session) from ever exiting. Here they end with the process. Imports neither
Django nor the app."""

import os
import sys


def main(chromium: str, width: str, height: str, timeout: str) -> None:
    import kaleido
    import plotly.io

    figure = plotly.io.from_json(sys.stdin.read())
    options = {"format": "pdf", "width": int(width), "height": int(height)}
    # MathJax off: Kaleido's default loads it from a CDN, and nothing may leave the server
    browser = {"path": chromium, "mathjax": False, "timeout": float(timeout)}
    sys.stdout.buffer.write(kaleido.calc_fig_sync(figure, opts=options, kopts=browser))
    sys.stdout.flush()


if __name__ == "__main__":
    try:
        main(*sys.argv[1:5])
    except Exception as error:  # any failure: one line for the parent's log, exit 1
        print(f"{type(error).__name__}: {error}"[:500], file=sys.stderr, flush=True)
        os._exit(1)
    os._exit(0)  # choreographer's leftover threads would hold a normal exit
