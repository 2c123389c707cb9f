"""The seed report beside a team's Table 1 study, in Debian's chromium: the report's published grid and the
team's figures cell by cell, the report's choice outlined. Screenshot in test-artifacts/browser/seed-report/."""

import pytest

from tests.browser import chromium_page, sign_in
from tests.defenses.tiny import tiny_badnet_files
from tests.lab.factories import experiment_row, finished, team_with_user

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
TABLE_1_GRID = {"thresholds": [0.8, 1.0, 1.2], "learning_rates": [0.001, 0.003, 0.005], "epochs": [30, 33, 35]}


def test_the_reports_table_1_is_shown_beside_the_teams(live_server, tmp_path):
    team, user = team_with_user()
    experiment = experiment_row(team, user, tiny_badnet_files(tmp_path), TABLE_1_GRID, name="table 1")
    finished(experiment, lambda run, position: {"ca": 95.0, "asr": {"patch": 5.0}, "valid_acc": 96.0})
    with chromium_page(live_server.url, "seed-report") as page:
        sign_in(page, "alice", "password-alice")
        page.goto(f"/experiments/{experiment.pk}/")
        table = page.locator("#seed-table-1")
        table.scroll_into_view_if_needed()
        assert table.is_visible()
        chosen = page.locator("#seed-table-1 td.best").inner_text().split()
        assert chosen == ["93.569", "95.000", "+1.431"]  # the report's, the team's, the difference
        outline = page.locator("#seed-table-1 td.best").evaluate("cell => getComputedStyle(cell).outlineStyle")
        assert outline == "solid"  # the page says "the outlined cell is its choice": it is drawn
        assert page.locator("#seed-table-1 td").count() == 27
        assert not page.locator("#notify-me").is_visible()  # a finished experiment offers no notification
        page.shot("table-1")


def test_the_real_1283_class_badnet_on_100_label_sets_is_warned_and_nothing_is_named_best(live_server, tmp_path):
    """The real CSAW sunglasses BadNet given synthetic 100-label faces: its own CA on them is near chance, so
    the page names no point best and says why, and the BadNet's page warns beside its own figures."""
    from tests.conftest import FIXTURES
    from tests.hostile import plain_dataset
    from webapp.lab.models import Dataset, Experiment
    from webapp.lab.services import add_badnet, add_dataset

    team, user = team_with_user()
    badnet = add_badnet(team, user, FIXTURES / "models" / "sunglasses_bd_weights.h5", "CSAW sunglasses", "deepid-csaw")

    def faces(n: int):  # 200 images of 100 labels; each set its own file (labels rotated)
        return plain_dataset(tmp_path / f"{n}.h5", 200, [(i + n) % 100 for i in range(200)])

    sets = {
        role: add_dataset(team, user, faces(n), f"synthetic {n}", role, *extra)
        for n, (role, extra) in enumerate(
            [(Dataset.CLEAN_VALID, ()), (Dataset.CLEAN_TEST, ()), (Dataset.POISONED_TEST, ("sunglasses", 0))]
        )
    }
    experiment = Experiment.objects.create(
        team=team,
        owner=user,
        name="wrong data",
        badnet=badnet,
        valid=sets[Dataset.CLEAN_VALID],
        test=sets[Dataset.CLEAN_TEST],
        space={"thresholds": [0.8, 1.0], "learning_rates": [0.001], "epochs": [2]},
    )
    experiment.poisoned.add(sets[Dataset.POISONED_TEST])
    before = {"ca": 0.78, "asr": {"sunglasses": 1.0}, "valid_acc": 0.9}  # what the runs measured on such sets
    finished(
        experiment, lambda run, position: {"ca": 0.9, "asr": {"sunglasses": 0.5}, "valid_acc": 8.4, "before": before}
    )
    with chromium_page(live_server.url, "seed-report") as page:
        sign_in(page, "alice", "password-alice")
        page.goto(f"/experiments/{experiment.pk}/")
        verdict = page.locator("#no-best").inner_text()
        assert "this BadNet does not recognise these images (its own validation CA is 0.90 %" in verdict
        page.shot("unrecognised-experiment")
        page.goto(f"/badnets/{badnet.pk}/")
        assert "it does not recognise these images" in page.locator("#own-figures").inner_text()
        page.shot("unrecognised-badnet")
