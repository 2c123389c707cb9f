"""Detection as a user meets it, in Debian's chromium (Playwright) against the live server and a real worker:
a Neural Cleanse scan started from a BadNet's page flags the planted target and shows its reversed trigger;
STRIP added to a GoodNet answers N for a triggered image on the image test, and the downloaded bundle's
eval.py gives the page's answers. Screenshots go to test-artifacts/browser/detection/."""

import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.browser import chromium_page, sign_in
from tests.defenses.tiny import add_trigger, palette_badnet, palette_data, tiny_badnet_files, tiny_data, write_dataset
from tests.lab.factories import team_with_user
from webapp.lab.composition import compose_from_upload
from webapp.lab.models import Dataset
from webapp.lab.services import add_badnet, add_dataset

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def celery_worker(module_worker):
    return module_worker  # one worker for this module's tests


@pytest.fixture
def page(live_server):
    team_with_user()
    with chromium_page(live_server.url, "detection") as page:
        sign_in(page, "alice", "password-alice")
        yield page


def test_a_scan_from_the_badnet_page_flags_the_declared_target_with_its_reversed_trigger(page, celery_worker, tmp_path):
    from webapp.lab.models import Team

    team, user = Team.objects.get(), Team.objects.get().members.get()
    model, (pixels, labels) = palette_badnet(24, target=0, seed=0)
    model.save(tmp_path / "palette.keras")
    badnet = add_badnet(team, user, tmp_path / "palette.keras", "palette")
    valid_file = write_dataset(tmp_path / "v.h5", pixels, labels)
    valid = add_dataset(team, user, valid_file, "palette valid", Dataset.CLEAN_VALID)
    test, _ = palette_data(60, 24, seed=5)
    patch = write_dataset(tmp_path / "p.h5", add_trigger(test), [0] * 60)
    add_dataset(team, user, patch, "patch test", Dataset.POISONED_TEST, "patch", 0, badnet=badnet)  # its own

    page.goto(f"/badnets/{badnet.pk}/")
    page.select_option("#scan-dataset", str(valid.pk))
    page.click("#scan-form button[type=submit]")
    page.wait_for_selector("#scans .scan[data-status=queued], #scans .scan[data-status=running]")
    page.wait_for_selector("#scans .scan[data-status=done]", timeout=240_000)  # no reload: the part polls
    verdict = page.text_content(".scan-verdict")
    assert "label 0 (the declared target of patch)" in verdict and "not flagged" not in verdict
    assert page.locator(".scan-table tr.best td").first.text_content() == "0"
    sizes = page.locator("figure.reversed[data-label='0'] img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert sizes == [10, 10, 10]  # mask, trigger and a stamped image, at the BadNet's 12x10 input
    page.shot("1-scan")


def test_strip_makes_a_goodnet_answer_n_for_a_triggered_image_and_the_bundle_agrees(page, celery_worker, tmp_path):
    from webapp.lab.models import Team

    team, user = Team.objects.get(), Team.objects.get().members.get()
    files = tiny_badnet_files(tmp_path / "tiny")
    badnet = add_badnet(team, user, files["model"], "tiny")
    valid_file = write_dataset(tmp_path / "v.h5", *tiny_data(300, seed=1))
    valid = add_dataset(team, user, valid_file, "v300", Dataset.CLEAN_VALID)
    test = add_dataset(team, user, files["test"], "test", Dataset.CLEAN_TEST)
    patch = add_dataset(team, user, files["poisoned"], "patch", Dataset.POISONED_TEST, trigger="patch", target=0)
    # the repaired network is the BadNet itself: the two never disagree, so only STRIP can answer N
    goodnet = compose_from_upload(badnet, files["model"], "same.keras", "strip only", user)

    page.goto(f"/goodnets/{goodnet.pk}/")
    assert "No STRIP yet" in page.text_content("#detector") and "STRIP" not in page.text_content("#goodnet-rule")
    page.select_option("#id_valid", str(valid.pk))
    page.fill("#id_frr", "5")
    page.select_option("#id_test", str(test.pk))
    page.check(f"input[name=poisoned][value='{patch.pk}']")
    page.click("#strip-form button[type=submit]")
    page.wait_for_selector("#detector[data-strip=done]", timeout=240_000)
    assert "or when STRIP's entropy on the BadNet is under" in page.text_content("#goodnet-rule")
    page.wait_for_selector('#chart-roc-1[data-drawn="true"]')
    rows = page.locator("#detector-table tr").all_text_contents()
    assert any(row.startswith("STRIP alone") for row in rows)
    page.shot("2-strip")

    clean = tiny_data(6, seed=9)[0].round()
    images = [tmp_path / f"clean-{i}.png" for i in range(3)] + [tmp_path / f"patch-{i}.png" for i in range(3)]
    for path, pixels in zip(images, np.concatenate([clean[:3], add_trigger(clean[:3])]), strict=True):
        Image.fromarray(pixels.astype("uint8")).save(path)
    page.goto(f"/classify/?network=goodnet-{goodnet.pk}")
    page.set_input_files("#id_images", [str(path) for path in images])
    page.click("#classify-form button[type=submit]")
    page.wait_for_selector("#answers")
    answers = [int(x) for x in page.locator("#answers .answer").evaluate_all("a => a.map(e => e.dataset.label)")]
    assert answers[3:] == [4, 4, 4] and all(a < 4 for a in answers[:3]), answers
    assert page.locator(".strip-entropy", has_text="poisoned by STRIP").count() == 3
    page.shot("3-classify")

    page.goto(f"/goodnets/{goodnet.pk}/")
    with page.expect_download() as download:
        page.click("text=Download bundle")
    archive = tmp_path / "bundle.zip"
    download.value.save_as(archive)
    with zipfile.ZipFile(archive) as bundle:
        bundle.extractall(tmp_path / "bundle")
    folder = next((tmp_path / "bundle").iterdir())
    assert (folder / "strip_overlays.npy").exists()
    done = subprocess.run([sys.executable, "eval.py", *map(str, images)], cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-400:]
    assert done.stdout.splitlines() == [f"{path}\t{answer}" for path, answer in zip(images, answers, strict=True)]
