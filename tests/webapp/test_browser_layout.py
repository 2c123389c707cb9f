"""No page is wider than its window at 800 px: every route of the URLconf that renders an HTML page (with the
rows of the isolation test: a finished experiment, a leaderboard, a GoodNet with detector figures, long
names) is opened in Debian's chromium at 800 px and its document's width measured; tables scroll inside
their own box. Screenshots of every page at 800 px go to test-artifacts/browser/layout/."""

import pytest
from django.urls import reverse

from tests.browser import chromium_page, sign_in
from tests.webapp import test_isolation as isolation
from webapp.lab.models import BadNet, Dataset

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
WIDTH = 800


@pytest.fixture
def rows():
    """The isolation test's rows (tests/webapp/test_isolation.py), made outside a TestCase: the contexts it
    enters stay open for the test."""
    held = []
    maker = isolation.IsolationTestCase()  # not imported by name: pytest would run its tests here
    maker.enterContext = lambda context: (held.append(context), context.__enter__())[1]
    maker.setUp()
    long = "a BadNet with a long name from a vendor's delivery note, version 2020-11-03 final"
    BadNet.objects.filter(pk=maker.exp.badnet.pk).update(name=long)
    Dataset.objects.filter(pk=maker.exp.valid.pk).update(name="clean validation set of the vendor, 900 faces")
    yield maker
    for context in reversed(held):
        context.__exit__(None, None, None)


def html_pages(rows) -> list[str]:
    """Every GET route outside the API, with the rows' ids, and the team's list pages."""
    routes = isolation.ROUTES.items()
    urls = [reverse(name, kwargs=kwargs(rows)) for name, (method, kwargs) in routes if method == "get"]
    urls += [reverse(name) for name in isolation.TEAM_LISTS if not name.startswith("api:") and name != "plan-preview"]
    return sorted(url for url in urls if not url.startswith("/api/"))


def test_no_page_is_wider_than_800_px(live_server, rows):
    measured, too_wide = [], []
    with chromium_page(live_server.url, "layout") as page:
        page.set_viewport_size({"width": WIDTH, "height": 900})
        sign_in(page, "alice", "password-alice")
        for url in html_pages(rows):
            answer = page.request.get(url)  # with the page's session; a download is not navigated to
            if "text/html" not in answer.headers.get("content-type", "") or "<header" not in answer.text():
                continue  # a download, a chart's CSV, an htmx partial
            page.goto(url)
            page.wait_for_load_state("networkidle")
            width = page.evaluate("document.documentElement.scrollWidth")
            measured.append(url)
            page.shot(url.strip("/").replace("/", "_") or "root")
            if width > WIDTH:
                too_wide.append((url, width))
    assert len(measured) >= 20, measured  # the walk reached the pages
    assert too_wide == [], f"pages wider than {WIDTH} px: {too_wide}"
