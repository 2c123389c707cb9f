"""The experiments list: found by words, state, tag and archive, a page at a time; each row's state from its
runs, its selected point cached on the row and recomputed when a point arrives; tags and archive from the
experiment's page; a new user with BadNets and no experiment is pointed at a first study."""

from django.test import override_settings

from tests.webapp.base import BaseTestCase
from tests.webapp.test_experiment import GRID, grid_metrics
from webapp.lab import listing
from webapp.lab.models import Experiment, Point, Run


class ExperimentsListTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.client.force_login(self.alice)
        self.study = self.experiment(GRID)
        self.runs = self.finish(self.study, grid_metrics)

    def names(self, **query) -> list[str]:
        page = self.client.get("/experiments/", query)
        assert page.status_code == 200
        return [row.experiment.name for row in page.context["page"].object_list]

    def copy(self, name: str, **fields) -> Experiment:
        row = Experiment.objects.create(
            team=self.blue,
            owner=self.alice,
            name=name,
            badnet=self.study.badnet,
            valid=self.study.valid,
            test=self.study.test,
            space=self.study.space | fields.pop("space", {}),
            **fields,
        )
        row.poisoned.set(self.study.poisoned.all())
        return row

    def test_rows_are_found_by_words_state_tag_and_archive(self):
        queued = self.copy("queued one", tags=",sunglasses,")
        queued.runs.add(
            Run.objects.create(team=self.blue, badnet=self.study.badnet, key="q", kind="finetune", config={}, inputs={})
        )
        self.copy("old one", archived=True)
        self.copy("anp one", space={"defense": "anp"})
        assert self.names() == ["anp one", "queued one", "blue-study"]  # newest first, archived hidden
        assert self.names(q="ANP") == ["anp one"] and self.names(q="blue-badnet") == [
            "anp one",
            "queued one",
            "blue-study",
        ]
        assert self.names(state="queued") == ["anp one", "queued one"] and self.names(state="done") == ["blue-study"]
        assert self.names(tag="Sunglasses") == ["queued one"] and self.names(archived="on") == ["old one"]
        assert self.names(state="running") == []
        page = self.client.get("/experiments/", {"state": "running"}).content.decode()
        assert "No experiment matches these filters." in page
        assert self.client.get("/experiments/", {"state": "lost"}).status_code == 400

    def test_the_selected_point_is_cached_and_recomputed_when_a_point_arrives(self):
        first = self.client.get("/experiments/")
        best = first.context["page"].object_list[0].best
        assert best["ca"] == 89.0 and "T 0.5" in best["where"]  # the validation rule's choice, as the page says
        with self.assertNumQueries(5):  # session, user, team, membership and the list: no point read
            self.client.get("/experiments/")
        run = self.runs[0]
        metrics = grid_metrics(run, 2) | {"ca": 99.0, "valid_acc": 99.9}
        Point.objects.filter(run=run, position=2).update(metrics=metrics)
        Run.objects.filter(pk=run.pk).update(heartbeat_at=run.heartbeat_at)  # as a worker stores a point
        run.record_point(2, metrics)
        again = self.client.get("/experiments/").context["page"].object_list[0].best
        assert again != best  # the stamp changed with the point: recomputed

    @override_settings()
    def test_a_thousand_experiments_are_listed_a_page_at_a_time(self):
        Experiment.objects.bulk_create(
            Experiment(
                team=self.blue,
                owner=self.alice,
                name=f"e{n}",
                badnet=self.study.badnet,
                valid=self.study.valid,
                test=self.study.test,
                space=self.study.space,
            )
            for n in range(120)
        )
        page = self.client.get("/experiments/", {"page": 3})
        assert len(page.context["page"].object_list) == 121 - 2 * listing.PAGE_SIZE
        assert "121 experiments; page 3 of 3" in page.content.decode()
        assert self.client.get("/experiments/", {"page": "999"}).context["page"].number == 3

    def test_tags_and_archive_from_the_experiments_page(self):
        url = f"/experiments/{self.study.pk}"
        self.client.post(f"{url}/tags", {"tags": "Seed study, sunglasses, seed study"})
        assert Experiment.objects.get(pk=self.study.pk).tags == ",seed study,sunglasses,"
        refused = self.client.post(f"{url}/tags", {"tags": "<script>"}, follow=True).content.decode()
        assert "is not a tag" in refused and Experiment.objects.get(pk=self.study.pk).tags == ",seed study,sunglasses,"
        self.client.post(f"{url}/archive")
        assert self.names() == [] and self.names(archived="on") == ["blue-study"]
        self.client.post(f"{url}/archive")
        assert self.names() == ["blue-study"]
        self.client.force_login(self.bob)  # another team's
        assert self.client.post(f"{url}/archive").status_code == 404
        assert self.client.post(f"{url}/tags", {"tags": "x"}).status_code == 404

    def test_a_team_with_badnets_and_no_experiment_is_pointed_at_a_first_study(self):
        self.client.force_login(self.bob)
        self.badnet(self.red, "red-sunglasses")
        page = self.client.get("/experiments/").content.decode()
        assert "No experiment yet. Start from the seed report's study on one of your BadNets" in page
        assert "template=figure-2-threshold&amp;badnet=" in page and "upload a BadNet" not in page

    def test_the_study_templates_are_offered_by_their_report_names(self):
        from webapp.lab.forms import STUDY_TEMPLATES, TEMPLATE_TITLES

        assert set(TEMPLATE_TITLES) == set(STUDY_TEMPLATES)
        for url in ("/experiments/", "/experiments/new/"):
            page = self.client.get(url).content.decode()
            assert "Figure 2: against the pruning threshold</a>" in page and "template=figure-2-threshold" in page
