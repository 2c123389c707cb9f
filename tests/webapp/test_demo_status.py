"""The demo team exists before its data, and its members see the preparation's step until it is ready."""

import io
import tempfile

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import override_settings

from tests.webapp.base import BaseTestCase
from webapp.lab.demo import read_status, write_status
from webapp.lab.models import Team


class DemoStatusTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.enterContext(override_settings(VAR_DIR=self.enterContext(tempfile.TemporaryDirectory())))
        call_command("ensure_demo_user", stdout=io.StringIO())
        self.demo = get_user_model().objects.get(username="demo")
        self.client.force_login(self.demo)

    def test_the_demo_login_is_an_ordinary_account_with_a_random_password_made_once(self):
        from pathlib import Path

        from django.conf import settings

        kept = Path(settings.VAR_DIR) / "demo-login.txt"
        password = kept.read_text().split("password: ")[1].strip()
        assert len(password) >= 16 and kept.stat().st_mode & 0o777 == 0o600
        assert self.demo.check_password(password) and not (self.demo.is_staff or self.demo.is_superuser)
        out = io.StringIO()
        call_command("ensure_demo_user", stdout=out)  # a second start: nothing reset, nothing printed
        assert get_user_model().objects.get(username="demo").check_password(password)
        assert password not in out.getvalue()

    def test_an_earlier_versions_published_superuser_login_is_demoted_and_given_a_new_password(self):
        self.demo.set_password("prunelab-demo")
        self.demo.is_staff = self.demo.is_superuser = True
        self.demo.save()
        out = io.StringIO()
        call_command("ensure_demo_user", stdout=out)
        demo = get_user_model().objects.get(username="demo")
        assert not demo.check_password("prunelab-demo") and not (demo.is_staff or demo.is_superuser)
        assert "given a new password" in out.getvalue()

    def test_the_demo_user_has_a_team_before_any_data_exists(self):
        assert Team.objects.get(name="demo").membership_set.get(user=self.demo).is_admin
        page = self.client.get("/experiments/")
        assert page.status_code == 200 and b"You belong to no team" not in page.content
        assert b'id="demo-status"' not in page.content  # nothing is being prepared

    def test_every_page_shows_the_step_and_the_partial_polls_until_ready(self):
        write_status(3, 6, "training the lipstick BadNet (4 of 15 epochs)")
        for url in ("/experiments/", "/badnets/", "/datasets/"):
            text = self.client.get(url).content.decode()
            assert "step 3 of 6</b>, training the lipstick BadNet (4 of 15 epochs)" in text, url
            assert 'hx-get="/demo-status"' in text
        assert self.client.get("/demo-status").status_code == 200
        write_status(6, 6, "ready", done=True)
        done = self.client.get("/demo-status")
        assert done.status_code == 286 and b"The demo data is ready" in done.content  # 286: htmx stops polling
        assert b'id="demo-status"' not in self.client.get("/experiments/").content

    def test_a_failure_is_said_and_polling_stops(self):
        write_status(0, 6, "stopped", error="MemoryError: ")
        response = self.client.get("/demo-status")
        assert response.status_code == 286 and b"could not be made (MemoryError" in response.content

    def test_other_teams_never_see_it(self):
        write_status(2, 6, "training the sunglasses BadNet (1 of 15 epochs)")
        self.client.force_login(self.alice)
        assert b"demo-status" not in self.client.get("/experiments/").content
        assert self.client.get("/demo-status").content == b""
        assert read_status()["step"] == 2
