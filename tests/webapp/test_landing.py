from tests.webapp.base import BaseTestCase


class LandingTestCase(BaseTestCase):
    def test_it_renders_for_anonymous_users(self):
        response = self.client.get("/")
        self.assertContains(response, "Repair backdoored networks with Fine-Pruning")
        self.assertRegex(response.content.decode(), r"/static/prunelab/prunelab.[0-9a-f]{12}.css")

    def test_it_refuses_post(self):
        self.assertEqual(self.client.post("/").status_code, 405)

    def test_a_missing_page_is_a_styled_404_and_pages_name_their_icon(self):
        response = self.client.get("/no-such-page/")
        self.assertContains(response, "Nothing here, or nothing your team may see", status_code=404)
        self.assertRegex(response.content.decode(), r"/static/prunelab/prunelab.[0-9a-f]{12}.css")
        self.assertRegex(response.content.decode(), r"/static/prunelab/favicon.[0-9a-f]{12}.svg")
