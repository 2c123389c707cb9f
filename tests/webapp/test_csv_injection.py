"""User text that other programs would run: in CSV downloads, a name that starts with a formula character is
neutralised (OWASP: a leading single quote; numbers, negative ones too, stay numbers); in charts, HTML in a
name reaches plotly as text."""

import csv
import io
import json

from tests.webapp.base import BaseTestCase
from tests.webapp.test_experiment import GRID, grid_metrics
from webapp.lab.exports import csv_cell, csv_text
from webapp.lab.models import Experiment

HOSTILE = '=HYPERLINK("http://x","y")'
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def test_text_that_starts_a_formula_is_quoted_and_numbers_are_not():
    for text in ("=1+2", "+1", "-cmd", "@SUM(A1)", "\tx", "\rx"):
        assert csv_cell(text) == "'" + text
    assert [csv_cell(v) for v in (-3.5, -2, 0, None, "plain", "a=b", "")] == [-3.5, -2, 0, None, "plain", "a=b", ""]
    rows = list(csv.reader(io.StringIO(csv_text([{"name": "-cmd", "delta": -3.5}, {"name": "ok"}]))))
    assert rows == [["name", "delta"], ["'-cmd", "-3.5"], ["ok", ""]]


class CsvInjectionTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.client.force_login(self.alice)
        self.study = self.experiment(GRID)
        self.study.name = HOSTILE
        self.study.save()
        self.study.poisoned.update(trigger=HOSTILE)  # a trigger name is typed by the user too
        self.finish(self.study, lambda run, position: grid_metrics(run, position) | {"asr": {HOSTILE: 10.0}})

    def cells(self, url: str) -> list[list[str]]:
        response = self.client.get(url)
        assert response.status_code == 200 and response["Content-Type"] == "text/csv", url
        return list(csv.reader(io.StringIO(response.content.decode())))

    def assert_no_formula(self, rows: list[list[str]]) -> None:
        for row in rows:
            for cell in row:
                assert not cell.startswith(FORMULA_STARTS) or float(cell) < 0, cell  # only numbers may start with -

    def test_the_compare_csvs_quote_the_experiment_name(self):
        for slug in ("pareto", "parallel"):
            rows = self.cells(f"/compare/?csv={slug}")
            self.assert_no_formula(rows)
            column = rows[0].index("experiment")
            assert {row[column] for row in rows[1:]} == {"'" + HOSTILE}

    def test_the_experiment_chart_csvs_carry_no_formula(self):
        for slug in ("vs-threshold", "vs-lr", "vs-epochs", "grid"):
            rows = self.cells(f"/experiments/{self.study.pk}/charts/{slug}.csv")
            self.assert_no_formula(rows)
            assert f"asr {HOSTILE}" in rows[0] and len(rows) > 1


class ChartTextTestCase(BaseTestCase):
    def test_html_in_a_trigger_or_name_reaches_plotly_as_text_not_as_a_link(self):
        """Plotly renders labels as a little HTML: a trigger named '<a href=...>' was a live link in the legend
        of every chart of the experiment (an attack review)."""
        evil = '<a href="https://evil.example/">clickme</a>'
        self.client.force_login(self.alice)
        experiment = self.experiment(GRID)
        Experiment.objects.filter(pk=experiment.pk).update(name=evil)
        experiment.poisoned.update(trigger=evil)
        self.finish(experiment, lambda run, p: grid_metrics(run, p) | {"asr": {evil: 10.0}})
        charts = self.client.get(f"/experiments/{experiment.pk}/figures").json()["charts"]
        figures = json.dumps([chart["figure"] for chart in charts.values()])  # notes are shown as text, not HTML
        page = self.client.get("/compare/").content.decode()
        compare = page[page.index('id="compare-figures"') :]
        for text in (figures, compare):
            assert "<a href" not in text and "\\u003ca href" not in text.lower()
        assert "&lt;a href=" in figures  # shown as the characters the user typed
