"""The compare page: the team's finished runs, sortable, the CA-vs-ASR Pareto front, parallel coordinates
and the before/after summary per BadNet."""

from tests.webapp.base import BaseTestCase
from tests.webapp.test_experiment import GRID, grid_metrics
from webapp.lab.results import pareto_front
from webapp.lab.views.compare import differing, sorted_rows


class CompareTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.client.force_login(self.alice)
        self.runs = self.finish(self.experiment(GRID), grid_metrics)

    def figures(self, query: str = "") -> dict:
        import json
        import re

        page = self.client.get(f"/compare/{query}").content.decode()
        return json.loads(re.search(r'id="compare-figures"[^>]*>(.*?)</script>', page, re.S).group(1))

    def test_the_pareto_front_keeps_the_runs_nobody_beats(self):
        front = pareto_front(
            [{"ca": 90, "asr": 10}, {"ca": 80, "asr": 5}, {"ca": 85, "asr": 12}, {"ca": 95, "asr": 40}]
        )
        assert [(r["ca"], r["asr"]) for r in front] == [(80, 5), (90, 10), (95, 40)]

    def test_charts_show_the_chosen_runs_last_points(self):
        chosen = self.runs[:2]
        figures = self.figures("?" + "&".join(f"run={r.pk}" for r in chosen))
        points = figures["pareto"]["figure"]["data"][0]
        final = [grid_metrics(r, r.config["epochs"]) for r in chosen]
        assert sorted(points["y"]) == sorted(m["ca"] for m in final)
        assert sorted(points["x"]) == sorted(m["asr"]["sunglasses"] for m in final)
        assert len(figures["parallel"]["figure"]["data"][0]["dimensions"]) == 6

    def test_the_summary_shows_before_and_after_per_badnet(self):
        page = self.client.get("/compare/").content.decode()
        summary = page[page.index('id="summary"') :]
        assert "<td>96.00</td><td>100.00</td>" in summary  # the BadNet's own CA and ASR

    def test_sorting_and_differences(self):
        rows = [
            {"ca": 1, "lr": 0.1, "epochs": 2},
            {"ca": 3, "lr": 0.1, "epochs": 2},
            {"ca": None, "lr": 0.1, "epochs": 3},
        ]
        assert [r["ca"] for r in sorted_rows(rows, "-ca")] == [3, 1, None]
        assert differing(rows, ["lr", "epochs"]) == ["epochs"]
        page = self.client.get("/compare/?differences=1&sort=ca").content.decode()
        assert ">T</a>" in page and ">Epochs</a>" not in page  # every run here trains 2 epochs

    def test_chart_csv(self):
        response = self.client.get("/compare/?csv=pareto")
        assert response["Content-Type"] == "text/csv" and response.content.decode().count("\n") == 1 + len(self.runs)
