"""Data that belongs to its BadNet (Dataset.badnets): declared at upload, on the set's page or by use in the
BadNet's experiments; forms preselect it; the scan checks only the BadNet's own poisoned sets' targets."""

from tests.webapp.base import BaseTestCase
from webapp.lab.detection import declared_targets
from webapp.lab.models import Dataset, Experiment


class DeclaredSetsTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.client.force_login(self.alice)
        self.study = self.experiment({"thresholds": [0.5], "learning_rates": [0.01], "epochs": [1]})
        self.other = self.badnet(name="other")
        self.others_set = self.dataset(Dataset.POISONED_TEST, name="other's lipstick", trigger="lipstick")
        Dataset.objects.filter(pk=self.others_set.pk).update(target=3)
        self.others_set.badnets.add(self.other)

    def test_a_scan_checks_only_the_badnets_own_targets(self):
        badnet = self.study.badnet
        assert declared_targets(badnet) == {}  # its sets were made directly, not used or declared yet
        badnet.declared_sets.add(*self.study.poisoned.all())
        assert declared_targets(badnet) == {0: ["sunglasses"]}  # not the other BadNet's target 3
        assert declared_targets(self.other) == {3: ["lipstick"]}

    def test_the_sets_page_declares_and_the_forms_preselect(self):
        valid, test, poisoned = self.study.valid, self.study.test, self.study.poisoned.get()
        for dataset in (valid, test, poisoned):
            response = self.client.post(f"/datasets/{dataset.pk}/badnets", {"badnets": [self.study.badnet.pk]})
            assert response.status_code == 302
        assert set(self.study.badnet.declared_sets.all()) == {valid, test, poisoned}
        page = self.client.get(f"/datasets/{valid.pk}/").content.decode()
        assert f'value="{self.study.badnet.pk}" checked' in page and f'value="{self.other.pk}">' in page
        form = self.client.get(f"/experiments/new/?badnet={self.study.badnet.pk}").context["form"]
        assert form.initial["valid"] == valid.pk and form.initial["test"] == test.pk
        assert form.initial["poisoned"] == [poisoned.pk]
        board = self.client.get(f"/badnets/{self.study.badnet.pk}/leaderboard").context["form"]
        assert board.initial["poisoned"] == [poisoned.pk]
        assert self.client.get("/experiments/new/?badnet=abc").status_code == 200  # not a number: nothing chosen
        junk = self.client.post(f"/datasets/{valid.pk}/badnets", {"badnets": ["abc"]}, follow=True).content.decode()
        assert "Not changed: &#x27;abc&#x27; is not one of the BadNets offered" in junk
        assert valid in self.study.badnet.declared_sets.all()  # nothing changed
        page = self.client.get(f"/experiments/new/?badnet={self.study.badnet.pk}").content.decode()
        assert f"?template=table-1-grid&amp;badnet={self.study.badnet.pk}" in page  # templates keep the BadNet
        self.client.post(f"/datasets/{valid.pk}/badnets", {})  # none ticked: undeclared
        assert valid not in self.study.badnet.declared_sets.all()

    def test_using_sets_in_an_experiment_declares_them(self):
        badnet = self.study.badnet
        form = {
            "name": "uses them",
            "badnet": badnet.pk,
            "valid": self.study.valid.pk,
            "test": self.study.test.pk,
            "poisoned": [p.pk for p in self.study.poisoned.all()],
            "defense": "fine-prune",
            "thresholds": "0.5",
            "learning_rates": "0.01",
            "epochs": "1",
            "seed": 0,
            "max_ca_drop": 5,
            "queue": "cpu",
        }
        with self.captureOnCommitCallbacks(execute=False):
            assert self.client.post("/experiments/new/", form).status_code == 302
        assert Experiment.objects.filter(name="uses them").exists()
        assert set(badnet.declared_sets.all()) == {self.study.valid, self.study.test, *self.study.poisoned.all()}
