"""Security review, as tests: CSRF on every form, downloads as attachments with nosniff, uploaded file names
never used as paths, and a broken upload through any form is a 400 with nothing stored (never a 500)."""

import re
import tempfile
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from tests.defenses.tiny import tiny_data, write_dataset
from tests.webapp.base import BaseTestCase
from tests.webapp.test_experiment import GRID, grid_metrics
from tests.webapp.test_isolation import ROUTES
from webapp.lab.models import BadNet, Dataset, GoodNet, Leaderboard

# Forms whose address names no row; those that do are the "post" entries of the isolation table.
FORMS = [
    "login",
    "teams",
    "api-token",
    "badnets",
    "datasets",
    "new-experiment",
    "plan-preview",
    "goodnet-from-run",
    "goodnet-upload",
    "classify",
]


class SecurityTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.exp = self.experiment(GRID)
        self.finish(self.exp, grid_metrics)
        self.board = Leaderboard.objects.create(team=self.blue, owner=self.alice, badnet=self.exp.badnet)
        run = self.exp.runs.first()
        self.goodnet = GoodNet.objects.create(
            team=self.blue, owner=self.alice, name="g", badnet=self.exp.badnet, run=run, sha256="x"
        )

    def test_every_form_refuses_a_post_without_its_csrf_token(self):
        client = Client(enforce_csrf_checks=True)
        client.force_login(self.alice)
        urls = [reverse(name) for name in FORMS]
        urls += [reverse(name, kwargs=kwargs(self)) for name, (method, kwargs) in ROUTES.items() if method == "post"]
        for url in urls:
            assert client.post(url, {}).status_code == 403, url
        page = client.post(urls[0], {}).content.decode()  # in words a user can act on, in the site's own page
        assert "This form has expired" in page and "reload the page and send it again" in page and "topbar" in page

    def test_downloads_are_attachments_the_browser_does_not_sniff(self):
        self.client.force_login(self.alice)
        response = self.client.get(f"/experiments/{self.exp.pk}/charts/vs-threshold.csv")
        assert response["Content-Disposition"].startswith("attachment;")
        assert response["X-Content-Type-Options"] == "nosniff"
        assert self.client.get(f"/datasets/{self.exp.valid.pk}/preview.png")["X-Content-Type-Options"] == "nosniff"

    def test_an_uploaded_file_name_is_data_never_a_path(self):
        self.client.force_login(self.alice)
        folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        raw = write_dataset(folder / "x.h5", *tiny_data(5)).read_bytes()
        self.client.post(
            "/datasets/",
            {
                "name": "n",
                "role": Dataset.CLEAN_TEST,
                "file": SimpleUploadedFile("../../../../etc/cron.d/evil.h5", raw),
            },
        )
        stored = Dataset.objects.get(name="n")
        assert re.fullmatch(rf"team-{self.blue.pk}/dataset/[0-9a-f]{{32}}\.h5", stored.file.name), stored.file.name
        assert stored.original_name == "evil.h5"

    def test_garbage_through_every_upload_form_is_a_400_with_nothing_stored(self):
        self.client.force_login(self.alice)
        before = (BadNet.objects.count(), Dataset.objects.count())
        garbage = [b"", b"\x89HDF\r\n\x1a\n" + b"\xff" * 64, b"PK\x03\x04" + b"\0" * 40, bytes(range(256)) * 4]
        for raw in garbage:
            badnet = {"name": "g", "arch": "", "divisor": 255.0, "file": SimpleUploadedFile("g.h5", raw)}
            dataset = {"name": "g", "role": Dataset.CLEAN_TEST, "file": SimpleUploadedFile("g.h5", raw)}
            image = {"network": f"badnet-{self.exp.badnet.pk}", "images": [SimpleUploadedFile("g.png", raw)]}
            for url, form in (("/badnets/", badnet), ("/datasets/", dataset), ("/classify/", image)):
                assert self.client.post(url, form).status_code == 400, (url, raw[:8])
        assert (BadNet.objects.count(), Dataset.objects.count()) == before


class AdminTokenTestCase(BaseTestCase):
    def test_the_admin_lists_api_tokens_by_prefix_and_prints_no_key_anywhere(self):
        from django.contrib.auth import get_user_model
        from rest_framework.authtoken.models import Token

        key = Token.objects.create(user=self.alice).key
        staff = get_user_model().objects.create_superuser("root", password="password-root")
        self.client.force_login(staff)
        listing = self.client.get("/admin/authtoken/tokenproxy/")
        assert listing.status_code == 200 and f"{key[:4]}…" in listing.content.decode()
        assert key not in listing.content.decode()
        assert self.client.get(f"/admin/authtoken/tokenproxy/{key}/change/").status_code in (302, 403, 404)
        wrong = "0" if key[0] != "0" else "1"
        for probe in (
            f"key__startswith={key[:2]}",
            f"key__startswith={wrong}",
            f"pk__startswith={key[:3]}",
            f"key={key}",
        ):
            answer = self.client.get(f"/admin/authtoken/tokenproxy/?{probe}")  # no filter by key: no oracle
            assert answer.status_code == 400, (probe, answer.status_code)
        assert key not in self.client.get(f"/admin/authtoken/tokenproxy/{key}/change/", follow=True).content.decode()


class ContentSecurityPolicyTestCase(BaseTestCase):
    def test_every_page_allows_scripts_from_this_server_only(self):
        self.client.force_login(self.alice)
        for path in ("/", "/experiments/", "/badnets/", "/classify/"):
            policy = self.client.get(path)["Content-Security-Policy"]
            directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))  # in no fixed order
            assert directives["script-src"] == "'self'" and directives["object-src"] == "'none'", path
            assert "unsafe-eval" not in policy and "frame-ancestors 'none'" in policy
        # the compare page's parallel coordinates (WebGL) need eval; that page alone allows it
        assert "'unsafe-eval'" in self.client.get("/compare/")["Content-Security-Policy"]
