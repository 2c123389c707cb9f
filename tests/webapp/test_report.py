"""An experiment's study report: one page with what was run (BadNet, defense, parameters, sets, held-out share,
floor), the rule and its chosen point, every point, the charts and the glossary, printable (the site's chrome
hidden) or saved as a PDF by the browser."""

from tests.webapp.base import BaseTestCase
from tests.webapp.test_experiment import GRID, grid_metrics


class ReportTestCase(BaseTestCase):
    def test_the_report_says_what_was_run_and_what_was_chosen(self):
        self.client.force_login(self.alice)
        experiment = self.experiment(GRID)
        self.finish(experiment, grid_metrics)
        page = self.client.get(f"/experiments/{experiment.pk}/report").content.decode()
        definition = page.split('id="definition"')[1].split("</table>")[0]
        assert "blue-badnet" in definition and "Fine-Pruning" in definition
        assert "thresholds [0.5, 1.0]" in definition and "learning_rates [0.001, 0.01]" in definition
        assert "blue-valid (30 images)" in definition and "4, 100% done" in definition
        assert 'id="selection">Best:' in page and 'id="points"' in page and page.count('<tr class="best">') == 1
        assert 'data-figures="/experiments/' in page and '<details class="glossary"' in page
        assert 'id="print-report"' in page
        experiment_page = self.client.get(f"/experiments/{experiment.pk}/").content.decode()
        assert f'href="/experiments/{experiment.pk}/report" id="report-link"' in experiment_page
        self.client.force_login(self.bob)
        assert self.client.get(f"/experiments/{experiment.pk}/report").status_code == 404
