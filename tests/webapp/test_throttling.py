"""Guessing is bounded: wrong passwords lock a username+address pair for a while (django-axes), wrong API
tokens get an address 429 for a while (webapp/core/tokens.py), and neither stops anyone else. Costly requests
(image tests, plan previews, model downloads) are bounded per user (webapp/core/throttles.py)."""

import threading
import time
import uuid
from datetime import timedelta
from unittest import mock

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.core.cache import cache
from django.db.models import F
from django.test import override_settings
from rest_framework.authtoken.models import Token

from tests.webapp.base import BaseTestCase
from webapp.core.throttles import PerUserThrottle
from webapp.core.tokens import WrongTokenThrottle

WRONG = "Token 0123456789abcdef0123456789abcdef01234567"
IPS = ("127.0.0.1", "127.0.0.2")


class SignInLockoutTestCase(BaseTestCase):
    def sign_in(self, password, username="alice", address="127.0.0.1"):
        return self.client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address)

    def test_after_ten_wrong_passwords_the_right_one_waits_out_the_lock(self):
        assert settings.AXES_FAILURE_LIMIT == 10
        for attempt in range(9):
            assert self.sign_in(f"guess-{attempt}").status_code == 200  # the form again, with its error
        locked = self.sign_in("guess-9")
        assert locked.status_code == 429
        refused = self.sign_in("password-alice")
        page = refused.content.decode()
        assert refused.status_code == 429 and "_auth_user_id" not in self.client.session
        assert "Too many failed sign-ins for alice from your address" in page and "about 15 more minutes" in page
        assert 'name="password"' in page  # still the sign-in page, so the user can try again later
        # The lock is for this username from this address only.
        assert self.sign_in("password-bob", username="bob").status_code == 302
        self.client.logout()
        assert self.sign_in("password-alice", address="127.0.0.2").status_code == 302
        self.client.logout()
        # Fifteen minutes after the last failure, the right password works again.
        AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=15, seconds=1))
        assert self.sign_in("password-alice").status_code == 302

    def test_a_right_password_before_the_limit_clears_the_count(self):
        for attempt in range(9):
            self.sign_in(f"guess-{attempt}")
        assert self.sign_in("password-alice").status_code == 302
        self.client.logout()
        for attempt in range(9):
            assert self.sign_in(f"again-{attempt}").status_code == 200
        assert self.sign_in("password-alice").status_code == 302


@override_settings(TOKEN_FAILURE_LIMIT=3, TOKEN_FAILURE_WINDOW_SECONDS=600)
class TokenThrottleTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.good = f"Token {Token.objects.create(user=self.alice).key}"
        self.keys = [WrongTokenThrottle().get_cache_key(mock.Mock(META={"REMOTE_ADDR": a})) for a in IPS]
        cache.delete_many(self.keys)
        self.addCleanup(cache.delete_many, self.keys)

    def get(self, token, address="127.0.0.1", **headers):
        return self.client.get("/api/badnets/", HTTP_AUTHORIZATION=token, REMOTE_ADDR=address, **headers)

    def test_wrong_tokens_get_an_address_429_then_every_token_waits(self):
        assert self.get(self.good).status_code == 200
        for _ in range(3):
            assert self.get(WRONG).status_code == 401
        throttled = self.get(WRONG)
        assert throttled.status_code == 429 and 590 <= int(throttled["Retry-After"]) <= 600
        assert "Too many wrong API tokens from your address (3 within 10 minutes)" in throttled.json()["detail"]
        # Judged before the lookup, so a good token from that address waits too ...
        assert self.get(self.good).status_code == 429
        # ... but not one from elsewhere, nor a session from the same address.
        assert self.get(self.good, address="127.0.0.2").status_code == 200
        self.client.force_login(self.alice)
        assert self.client.get("/api/badnets/", REMOTE_ADDR="127.0.0.1").status_code == 200
        self.client.logout()
        later = time.time() + 601
        with mock.patch.object(WrongTokenThrottle, "timer", lambda self: later):
            assert self.get(self.good).status_code == 200

    def test_a_forwarded_for_header_does_not_make_a_new_address(self):
        for number in range(3):
            self.get(WRONG, HTTP_X_FORWARDED_FOR=f"10.0.0.{number}")
        assert self.get(WRONG, HTTP_X_FORWARDED_FOR="10.0.0.99").status_code == 429

    def test_the_body_guard_and_the_api_count_the_same_failures_once(self):
        assert self.get(WRONG).status_code == 401
        upload = self.client.post("/api/datasets/", {"name": "x"}, HTTP_AUTHORIZATION=WRONG)
        assert upload.status_code == 401 and "Invalid token." in upload.json()["detail"]
        assert self.get(self.good).status_code == 200  # two failures so far, not three
        assert self.get(WRONG).status_code == 401
        throttled = self.client.post("/api/datasets/", {"name": "x"}, HTTP_AUTHORIZATION=self.good)
        assert throttled.status_code == 429 and int(throttled["Retry-After"]) > 0
        assert "Too many wrong API tokens" in throttled.json()["detail"]


@override_settings(REQUEST_RATES={"classify": "2/minute", "preview": "2/minute", "export": "2/minute"})
class RequestRateTestCase(BaseTestCase):
    """Image tests, plan previews and model downloads per user: the page and the API count in one history."""

    def setUp(self):
        super().setUp()
        # counts live in Redis for their window: each test reads the clock at a minute of its own
        self.now = 60.0 * (10**9 + uuid.uuid4().int % 10**9) + 1
        self.enterContext(mock.patch.object(PerUserThrottle, "timer", lambda throttle: self.now))
        self.token = f"Token {Token.objects.create(user=self.alice).key}"
        self.client.force_login(self.alice)

    def test_image_tests_by_page_and_api_share_one_rate_and_other_users_are_not_slowed(self):
        assert self.client.get("/classify/").status_code == 200  # the empty form is not counted
        assert self.client.post("/classify/", {"network": "badnet-1"}).status_code == 400  # counted, refused anyway
        assert (
            self.client.post("/api/classify/", {"network": "badnet-1"}, HTTP_AUTHORIZATION=self.token).status_code
            == 400
        )
        page = self.client.post("/classify/", {"network": "badnet-1"})
        assert page.status_code == 429 and int(page["Retry-After"]) == 59  # the minute's end
        assert "Too many image tests: you may send 2 a minute. Try again in" in page.content.decode()
        assert "PRUNELAB_CLASSIFY_RATE" in page.content.decode()
        api = self.client.post("/api/classify/", {"network": "badnet-1"}, HTTP_AUTHORIZATION=self.token)
        assert api.status_code == 429 and "Too many image tests" in api.json()["detail"]
        self.client.force_login(self.bob)
        assert self.client.post("/classify/", {"network": "badnet-1"}).status_code == 400  # bob's own rate
        self.client.force_login(self.alice)
        self.now += 60  # the next minute
        assert self.client.post("/classify/", {"network": "badnet-1"}).status_code == 400

    def test_previews_and_downloads_are_bounded(self):
        for _ in range(2):
            assert self.client.post("/experiments/plan", {"defense": "fine-prune"}).status_code == 200
        preview = self.client.post("/experiments/plan", {"defense": "fine-prune"})
        assert preview.status_code == 429 and "Too many plan previews" in preview.content.decode()
        for url in ("/runs/999/repaired.keras", "/goodnets/999/bundle.zip"):
            assert self.client.get(url).status_code == 404
        download = self.client.get("/runs/999/repaired-keras2.h5")
        assert download.status_code == 429 and "Too many model downloads" in download.content.decode()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_twenty_image_tests_at_once_get_exactly_the_rate_through(settings):
    """DRF's read-then-write history let all of 20 requests at once through (68 in a minute of a limit of 30);
    the count is one atomic increment now."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from tests.lab.factories import team_with_user

    settings.REQUEST_RATES = {**settings.REQUEST_RATES, "classify": "5/minute"}
    _, user = team_with_user("racers", f"racer-{uuid.uuid4().hex[:8]}")
    now = 60.0 * (10**9 + uuid.uuid4().int % 10**9) + 1
    barrier, answers = threading.Barrier(20), []

    def ask():
        client = Client()
        client.force_login(get_user_model().objects.get(pk=user.pk))
        barrier.wait()
        answers.append(client.post("/classify/", {"network": "badnet-1"}).status_code)
        connection.close()

    with mock.patch.object(PerUserThrottle, "timer", lambda throttle: now):
        threads = [threading.Thread(target=ask) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert sorted(answers) == [400] * 5 + [429] * 15
