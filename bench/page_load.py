"""The experiment page's load in a real Chromium on loopback: ours (compressed, content-hashed static files
cached for a year) against the naive way (bench/settings_naive.py: uncompressed, revalidated every time).
With --experiments N, the experiments list instead: server time for a team with N experiments.

    .venv/bin/python -m bench.page_load [--loads 5]
    .venv/bin/python -m bench.page_load --experiments 1000

The list (--experiments): N experiments over the same 7 finished runs; the server's time for GET /experiments/
(in-process, Django's test client, median of 5) with the selected points cached on the rows (warm), with the
caches emptied first (cold: one page of 50 computed), against the naive way of the list before (the 200
newest rows, each row's selection computed from its points on every request).

Builds a fresh SQLite database in var/bench-page/ with one experiment of 7 runs (T {0, 0.8, 1.2} x LR
{0.001, 0.005} trained to 20 epochs, and a prune-only curve; three triggers; 5 charts), starts the Django
server of `make run` twice (ours, naive) and measures, per server, the first load in a fresh browser
profile and then `--loads` reloads: seconds from navigation to every chart drawn, and the bytes the page
transferred. Also the server's own time for the page and for its figures (median of 5 requests).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench-page"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TRIGGERS = ("sunglasses", "eyebrows", "lipstick")


def build_database() -> int:
    """A team, a BadNet, its sets and a finished 7-run experiment with every point stored; returns its id."""
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("collectstatic", "--noinput", verbosity=0)
    from tests.webapp.base import BaseTestCase

    # The test suite's row makers (tests/webapp/base.py), outside a test: the contexts they enter (temporary
    # folders) stay open for the life of this process. The pages measured read rows only, never the files.
    held = []
    maker = BaseTestCase()
    maker.enterContext = lambda context: (held.append(context), context.__enter__())[1]
    maker.setUp()
    space = {"thresholds": [0.0, 0.8, 1.2], "learning_rates": [0.001, 0.005], "epochs": [0, 10, 20]}
    experiment = maker.experiment(space, triggers=TRIGGERS)

    def metrics(run, position):
        t, lr = run.config.get("threshold", position / 10), run.config.get("lr", 0.0)
        asr = {name: max(0.0, 90 - 40 * t - 2000 * lr - 2 * position - 5 * i) for i, name in enumerate(TRIGGERS)}
        return {
            "ca": 95 - 3 * t - position / 10,
            "asr": asr,
            "valid_acc": 96 - 3 * t,
            "epoch": position,
            "loss": 1 / (1 + position),
            "before": {"ca": 97.0, "asr": dict.fromkeys(TRIGGERS, 100.0), "valid_acc": 97.0},
        }

    runs = maker.finish(experiment, metrics)
    assert len(runs) == 7, len(runs)
    return experiment.pk


def start_server(port: int, settings: str) -> subprocess.Popen:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE=settings, PRUNELAB_VAR_DIR=str(VAR), PYTHONUNBUFFERED="1")
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=2)
            return server
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the {settings} server did not start")


def server_seconds(page, url: str) -> float:
    """Median time of 5 GETs of `url` with the browser's session, measured inside the page (fetch)."""
    times = page.evaluate(
        """async (url) => { const out = [];
        for (let i = 0; i < 5; i++) { const t = performance.now(); await (await fetch(url)).arrayBuffer();
                                      out.push((performance.now() - t) / 1000); }
        return out; }""",
        url,
    )
    return statistics.median(times)


def measure(browser, base: str, experiment: int, loads: int) -> dict:
    context = browser.new_context(base_url=base)
    page = context.new_page()
    page.goto("/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "password-alice")
    page.click("button[type=submit]")
    page.wait_for_url("**/experiments/")
    bytes_sent = (
        "() => [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]"
        ".reduce((total, entry) => total + (entry.transferSize || 0), 0)"
    )

    def load() -> tuple[float, int]:
        start = time.perf_counter()
        page.goto(f"/experiments/{experiment}/")
        page.wait_for_function("document.querySelectorAll('.chart[data-drawn=true]').length >= 5", timeout=60_000)
        return time.perf_counter() - start, page.evaluate(bytes_sent)

    first = load()
    again = [load() for _ in range(loads)]
    reload = (statistics.median(s for s, _ in again), statistics.median(b for _, b in again))
    result = {
        "first": first,
        "reload": reload,
        "html": server_seconds(page, f"/experiments/{experiment}/"),
        "figures": server_seconds(page, f"/experiments/{experiment}/figures"),
    }
    context.close()
    return result


def list_timings(experiment_id: int, count: int) -> None:
    """The experiments list with `count` experiments: ours warm and cold against the naive per-row selection."""
    from django.test import Client
    from django.test.utils import setup_test_environment

    from webapp.lab.models import Experiment
    from webapp.lab.results import experiment_rows, experiment_selection

    setup_test_environment()
    template = Experiment.objects.get(pk=experiment_id)
    fields = {f.name: getattr(template, f.name) for f in Experiment._meta.concrete_fields if f.name not in ("id",)}
    copies = Experiment.objects.bulk_create(Experiment(**fields | {"name": f"copy {n}"}) for n in range(count - 1))
    runs, poisoned = list(template.runs.all()), list(template.poisoned.all())
    Experiment.runs.through.objects.bulk_create(
        Experiment.runs.through(experiment_id=copy.pk, run_id=run.pk) for copy in copies for run in runs
    )
    Experiment.poisoned.through.objects.bulk_create(
        Experiment.poisoned.through(experiment_id=copy.pk, dataset_id=d.pk) for copy in copies for d in poisoned
    )
    client = Client()
    client.force_login(template.owner)

    def timed(action) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            action()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def page() -> None:
        assert client.get("/experiments/").status_code == 200

    def cold() -> None:
        Experiment.objects.update(listed={})
        page()

    def naive() -> None:  # the list before: each of the 200 newest rows' selection from its points, every time
        for row in Experiment.objects.filter(team=template.team).order_by("-created")[:200]:
            experiment_selection(row, experiment_rows(row))

    page()  # fills the first page's caches
    warm_s, cold_s, naive_s = timed(page), timed(cold), timed(naive)
    print(f"experiments list, {count} experiments of 7 runs each, server time (median of 5, in-process):")
    print(f"  ours: {warm_s * 1000:.0f} ms warm, {cold_s * 1000:.0f} ms cold (50 rows' selections computed)")
    print(f"  naive (200 rows' selections on every request, no page): {naive_s * 1000:.0f} ms")
    print(f"  naive / ours: {naive_s / warm_s:.0f}x warm, {naive_s / cold_s:.1f}x cold")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--experiments", type=int, default=0, help="time the experiments list with this many")
    args = parser.parse_args()
    shutil.rmtree(VAR, ignore_errors=True)
    VAR.mkdir(parents=True)
    os.environ.update(PRUNELAB_VAR_DIR=str(VAR), DJANGO_SETTINGS_MODULE="webapp.settings.local")
    experiment = build_database()
    if args.experiments:
        list_timings(experiment, args.experiments)
        return
    from playwright.sync_api import sync_playwright

    from stack.redis import free_port

    servers = {
        "ours": start_server(free_port(), "webapp.settings.local"),
        "naive": start_server(free_port(), "bench.settings_naive"),
    }
    results = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            for name, server in servers.items():
                port = server.args[3].split(":")[1]
                results[name] = measure(browser, f"http://127.0.0.1:{port}", experiment, args.loads)
            browser.close()
    finally:
        for server in servers.values():
            server.terminate()
            server.wait(10)
    print("experiment page, 7 runs, 5 charts, Chromium on loopback (seconds to every chart drawn; bytes sent)")
    for name, r in results.items():
        print(
            f"{name:>6}: first load {r['first'][0]:.2f} s ({r['first'][1] / 1e6:.2f} MB), reload "
            f"{r['reload'][0]:.2f} s ({r['reload'][1] / 1e6:.3f} MB); server: page {r['html'] * 1000:.0f} ms, "
            f"figures {r['figures'] * 1000:.0f} ms"
        )
    ours, naive = results["ours"], results["naive"]
    ratios = [naive[key][index] / max(ours[key][index], 1e-9) for key in ("first", "reload") for index in (0, 1)]
    print("naive / ours: first load {:.2f}x time, {:.2f}x bytes; reload {:.2f}x time, {:.1f}x bytes".format(*ratios))


if __name__ == "__main__":
    main()
