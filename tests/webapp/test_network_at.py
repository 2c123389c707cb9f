"""A chosen point that is not its run's last epoch can be composed: the page offers to train the same job to
that epoch in a run that keeps its network (same seed and data: the same figures), which serves no other
request and is not one of the experiment's points; once done, the page offers to compose from it."""

from tests.webapp.base import BaseTestCase
from webapp.lab.models import Run


def early_best(run, position):
    """Held-out CA peaks at epoch 1 of 3: the choice is an epoch the run does not keep the network of."""
    before = {"ca": 97.0, "asr": {"sunglasses": 99.0}, "valid_acc": 97.0}  # the BadNet's own, as runs record it
    return {"ca": 90.0, "asr": {"sunglasses": 5.0}, "valid_acc": 95.0 if position == 1 else 80.0, "before": before}


class NetworkAtTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.client.force_login(self.alice)
        self.exp = self.experiment({"thresholds": [0.5], "learning_rates": [0.01], "epochs": [1, 3], "holdout": 0.2})
        (self.run,) = self.finish(self.exp, early_best)

    def page(self) -> str:
        return self.client.get(f"/experiments/{self.exp.pk}/").content.decode()

    def test_the_chosen_epoch_is_trained_again_with_its_network_then_offered_for_composing(self):
        page = self.page()
        assert "The selected point is epoch 1 of a longer run" in page and 'id="train-network-at"' in page
        points = page.split('id="points"')[1].split("</table>")[0]
        with self.captureOnCommitCallbacks(execute=False) as sent:
            answer = self.client.post(f"/runs/{self.run.pk}/network-at", {"epoch": 1})
        network = Run.objects.exclude(pk=self.run.pk).get()
        assert answer["Location"] == f"/runs/{network.pk}/" and len(sent) == 1  # its message, on commit
        assert network.config == self.run.config | {"epochs": 1} and network.family == ""
        assert network.status == Run.QUEUED and network.key == self.run.network_key(1)
        assert not network.experiments.exists()  # none of its points: a finished experiment stays finished
        page = self.page()
        assert 'data-finished="true"' in page
        assert f"Run {network.pk}</a> is training the same job to epoch 1" in page
        again = self.client.post(f"/runs/{self.run.pk}/network-at", {"epoch": 1})
        assert again["Location"] == f"/runs/{network.pk}/" and Run.objects.count() == 2  # the one asked for already
        network.finish(Run.DONE)
        page = self.page()
        assert f"Compose a GoodNet from run {network.pk}" in page
        assert page.split('id="points"')[1].split("</table>")[0] == points  # not a point of the experiment

    def test_epochs_it_cannot_keep_are_refused_with_the_reason(self):
        for epoch in ("0", "3", "abc"):
            answer = self.client.post(f"/runs/{self.run.pk}/network-at", {"epoch": epoch}, follow=True)
            assert answer.status_code == 200 and Run.objects.count() == 1
            assert "epoch" in answer.content.decode()
        self.client.force_login(self.bob)
        assert self.client.post(f"/runs/{self.run.pk}/network-at", {"epoch": 1}).status_code == 404
