"""Sign-in and teams: create a team, invite and remove members (admins only), switch the current team."""

import tempfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token

from tests.defenses.tiny import tiny_data, write_dataset
from tests.webapp.base import BaseTestCase
from webapp.lab.models import Dataset, Invitation, Membership, Team


class TeamsTestCase(BaseTestCase):
    def test_sign_in_takes_a_user_to_the_experiments(self):
        response = self.client.post("/login/", {"username": "alice", "password": "password-alice"})
        assert response.status_code == 302 and response["Location"] == "/experiments/"
        wrong = self.client.post("/login/", {"username": "alice", "password": "nope"})
        assert wrong.status_code == 200 and b"Please enter a correct username and password" in wrong.content

    def test_a_user_without_a_team_is_asked_to_create_one(self):
        carol = get_user_model().objects.create_user("carol", password="password-carol")
        self.client.force_login(carol)
        assert self.client.get("/badnets/")["Location"] == "/teams/"
        response = self.client.post("/teams/", {"name": "green"})
        green = Team.objects.get(name="green")
        assert response["Location"] == f"/teams/{green.pk}/"
        assert Membership.objects.get(team=green).is_admin and self.client.get("/badnets/").status_code == 200

    def test_an_admin_invites_the_invitee_accepts_and_the_admin_removes(self):
        self.client.force_login(self.alice)
        invited = self.client.post(f"/teams/{self.blue.pk}/", {"username": "bob"}, follow=True)
        unknown = self.client.post(f"/teams/{self.blue.pk}/", {"username": "nobody"}, follow=True)
        # the same answer whether the account exists: the form tells nobody who has an account
        assert b"it is invited to blue: it joins when it accepts" in invited.content
        assert b"it is invited to blue: it joins when it accepts" in unknown.content
        assert not Membership.objects.filter(team=self.blue, user=self.bob).exists()
        assert b"bob" not in self.client.get(f"/teams/{self.blue.pk}/").content  # no list tells who exists
        self.client.force_login(self.bob)
        assert b"invited you (alice" in self.client.get("/teams/").content
        self.client.post(f"/teams/{self.blue.pk}/invitation", {"answer": "accept"})
        assert Membership.objects.filter(team=self.blue, user=self.bob, is_admin=False).exists()
        assert not Invitation.objects.exists()
        self.client.force_login(self.alice)
        self.client.post(f"/teams/{self.blue.pk}/members/{self.bob.pk}/remove")
        assert not Membership.objects.filter(team=self.blue, user=self.bob).exists()

    def test_a_stranger_cannot_put_a_user_into_their_team(self):
        """The attack review's hijack: mallory made team 'aaa' (first by name) and added alice, whose next
        uploads then went to mallory's team. Now alice is only invited, and her default stays her own."""
        mallory = get_user_model().objects.create_user("mallory", password="password-mallory")
        self.client.force_login(mallory)
        self.client.post("/teams/", {"name": "aaa"})
        aaa = Team.objects.get(name="aaa")
        self.client.post(f"/teams/{aaa.pk}/", {"username": "alice"})
        assert not Membership.objects.filter(team=aaa, user=self.alice).exists()
        self.client.force_login(self.alice)
        assert b"blue" in self.client.get("/badnets/").content and self.client.get("/badnets/").status_code == 200
        token = {"HTTP_AUTHORIZATION": f"Token {Token.objects.create(user=self.alice).key}"}
        folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        path = write_dataset(folder / "v.h5", *tiny_data(12))
        form = {"name": "v", "role": Dataset.CLEAN_VALID, "file": SimpleUploadedFile("v.h5", path.read_bytes())}
        assert self.client.post("/api/datasets/", form, **token).json()["team"] == self.blue.pk
        self.client.post(f"/teams/{aaa.pk}/invitation", {"answer": "decline"})
        assert not Invitation.objects.exists() and not Membership.objects.filter(team=aaa, user=self.alice).exists()

    def test_the_default_team_is_the_first_joined_not_the_first_by_name(self):
        Membership.objects.create(team=Team.objects.create(name="aardvark"), user=self.alice, is_admin=True)
        self.client.force_login(self.alice)
        page = self.client.get("/badnets/").content.decode()
        assert 'title="teams">blue<' in page

    def test_a_member_leaves_but_the_last_admin_stays(self):
        Membership.objects.create(team=self.blue, user=self.bob)
        self.client.force_login(self.bob)
        self.client.post(f"/teams/{self.blue.pk}/leave")
        assert not Membership.objects.filter(team=self.blue, user=self.bob).exists()
        self.client.force_login(self.alice)
        refused = self.client.post(f"/teams/{self.blue.pk}/leave", follow=True)
        assert b"last admin" in refused.content and Membership.objects.filter(team=self.blue, user=self.alice).exists()

    def test_a_member_who_is_not_admin_cannot_invite_or_remove(self):
        Membership.objects.create(team=self.blue, user=self.bob)
        self.client.force_login(self.bob)
        assert self.client.post(f"/teams/{self.blue.pk}/", {"username": "bob"}).status_code == 404
        assert self.client.post(f"/teams/{self.blue.pk}/members/{self.alice.pk}/remove").status_code == 404
        assert Membership.objects.filter(team=self.blue).count() == 2

    def test_the_last_admin_stays(self):
        self.client.force_login(self.alice)
        self.client.post(f"/teams/{self.blue.pk}/members/{self.alice.pk}/remove")
        assert Membership.objects.filter(team=self.blue, user=self.alice, is_admin=True).exists()

    def test_switching_team_changes_what_the_lists_show(self):
        Membership.objects.create(team=self.red, user=self.alice)
        self.badnet(self.red, "red-only-badnet")
        self.client.force_login(self.alice)
        assert b"red-only-badnet" not in self.client.get("/badnets/").content  # blue comes first
        self.client.post(f"/teams/{self.red.pk}/switch", {"next": "https://evil.example/"})
        assert b"red-only-badnet" in self.client.get("/badnets/").content

    def test_switching_goes_only_to_a_path_of_this_site(self):
        self.client.force_login(self.alice)
        for target, expected in [(t, "/experiments/") for t in ("abc", "https://evil.example/", "//evil.example/")]:
            response = self.client.post(f"/teams/{self.blue.pk}/switch", {"next": target})
            assert response.status_code == 302 and response["Location"] == expected, target
        assert self.client.post(f"/teams/{self.blue.pk}/switch", {"next": "/badnets/"})["Location"] == "/badnets/"

    def test_an_id_too_large_for_the_database_is_a_404(self):
        self.client.force_login(self.alice)
        huge = "1" * 23
        for path in [f"/teams/{huge}/", f"/teams/{huge}/switch", f"/teams/{huge}/leave", f"/experiments/{huge}/"]:
            assert self.client.post(path).status_code == 404, path

    def test_an_api_token_is_made_on_request_and_its_page_is_never_cached(self):
        self.client.force_login(self.alice)
        self.client.post("/token/")
        key = self.alice.auth_token.key
        page = self.client.get("/token/")
        assert key.encode() in page.content
        assert "no-store" in page["Cache-Control"]

    def test_look_alike_team_names_and_too_many_teams_are_refused(self):
        self.client.force_login(self.bob)
        for name, reason in (
            ("Blue", "reads the same"),
            (" blue ", "reads the same"),
            ("blue\u200b", "invisible"),
            ("b\u04cf\u0443e", "mixes cyrillic, latin"),
            ("\uff42lue", "reads the same"),
        ):
            response = self.client.post("/teams/", {"name": name})
            assert response.status_code == 200 and reason in response.content.decode(), name
        assert Team.objects.count() == 2
        for number in range(19):  # bob administers red already
            self.client.post("/teams/", {"name": f"bob's team {number}"})
        assert b"You administer 20 teams already" in self.client.post("/teams/", {"name": "one more"}).content

    def test_an_admin_makes_another_admin_and_can_then_leave(self):
        Membership.objects.create(team=self.blue, user=self.bob)
        self.client.force_login(self.alice)
        self.client.post(f"/teams/{self.blue.pk}/members/{self.bob.pk}/admin")
        assert Membership.objects.get(team=self.blue, user=self.bob).is_admin
        self.client.post(f"/teams/{self.blue.pk}/leave")
        assert not Membership.objects.filter(team=self.blue, user=self.alice).exists()
        carol = get_user_model().objects.create_user("carol", password="password-carol")
        Membership.objects.create(team=self.red, user=carol)
        self.client.force_login(carol)
        assert self.client.post(f"/teams/{self.red.pk}/members/{carol.pk}/admin").status_code == 404
