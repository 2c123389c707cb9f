"""Every page and API endpoint refuses another team's user (404) and an anonymous visitor (sign-in
redirect for pages, 401 for the API). The table below must name every route: a new view without an
entry here fails `test_every_route_is_checked`."""

from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.webapp.base import BaseTestCase, stored_detector_figures
from webapp.lab.models import Experiment, GoodNet, Leaderboard, Run, Upload
from webapp.lab.uploads import open_upload

# route name -> (method, kwargs builder); kwargs name the blue team's rows.
ROUTES = {
    "team": ("get", lambda t: {"team_id": t.blue.pk}),
    "switch-team": ("post", lambda t: {"team_id": t.blue.pk}),
    "remove-member": ("post", lambda t: {"team_id": t.blue.pk, "user_id": t.alice.pk}),
    "answer-invitation": ("post", lambda t: {"team_id": t.blue.pk}),
    "make-admin": ("post", lambda t: {"team_id": t.blue.pk, "user_id": t.alice.pk}),
    "leave-team": ("post", lambda t: {"team_id": t.blue.pk}),
    "badnet": ("get", lambda t: {"pk": t.exp.badnet.pk}),
    "badnet-profile": ("post", lambda t: {"pk": t.exp.badnet.pk}),
    "badnet-profiles": ("get", lambda t: {"pk": t.exp.badnet.pk}),
    "badnet-chart": ("get", lambda t: {"pk": t.exp.badnet.pk, "slug": "profile-conv_3", "fmt": "csv"}),
    "badnet-scan": ("post", lambda t: {"pk": t.exp.badnet.pk}),
    "badnet-scans": ("get", lambda t: {"pk": t.exp.badnet.pk}),
    "dataset": ("get", lambda t: {"pk": t.exp.valid.pk}),
    "dataset-preview": ("get", lambda t: {"pk": t.exp.valid.pk}),
    "dataset-badnets": ("post", lambda t: {"pk": t.exp.valid.pk}),
    "experiment": ("get", lambda t: {"pk": t.exp.pk}),
    "experiment-progress": ("get", lambda t: {"pk": t.exp.pk}),
    "experiment-figures": ("get", lambda t: {"pk": t.exp.pk}),
    "experiment-report": ("get", lambda t: {"pk": t.exp.pk}),
    "chart": ("get", lambda t: {"pk": t.exp.pk, "slug": "vs-threshold", "fmt": "csv"}),
    "experiment-cancel": ("post", lambda t: {"pk": t.exp.pk}),
    "experiment-csv": ("get", lambda t: {"pk": t.exp.pk}),
    "experiment-json": ("get", lambda t: {"pk": t.exp.pk}),
    "experiment-rerun": ("post", lambda t: {"pk": t.exp.pk}),
    "experiment-tags": ("post", lambda t: {"pk": t.exp.pk}),
    "experiment-archive": ("post", lambda t: {"pk": t.exp.pk}),
    "goodnet-bundle": ("get", lambda t: {"pk": t.goodnet.pk}),
    "goodnet": ("get", lambda t: {"pk": t.goodnet.pk}),
    "goodnet-strip": ("post", lambda t: {"pk": t.goodnet.pk}),
    "goodnet-detector": ("get", lambda t: {"pk": t.goodnet.pk}),
    "goodnet-chart": ("get", lambda t: {"pk": t.goodnet.pk, "slug": "detector-rates", "fmt": "csv"}),
    "run": ("get", lambda t: {"pk": t.goodnet.run.pk}),
    "new-leaderboard": ("get", lambda t: {"pk": t.exp.badnet.pk}),
    "leaderboard": ("get", lambda t: {"pk": t.board.pk}),
    "leaderboard-table": ("get", lambda t: {"pk": t.board.pk}),
    "leaderboard-goodnet": ("post", lambda t: {"pk": t.board.pk}),
    # GET: the confirmation page (a POST by another team is refused in test_deletion.py too)
    "badnet-delete": ("get", lambda t: {"pk": t.exp.badnet.pk}),
    "dataset-delete": ("get", lambda t: {"pk": t.exp.valid.pk}),
    "experiment-delete": ("get", lambda t: {"pk": t.exp.pk}),
    "goodnet-delete": ("get", lambda t: {"pk": t.goodnet.pk}),
    "run-csv": ("get", lambda t: {"pk": t.goodnet.run.pk}),
    "run-chart-pdf": ("get", lambda t: {"pk": t.goodnet.run.pk, "slug": "run"}),
    "run-network-at": ("post", lambda t: {"pk": t.goodnet.run.pk}),
    "run-repaired": ("get", lambda t: {"pk": t.goodnet.run.pk}),
    "run-repaired-keras2": ("get", lambda t: {"pk": t.goodnet.run.pk}),
    "run-repaired-keras2-weights": ("get", lambda t: {"pk": t.goodnet.run.pk}),
    "api:badnet-detail": ("get", lambda t: {"pk": t.exp.badnet.pk}),
    "api:dataset-detail": ("get", lambda t: {"pk": t.exp.valid.pk}),
    "api:experiment-detail": ("get", lambda t: {"pk": t.exp.pk}),
    "api:experiment-results": ("get", lambda t: {"pk": t.exp.pk}),
    "api:experiment-cancel": ("post", lambda t: {"pk": t.exp.pk}),
    "api:goodnet-detail": ("get", lambda t: {"pk": t.goodnet.pk}),
    # a resumable upload is its owner's alone (another member of the team gets 404 too: test_tus_doors.py)
    "api:upload": ("head", lambda t: {"pk": t.upload.pk}),
}
# Routes without a row in their address: they list or create within the caller's own team only.
TEAM_LISTS = {
    "teams",
    "api-token",
    "demo-status",
    "badnets",
    "datasets",
    "dashboard",
    "new-experiment",
    "plan-preview",
    "compare",
    "goodnets",
    "goodnet-from-run",
    "goodnet-upload",
    "classify",
    "api:badnet-list",
    "api:dataset-list",
    "api:experiment-list",
    "api:goodnet-list",
    "api:api-root",
    "api:api-classify",
    "api:uploads",
}
# the tus endpoints need their version header; every other route ignores it
TUS = {"HTTP_TUS_RESUMABLE": "1.0.0"}
PUBLIC = {"landing", "health", "alive", "login", "logout", "api-schema"}
# Downloads of real networks: the owner's side is tested with real files (test_goodnets.py, test_run.py).
REAL_NETWORKS = {"goodnet-bundle", "run-repaired", "run-repaired-keras2", "run-repaired-keras2-weights"}
# PDFs of charts this setUp has no points or profile for (drawn for the owner in test_chart_pdf.py)
NO_CHART_HERE = {"run-chart-pdf", "badnet-chart"}


def route_names(patterns=None, namespace="") -> set[str]:
    """Every named route outside the Django admin, as reverse() names it ("api:..." for the API)."""
    names = set()
    for entry in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(entry, URLResolver) and entry.app_name != "admin":
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            names |= route_names(entry.url_patterns, inner)
        elif isinstance(entry, URLPattern) and entry.name:
            names.add(namespace + entry.name)
    return names


class IsolationTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        space = {"thresholds": [0.5, 1.0], "learning_rates": [0.001], "epochs": [1]}
        self.exp = self.experiment(space)
        runs = self.finish(self.exp, lambda run, position: {"ca": 90.0, "asr": {"sunglasses": 10.0}})
        Run.objects.filter(pk=runs[0].pk).update(kind="finetune")
        self.board = Leaderboard.objects.create(team=self.blue, owner=self.alice, badnet=self.exp.badnet)
        Experiment.objects.filter(pk=self.exp.pk).update(leaderboard=self.board)
        figures = stored_detector_figures()
        self.upload = open_upload(self.alice, self.blue, Upload.DATASET, "set.h5", 10)
        self.goodnet = GoodNet.objects.create(
            team=self.blue, owner=self.alice, name="g", badnet=self.exp.badnet, run=runs[0], sha256="x", figures=figures
        )

    def test_every_route_is_checked(self):
        assert route_names() - set(ROUTES) - TEAM_LISTS - PUBLIC == set()

    def test_another_teams_user_gets_404_everywhere(self):
        self.client.force_login(self.bob)
        for name in ROUTES:
            method, url = self.api_or_page(name)
            response = getattr(self.client, method)(url, **TUS)
            assert response.status_code == 404, (name, url, response.status_code)

    def test_anonymous_is_sent_to_sign_in_or_gets_401(self):
        for name in ROUTES:
            method, url = self.api_or_page(name)
            response = getattr(self.client, method)(url, **TUS)
            if url.startswith("/api/"):
                assert response.status_code == 401, (name, url, response.status_code)
            else:
                assert response.status_code == 302 and response["Location"].startswith("/login/"), (name, url)

    def test_lists_show_only_the_callers_team(self):
        self.client.force_login(self.bob)
        for url in ("/badnets/", "/datasets/", "/experiments/", "/goodnets/", "/compare/"):
            response = self.client.get(url)
            assert response.status_code in (200, 302) and b"blue-" not in response.content, url
        for url in ("/api/badnets/", "/api/datasets/", "/api/experiments/", "/api/goodnets/"):
            assert self.client.get(url).json()["count"] == 0, url
        self.client.force_login(self.alice)
        assert self.client.get("/api/experiments/").json()["count"] == 1

    def test_the_owner_reaches_every_route(self):
        self.client.force_login(self.alice)
        for name in ROUTES:
            method, url = self.api_or_page(name)
            if method == "get" and name not in REAL_NETWORKS | NO_CHART_HERE:
                assert getattr(self.client, method)(url).status_code in (200, 286), (name, url)  # 286: stop polling

    def api_or_page(self, name: str) -> tuple[str, str]:
        method, kwargs = ROUTES[name]
        return method, reverse(name, kwargs=kwargs(self))
