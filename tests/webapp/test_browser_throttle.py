"""A rate's refusal in a real browser: the planner's preview (an htmx partial) past the user's preview rate shows
the refusal's words where the preview was, instead of silently keeping a stale plan."""

import uuid
from unittest import mock

import pytest

from tests.browser import chromium_page, sign_in
from tests.defenses.tiny import tiny_badnet_files
from tests.lab.factories import experiment_row, team_with_user
from webapp.core.throttles import PerUserThrottle

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_preview_past_the_rate_says_so_in_place(live_server, settings, tmp_path):
    settings.REQUEST_RATES = {**settings.REQUEST_RATES, "preview": "3/minute"}
    team, user = team_with_user()
    template = experiment_row(team, user, tiny_badnet_files(tmp_path), {"defense": "fine-prune"})
    minute = 60.0 * (10**9 + uuid.uuid4().int % 10**9) + 1  # counts live in Redis: a minute of this test's own
    with (
        mock.patch.object(PerUserThrottle, "timer", lambda throttle: minute),
        chromium_page(live_server.url, "throttle") as page,
    ):
        sign_in(page, "alice", "password-alice")
        page.goto(f"/experiments/new/?badnet={template.badnet.pk}")
        page.wait_for_selector("#plan:not(:empty)")  # the first preview, on load
        for epochs in ("2", "3", "4"):
            page.fill("#id_epochs", epochs)
            page.wait_for_timeout(700)  # past the preview's 400 ms debounce: one request each
        page.wait_for_selector("#plan:has-text('Too many plan previews: you may send 3 a minute')")
        page.shot("preview-refused")
