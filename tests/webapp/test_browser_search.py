"""A search in a real browser: Playwright drives Debian's chromium against the live server and a real worker. A
user asks for a fine-pruning search within a small budget on the preview, watches the trials arrive live, and
reads what the choice was read on (held-out images) beside the trials, their runs and the search's charts."""

import re
from pathlib import Path

import pytest

from tests.browser import chromium_page, sign_in
from tests.defenses.tiny import tiny_badnet_files
from tests.lab.factories import experiment_row, team_with_user
from webapp.lab.models import Dataset, Experiment

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def page(live_server):
    with chromium_page(live_server.url, "search") as page:
        yield page


def test_a_search_runs_live_and_says_what_was_held_out(page, celery_worker, tmp_path):
    team, user = team_with_user()
    template = experiment_row(team, user, tiny_badnet_files(tmp_path), {"defense": "fine-prune"})
    poisoned = template.poisoned.get()
    sign_in(page, "alice", "password-alice")

    page.goto(f"/experiments/new/?badnet={template.badnet.pk}")
    page.fill("#id_name", "searched")
    page.select_option("#id_valid", str(template.valid.pk))
    page.select_option("#id_test", str(template.test.pk))
    page.check(f"input[name=poisoned][value='{poisoned.pk}']")
    page.fill("#id_holdout", "25")
    page.fill("#id_budget", "12")
    page.wait_for_selector("#plan-search:has-text('within 12 fine-tuning-epoch units')")
    plan = page.text_content("#plan-search")  # 12 units reach the 3- and 9-epoch rungs only, and it says so
    assert "trains to 3, 9 epochs" in plan and "no trial can reach 27 epochs" in plan
    page.shot("1-preview")
    page.click("#experiment-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/experiments/\d+/$"))
    page.wait_for_selector('#progress[data-finished="true"]', timeout=300_000)
    # it ended while the page was open: the tab's title says so (and a notification, had the user asked)
    page.wait_for_function("document.title.startsWith('Finished · searched')")
    assert page.evaluate("document.body.dataset.announced") == "searched has finished."
    page.wait_for_selector('#chart-search[data-drawn="true"]')
    page.shot("2-search")

    experiment = Experiment.objects.get(name="searched")
    assert experiment.space["holdout"] == 0.25 and experiment.search["status"] == "done"
    valid = Dataset.objects.get(pk=template.valid.pk).count
    held = round(0.25 * valid)
    assert f"held-out {held} of {valid} clean validation images" in page.text_content("#held-out")
    assert f"held-out {held} of {valid}" in page.text_content("#selection")
    trials = page.locator("#trials tr.trial")
    assert trials.count() == len(experiment.search["trials"]) >= 2
    first_run = trials.first.locator("a").first
    assert first_run.get_attribute("href").startswith("/runs/")
    with page.expect_download() as download:  # a vector figure, drawn by plotly.js in the page
        page.click("#chart-search >> xpath=.. >> .download-svg")
    svg = Path(download.value.path()).read_text()
    assert svg.startswith("<svg") and "</svg>" in svg and download.value.suggested_filename == "search.svg"
    with page.expect_download() as download:  # the same figure as a PDF, drawn on the server by Kaleido
        page.click("#chart-search >> xpath=.. >> .download-pdf")
    pdf = Path(download.value.path()).read_bytes()
    assert pdf.startswith(b"%PDF-") and download.value.suggested_filename == f"experiment-{experiment.pk}-search.pdf"
    spent = page.evaluate("() => document.getElementById('chart-search').data[0].x")
    assert spent[-1] == experiment.search["spent"] <= 12
