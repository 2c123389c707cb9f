"""CSV downloads open in spreadsheets: a user-given name that starts with a formula character is neutralised
(OWASP: a leading single quote) in every CSV the app writes; numbers, negative ones too, stay numbers."""

import csv
import io

from tests.webapp.base import BaseTestCase
from tests.webapp.test_experiment import GRID, grid_metrics
from webapp.lab.charts import csv_cell, csv_text

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
