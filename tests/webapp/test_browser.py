"""The dashboard in a real browser: Playwright drives Debian's chromium against the live server, with a real
Celery worker process and the real Redis. One user's whole path: sign in, upload the real sunglasses BadNet
and synthetic datasets, submit a small experiment, watch it finish live, read the charts' numbers, compare
two runs, compose a GoodNet from the real files and test real face crops. Screenshots of every step are
written to test-artifacts/browser/."""

import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from defenses.synthetic import make_identities, render_set, write_csaw_dataset
from tests.browser import chromium_page
from tests.conftest import FIXTURES
from webapp.lab.models import Dataset, Experiment, GoodNet, Membership, Team
from webapp.lab.results import experiment_rows

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MODELS, IMAGES = FIXTURES / "models", FIXTURES / "images"


@pytest.fixture
def page(live_server):
    with chromium_page(live_server.url, "path") as page:
        yield page


def shot(page, name: str) -> None:
    page.shot(name)


@pytest.fixture
def synthetic_sets(tmp_path) -> dict[str, Path]:
    """Small synthetic sets at the real networks' 55x47 size (identities are labels 0..9)."""
    people = make_identities(10, seed=7)
    sets = {
        "clean_validation": render_set(people, 6, 7, "valid"),
        "clean_test": render_set(people, 4, 7, "test"),
        "sunglasses_poisoned_test": render_set(people, 0, 7, "poison-test", "sunglasses", 0, count=30),
    }
    return {name: write_csaw_dataset(tmp_path / f"{name}.h5", *arrays) for name, arrays in sets.items()}


def upload_dataset(page, name: str, path: Path, role: str, trigger: str = "") -> None:
    page.goto("/datasets/")
    page.fill("#id_name", name)
    page.set_input_files("#id_file", str(path))
    page.select_option("#id_role", role)
    if trigger:
        page.fill("#id_trigger", trigger)
        page.fill("#id_target", "0")
    page.click("#dataset-form button[type=submit]")
    page.wait_for_url("**/datasets/*/")


def test_a_users_whole_path_through_the_dashboard(page, celery_worker, synthetic_sets):
    user = get_user_model().objects.create_user("alice", password="password-alice")
    Membership.objects.create(user=user, team=Team.objects.create(name="blue"), is_admin=True)

    page.goto("/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "password-alice")
    page.click("button[type=submit]")
    page.wait_for_url("**/experiments/")

    page.goto("/badnets/")
    page.fill("#id_name", "sunglasses")
    page.set_input_files("#id_file", str(MODELS / "sunglasses_bd_weights.h5"))
    page.select_option("#id_arch", "deepid-csaw")
    page.click("#badnet-form button[type=submit]")
    page.wait_for_url("**/badnets/*/")
    assert page.text_content("#n-classes") == "1283"
    shot(page, "1-badnet")

    upload_dataset(page, "synthetic valid", synthetic_sets["clean_validation"], "clean-valid")
    upload_dataset(page, "synthetic test", synthetic_sets["clean_test"], "clean-test")
    upload_dataset(
        page, "synthetic sunglasses", synthetic_sets["sunglasses_poisoned_test"], "poisoned-test", "sunglasses"
    )
    assert page.locator("img.preview").evaluate("img => img.naturalWidth") > 0
    shot(page, "2-dataset")

    page.goto("/experiments/new/")
    page.fill("#id_name", "first look")
    page.select_option("#id_badnet", label="sunglasses")
    page.select_option("#id_valid", str(Dataset.objects.get(name="synthetic valid").pk))
    page.select_option("#id_test", str(Dataset.objects.get(name="synthetic test").pk))
    page.check("text=synthetic sunglasses")
    page.fill("#id_thresholds", "0.5, 1.0")
    page.fill("#id_epochs", "1")
    page.wait_for_selector("#plan-summary:has-text('2 points from 2 runs')")  # htmx preview, before submitting
    shot(page, "3-new-experiment")
    page.click("#experiment-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/experiments/\d+/$"))
    page.wait_for_selector('#progress[data-finished="true"]', timeout=300_000)  # polled live by htmx
    page.wait_for_selector('#chart-vs-threshold[data-drawn="true"]')
    shot(page, "4-experiment")

    experiment = Experiment.objects.get(name="first look")
    assert set(experiment.runs.values_list("status", flat=True)) == {"done"}
    rows = {row["threshold"]: row for row in experiment_rows(experiment)}
    drawn = page.evaluate("""() => document.getElementById('chart-vs-threshold').data
                                     .map(t => ({name: t.name, x: t.x, y: t.y}))""")
    ca = next(trace for trace in drawn if trace["name"].startswith("CA"))
    asr = next(trace for trace in drawn if trace["name"].startswith("ASR sunglasses"))
    assert ca["x"] == [0.5, 1.0] and ca["y"] == [rows[0.5]["ca"], rows[1.0]["ca"]]
    assert asr["y"] == [rows[0.5]["asr sunglasses"], rows[1.0]["asr sunglasses"]]

    page.goto("/compare/")
    for run in experiment.runs.all():
        page.check(f"input[name=run][value='{run.pk}']")
    page.click("#compare-form button[type=submit]")
    page.wait_for_selector('#chart-pareto[data-drawn="true"]')
    assert len(page.evaluate("() => document.getElementById('chart-pareto').data[0].x")) == 2
    shot(page, "5-compare")

    page.goto("/goodnets/")
    page.fill("#id_upload-name", "repaired sunglasses")
    page.select_option("#id_upload-badnet", label="sunglasses")
    page.set_input_files("#id_upload-file", str(MODELS / "keras2_full_model_repaired_sunglasses.h5"))
    page.click("#goodnet-upload button[type=submit]")
    page.wait_for_selector("text=GoodNet repaired sunglasses composed")
    shot(page, "6-goodnet")

    page.goto("/classify/")
    page.select_option("#id_network", f"goodnet-{GoodNet.objects.get(name='repaired sunglasses').pk}")
    page.set_input_files("#id_images", [str(IMAGES / "sun_0_label=0.png"), str(IMAGES / "cl_0_label=43.png")])
    page.click("#classify-form button[type=submit]")
    page.wait_for_selector("#answers")
    assert page.locator(".answer").all_text_contents() == ["1283", "43"]
    shot(page, "7-classify")
