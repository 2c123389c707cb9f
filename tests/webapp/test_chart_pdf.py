"""A chart as a vector PDF, drawn by Kaleido in Debian's chromium from the same figure the page draws: real
renders (about 2 s each), the refusal when the server has no Chromium, and the per-user rate."""

import os
import re
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from unittest import mock

from django.conf import settings
from django.test import override_settings

from tests.webapp.base import BaseTestCase, stored_detector_figures
from tests.webapp.test_experiment import GRID, grid_metrics
from webapp.core.throttles import PerUserThrottle
from webapp.lab.models import GoodNet, Profile


def browser_failing(path: Path, mark: Path, times: str) -> Path:
    """A stand-in for the server's Chromium that exits at once (leaving `mark`) the first time, or every time,
    and otherwise is the real one."""
    real = settings.CHROMIUM_PATH
    once = f'[ -e "{mark}" ] || {{ touch "{mark}"; exit 1; }}; exec "{real}" "$@"'
    path.write_text("#!/bin/sh\n" + (once if times == "once" else f'env > "{mark}"; exit 1') + "\n")
    path.chmod(0o755)
    return path


def pages_of(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page\b", pdf))


class ChartPdfTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.client.force_login(self.alice)
        self.study = self.experiment(GRID)
        self.runs = self.finish(self.study, lambda run, position: grid_metrics(run, position) | {"epoch": position + 1})

    def pdf(self, url: str) -> bytes:
        response = self.client.get(url)
        assert response.status_code == 200, (url, response.status_code, response.content[:300])
        assert response["Content-Type"] == "application/pdf"
        body = response.content
        assert body.startswith(b"%PDF-") and body.rstrip().endswith(b"%%EOF") and pages_of(body) == 1, url
        return body

    def test_experiment_compare_and_run_charts_are_one_page_pdfs_named_for_their_chart(self):
        response = self.client.get(f"/experiments/{self.study.pk}/charts/vs-threshold.pdf")
        assert response["Content-Disposition"] == f'attachment; filename="experiment-{self.study.pk}-vs-threshold.pdf"'
        threshold = self.pdf(f"/experiments/{self.study.pk}/charts/vs-threshold.pdf")
        pareto = self.pdf("/compare/?pdf=pareto")
        run = self.pdf(f"/runs/{self.runs[0].pk}/charts/run.pdf")
        assert len({threshold, pareto, run}) == 3  # three figures, three drawings
        # every line is a vector path, not a picture: no image stream in the file
        assert b"/Subtype /Image" not in threshold and b"/Subtype/Image" not in threshold
        assert self.client.get(f"/experiments/{self.study.pk}/charts/nothing.pdf").status_code == 404
        assert self.client.get("/compare/?pdf=nothing").status_code == 404
        assert self.client.get(f"/experiments/{self.study.pk}/charts/vs-threshold.exe").status_code == 404

    def test_a_profile_and_a_detector_chart_are_pdfs_too(self):
        badnet = self.study.badnet
        Profile.objects.create(badnet=badnet, dataset=self.study.valid, status="done", means={"conv_3": [0.1, 0.5]})
        self.pdf(f"/badnets/{badnet.pk}/charts/profile-conv_3.pdf")
        rows = self.client.get(f"/badnets/{badnet.pk}/charts/profile-conv_3.csv").content.decode().splitlines()
        assert rows == ["layer,channel,mean", "conv_3,0,0.1", "conv_3,1,0.5"]  # the chart's own numbers
        page = self.client.get(f"/badnets/{badnet.pk}/").content.decode()
        assert f'data-csv="/badnets/{badnet.pk}/charts/SLUG.csv"' in page
        figures = stored_detector_figures()
        goodnet = GoodNet.objects.create(
            team=self.blue, owner=self.alice, name="g", badnet=badnet, run=self.runs[0], sha256="x", figures=figures
        )
        self.pdf(f"/goodnets/{goodnet.pk}/charts/detector-rates.pdf")
        assert self.client.get(f"/badnets/{badnet.pk}/charts/profile-conv_9.pdf").status_code == 404

    def test_the_page_offers_the_pdf_beside_the_csv(self):
        page = self.client.get(f"/experiments/{self.study.pk}/").content.decode()
        assert f'data-pdf="/experiments/{self.study.pk}/charts/SLUG.pdf"' in page
        run_page = self.client.get(f"/runs/{self.runs[0].pk}/").content.decode()
        assert f'data-pdf="/runs/{self.runs[0].pk}/charts/SLUG.pdf"' in run_page

    @override_settings(CHROMIUM_PATH=Path("/nonexistent/chromium"))
    def test_without_chromium_the_refusal_says_what_to_install_and_that_svg_needs_nothing(self):
        response = self.client.get(f"/experiments/{self.study.pk}/charts/vs-threshold.pdf")
        assert response.status_code == 503
        text = response.content.decode()
        assert "/nonexistent/chromium is missing" in text and "apt-get install chromium" in text and "SVG" in text
        assert self.client.get(f"/experiments/{self.study.pk}/charts/vs-threshold.csv").status_code == 200

    def test_a_chromium_that_fails_once_is_started_again_and_one_that_always_fails_is_a_503_with_advice(self):
        folder = Path(tempfile.mkdtemp())
        once = browser_failing(folder / "once", folder / "failed-once", times="once")
        with override_settings(CHROMIUM_PATH=once):
            self.pdf(f"/experiments/{self.study.pk}/charts/vs-threshold.pdf")
        assert (folder / "failed-once").exists()  # the first Chromium did fail; the second drew the chart
        always = browser_failing(folder / "always", folder / "failed", times="always")
        secret = {"DATABASE_URL": "postgres://user:s3cret@db/prunelab"}
        with override_settings(CHROMIUM_PATH=always), mock.patch.dict(os.environ, secret):
            response = self.client.get(f"/experiments/{self.study.pk}/charts/vs-threshold.pdf")
        assert "s3cret" not in (folder / "failed").read_text()  # the browser drawing users' words gets no secrets
        assert response.status_code == 503
        assert "Chromium failed to draw this chart" in response.content.decode() and "SVG" in response.content.decode()
        # Kaleido runs in a child: a failed Chromium once left choreographer's threads in the web process (a test
        # session that never exited); none may be here
        assert "kaleido" not in sys.modules and "choreographer" not in sys.modules
        left = [thread.name for thread in threading.enumerate() if not thread.daemon and thread.name != "MainThread"]
        assert left == [], left

    @override_settings(CHROMIUM_PATH=Path("/nonexistent/chromium"))
    def test_pdfs_count_against_the_users_figure_rate_and_csvs_do_not(self):
        now = 60.0 * (10**9 + uuid.uuid4().int % 10**9) + 1
        with (
            override_settings(
                REQUEST_RATES={
                    "classify": "9/minute",
                    "preview": "9/minute",
                    "export": "9/minute",
                    "figure": "2/minute",
                }
            ),
            mock.patch.object(PerUserThrottle, "timer", lambda throttle: now),
        ):
            url = f"/experiments/{self.study.pk}/charts/vs-threshold.pdf"
            assert [self.client.get(url).status_code for _ in range(2)] == [503, 503]  # counted, then refused
            refused = self.client.get(url)
            assert (
                refused.status_code == 429
                and "Too many PDF figures: you may send 2 a minute" in refused.content.decode()
            )
            assert "PRUNELAB_FIGURE_RATE" in refused.content.decode()
            assert self.client.get(f"/experiments/{self.study.pk}/charts/vs-threshold.csv").status_code == 200
            self.client.force_login(self.bob)  # another user's own rate
            assert self.client.get("/compare/?pdf=pareto").status_code in (404, 503)
