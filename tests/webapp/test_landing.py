from tests.webapp.base import BaseTestCase


class LandingTestCase(BaseTestCase):
    def test_it_renders_for_anonymous_users(self):
        response = self.client.get("/")
        self.assertContains(response, "Repair backdoored networks with Fine-Pruning")
        self.assertRegex(response.content.decode(), r"/static/prunelab/prunelab.[0-9a-f]{12}.css")

    def test_it_refuses_post(self):
        self.assertEqual(self.client.post("/").status_code, 405)
