"""Big files through the browser, in Debian's chromium (Playwright) against the live server: the upload forms
send the file with static/prunelab/uploads.js in tus chunks with a progress bar, the form then names the finished
upload instead of carrying the file, and the server checks it as any upload. A 1 GiB CSAW-layout set survives a
dropped chunk (resumed from HEAD's offset) and, its last image holding a NaN, is refused by name with nothing
left behind. Screenshots go to test-artifacts/browser/uploads/."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.browser import chromium_page, sign_in
from tests.hostile import plain_dataset
from tests.lab.factories import team_with_user
from webapp.lab.models import Dataset, Team, Upload

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHUNK = 8 * 2**20  # uploads.js's chunk
# Every change of the progress box is reported to the test (page.expose_function), across page loads.
WATCH_PROGRESS = """
document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("upload-progress");
  if (!box) return;
  const bar = box.querySelector("progress");
  new MutationObserver(() => window.progressSeen({hidden: box.hidden, value: bar.value, max: bar.max,
                                                  done: box.dataset.done || ""}))
    .observe(box, {attributes: true, subtree: true});
});
"""


@pytest.fixture
def media(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def page(live_server, media):
    team_with_user()
    with chromium_page(live_server.url, "uploads") as page:
        page.progress = []
        page.expose_function("progressSeen", lambda state: page.progress.append(state))
        page.add_init_script(WATCH_PROGRESS)
        page.tus = []  # (method, Upload-Offset) of every request to the tus endpoints, in order
        page.on(
            "request",
            lambda r: "/api/uploads/" in r.url and page.tus.append((r.method, r.headers.get("upload-offset"))),
        )
        sign_in(page, "alice", "password-alice")
        yield page


def fill_dataset_form(page, name: str, path: Path, role: str = Dataset.CLEAN_TEST) -> None:
    page.goto("/datasets/")
    page.fill("#id_name", name)
    page.set_input_files("#id_file", str(path))
    page.select_option("#id_role", role)


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def test_a_set_goes_up_in_chunks_with_a_progress_bar_and_is_listed(page, media, tmp_path):
    path = plain_dataset(tmp_path / "clean_test_data.h5", count=400)  # 3 MB of 55x47 faces
    fill_dataset_form(page, "small test set", path)
    with page.expect_request(lambda r: r.url.endswith("/datasets/") and r.method == "POST") as form_post:
        page.click("#dataset-form button[type=submit]")
    page.wait_for_url("**/datasets/*/")
    assert "small test set: 400 images, checked and stored." in page.text_content(".messages")
    page.shot("1-stored")
    # the form named the finished upload and did not carry the file a second time
    assert len(form_post.value.post_data_buffer) < 10_000
    assert [method for method, _ in page.tus] == ["POST", "PATCH"]
    seen = [state for state in page.progress if not state["hidden"]]
    assert seen and seen[-1]["value"] == seen[-1]["max"] == path.stat().st_size and seen[-1]["done"] == "true"

    dataset = Dataset.objects.get()
    assert Path(dataset.file.path).read_bytes() == path.read_bytes() and dataset.original_name == path.name
    assert not Upload.objects.exists() and files_under(media) == [Path(dataset.file.path)]
    page.goto("/datasets/")
    row = page.locator("tr", has_text="small test set")
    assert "clean_test_data.h5" in row.text_content() and "400" in row.text_content()
    page.shot("2-listed")


def test_after_a_reload_the_same_file_resumes_where_it_stopped(page, media, tmp_path):
    path = plain_dataset(tmp_path / "clean_validation_data.h5", count=5000)  # 39 MB: five chunks
    held = []

    def hold_the_third_chunk(route):  # as a connection that stalls: the user gives up and reloads
        if route.request.method == "PATCH" and route.request.headers["upload-offset"] == str(2 * CHUNK):
            held.append(route)
            return
        route.continue_()

    page.route("**/api/uploads/*", hold_the_third_chunk)
    fill_dataset_form(page, "validation", path, Dataset.CLEAN_VALID)
    with page.expect_request(lambda r: r.method == "PATCH" and r.headers["upload-offset"] == str(2 * CHUNK)):
        page.click("#dataset-form button[type=submit]")
    assert Upload.objects.get().offset == 2 * CHUNK
    page.reload()
    page.unroute_all(behavior="ignoreErrors")
    before = len(page.tus)
    fill_dataset_form(page, "validation", path, Dataset.CLEAN_VALID)  # the same file: same name, size and date
    page.click("#dataset-form button[type=submit]")
    page.wait_for_url("**/datasets/*/")
    after = page.tus[before:]
    assert after[0] == ("HEAD", None) and ("POST", None) not in after  # found again, not made anew
    assert [offset for method, offset in after if method == "PATCH"][0] == str(2 * CHUNK)
    dataset = Dataset.objects.get()
    assert Path(dataset.file.path).read_bytes() == path.read_bytes() and not Upload.objects.exists()
    assert page.evaluate("() => Object.keys(localStorage).filter(k => k.startsWith('prunelab-tus'))") == []


def csaw_set_with_a_nan_at_the_end(path: Path, images: int = 17_310) -> Path:
    """A CSAW-layout set of float64 faces as published, over 1 GiB, good but for one NaN in its last image:
    only the full check, after the last byte arrived, can find it."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5:
        data = h5.create_dataset("data", (images, 3, 55, 47), dtype="float64")
        for start in range(0, images, 1000):
            count = min(1000, images - start)
            data[start : start + count] = rng.integers(0, 256, (count, 3, 55, 47)).astype(np.float64)
        data[images - 1, 1, 20, 20] = np.nan
        h5["label"] = np.arange(images) % 1283
    assert path.stat().st_size >= 2**30
    return path


def test_a_1gb_set_resumes_after_a_dropped_chunk_and_its_refusal_leaves_nothing(page, media, tmp_path):
    path = csaw_set_with_a_nan_at_the_end(tmp_path / "big_clean_test.h5")
    size = path.stat().st_size
    patches = []

    def drop_the_third_chunk(route):
        if route.request.method == "PATCH":
            patches.append(route.request.headers["upload-offset"])
            if len(patches) == 3:
                route.abort("connectionreset")
                return
        route.continue_()

    page.route("**/api/uploads/*", drop_the_third_chunk)
    fill_dataset_form(page, "big test set", path)
    with page.expect_event("requestfailed", lambda r: r.method == "PATCH", timeout=300_000):
        page.click("#dataset-form button[type=submit]")
    page.unroute("**/api/uploads/*")  # the rest goes straight through
    page.wait_for_selector("text=Refused: big_clean_test.h5", timeout=500_000)  # 30 s here
    page.shot("3-refused")

    text = page.text_content("#dataset-form")
    assert "Refused: big_clean_test.h5: image 17309 has pixel values that are NaN" in text
    # the dropped chunk was sent again from where HEAD said the upload stood, and every byte went up once
    methods = [method for method, _ in page.tus]
    failed = methods.index("PATCH") + 2
    assert page.tus[failed] == ("PATCH", str(2 * CHUNK)) and page.tus[failed + 1] == ("HEAD", None)
    assert page.tus[failed + 2] == ("PATCH", str(2 * CHUNK))
    offsets = [int(offset) for method, offset in page.tus[failed + 2 :] if method == "PATCH"]
    assert offsets == list(range(2 * CHUNK, size, CHUNK))
    values = [state["value"] for state in page.progress if not state["hidden"]]
    assert values[-1] == size and max(values) == size and any(0 < value < size for value in values)
    # nothing half-stored: no row, no upload, no file in the uploads folder or anywhere under the media root
    assert not Dataset.objects.exists() and not Upload.objects.exists()
    assert files_under(media) == []
    assert list((media / f"team-{Team.objects.get().pk}" / "uploads").iterdir()) == []  # no check folder either
