"""Sign-in and teams: create a team, invite and remove members (admins only), switch the current team."""

from django.contrib.auth import get_user_model

from tests.webapp.base import BaseTestCase
from webapp.lab.models import Membership, Team


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

    def test_an_admin_invites_and_removes_members(self):
        self.client.force_login(self.alice)
        self.client.post(f"/teams/{self.blue.pk}/", {"username": "bob"})
        assert Membership.objects.filter(team=self.blue, user=self.bob, is_admin=False).exists()
        unknown = self.client.post(f"/teams/{self.blue.pk}/", {"username": "mallory"})
        assert b"No account has that name" in unknown.content
        self.client.post(f"/teams/{self.blue.pk}/members/{self.bob.pk}/remove")
        assert not Membership.objects.filter(team=self.blue, user=self.bob).exists()

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

    def test_an_api_token_is_made_on_request(self):
        self.client.force_login(self.alice)
        self.client.post("/token/")
        key = self.alice.auth_token.key
        assert key.encode() in self.client.get("/token/").content
