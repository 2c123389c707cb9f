"""Static files: what exists is served, and a missing or odd /static/ path is a 404, never a 500, both as
`make run` serves them (whitenoise re-asking the finders on every request) and as the tests do."""

import gzip
import re

from django.contrib.staticfiles import finders
from django.test import Client, SimpleTestCase, TestCase, override_settings

MISSING = [
    "/static/nope.js",
    "/static/vendor/nope.js",
    "/static/../x",
    "/static/%2e%2e/settings.py",
    "/static/..%2fsettings.py",
    "/static/prunelab/",
    "/static/prunelab",
    "/static/",
    "/static/%00",
    "/static//etc/passwd",
    "/static/prunelab/../prunelab/charts.js",
    "/static/%5c..%5cx",
    "/static/vendor/plotly.min.js/x",
]
PRESENT = ["/static/prunelab/charts.js", "/static/vendor/plotly.min.js"]


class StaticFilesTestCase(SimpleTestCase):
    def assert_served(self, client: Client):
        for path in PRESENT:
            response = client.get(path)
            assert response.status_code == 200, path
            response.close()
        for path in MISSING:
            assert client.get(path).status_code == 404, path

    def test_missing_paths_are_404_when_the_finders_are_asked_per_request(self):
        with override_settings(WHITENOISE_AUTOREFRESH=True):  # what DEBUG (make run) turns on
            self.assert_served(Client(raise_request_exception=False))

    def test_missing_paths_are_404_with_the_files_indexed_at_start(self):
        self.assert_served(Client(raise_request_exception=False))

    def test_the_vendor_finder_answers_like_djangos_own(self):
        assert finders.find("nope.js") is None and finders.find("nope.js", find_all=True) == []
        assert finders.find("vendor/plotly.min.js").endswith("plotly.min.js")


class CompressedStaticTestCase(TestCase):
    def test_pages_name_hashed_files_served_compressed_and_cached_for_a_year(self):
        from django.contrib.auth import get_user_model

        from webapp.lab.models import Membership, Team

        user = get_user_model().objects.create_user("static-reader", password="password-static")
        Membership.objects.create(user=user, team=Team.objects.create(name="static team"))
        client = Client()
        client.force_login(user)
        page = client.get("/compare/").content.decode()
        hashed = re.search(r'src="(/static/vendor/plotly\.min\.[0-9a-f]{12}\.js)"', page).group(1)
        response = client.get(hashed, HTTP_ACCEPT_ENCODING="gzip, deflate")
        body = b"".join(response.streaming_content)
        assert response["Content-Encoding"] == "gzip" and len(body) < 2_000_000  # 4.8 MB uncompressed
        assert "immutable" in response["Cache-Control"] and "max-age=315360000" in response["Cache-Control"]
        with open(finders.find("vendor/plotly.min.js"), "rb") as original:
            assert gzip.decompress(body) == original.read()
