"""Debian's chromium driven by Playwright, for the browser tests (never a downloaded browser)."""

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("PRUNELAB_CHROMIUM", "/usr/bin/chromium"))
# As root in a closed network: no sandbox, and none of chromium's own background connections.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"


@contextmanager
def chromium_page(base_url: str, artifacts: str):
    """A page of a fresh Chromium at `base_url`; screenshots go to test-artifacts/browser/`artifacts`/."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are still synchronous.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    folder = ARTIFACTS / artifacts  # emptied once per session (tests/conftest.py)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(base_url=base_url, viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(60_000)
            page.shot = lambda name: page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
            yield page
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def sign_in(page, username: str, password: str) -> None:
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/experiments/")
