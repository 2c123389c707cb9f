"""A run's own page: what it ran in words, its points epoch by epoch (CA, ASR per trigger, validation accuracy,
loss), how and where it ran, its error, its CSV and its repaired network."""

import csv
import io

from tests.webapp.base import BaseTestCase
from tests.webapp.test_experiment import grid_metrics
from webapp.lab.models import Run


def epoch_metrics(run, position):
    return grid_metrics(run, position) | {"epoch": position, "loss": 1.5 / (position + 1), "train_acc": 50.0 + position}


class RunPageTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.client.force_login(self.alice)
        experiment = self.experiment({"thresholds": [0.5], "learning_rates": [0.001], "epochs": [2]})
        self.run = self.finish(experiment, epoch_metrics)[0]

    def test_the_page_says_what_ran_and_shows_every_epoch(self):
        page = self.client.get(f"/runs/{self.run.pk}/").content.decode()
        assert "prune T 0.5 on every conv layer, then fine-tune 2 epochs at LR 0.001 (seed 0)" in page
        table = page[page.index('id="run-points"') :]
        assert table.count("<tr>") == 1 + 3  # header, epochs 0..2
        assert "<td>0.7500</td>" in table  # epoch 1's loss
        figure = self.client.get(f"/runs/{self.run.pk}/").context["figures"]["run"]["figure"]
        ca = next(t for t in figure["data"] if t["name"] == "CA (test)")
        assert ca["x"] == [0, 1, 2] and ca["y"] == [grid_metrics(self.run, p)["ca"] for p in range(3)]
        assert "No repaired network" in page  # no artifact on disk

    def test_the_csv_has_every_point(self):
        rows = list(csv.DictReader(io.StringIO(self.client.get(f"/runs/{self.run.pk}/points.csv").content.decode())))
        assert [float(r["ca"]) for r in rows] == [grid_metrics(self.run, p)["ca"] for p in range(3)]
        assert "asr sunglasses" in rows[0] and "loss" in rows[0]

    def test_an_error_and_the_attempts_are_shown(self):
        Run.objects.filter(pk=self.run.pk).update(
            status=Run.FAILED, error="Bad input: v.h5 holds no images.", attempts=2
        )
        page = self.client.get(f"/runs/{self.run.pk}/").content.decode()
        assert "Bad input: v.h5 holds no images." in page and "attempts 2" in page

    def test_the_repaired_network_downloads_when_it_exists(self):
        assert self.client.get(f"/runs/{self.run.pk}/repaired.keras").status_code == 404
        path = self.run.artifact_dir() / "repaired_net.keras"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"a keras file")
        response = self.client.get(f"/runs/{self.run.pk}/repaired.keras")
        assert response.status_code == 200 and b"".join(response.streaming_content) == b"a keras file"
        assert response["Content-Disposition"] == f'attachment; filename="run-{self.run.pk}-repaired_net.keras"'
        assert 'id="compose-from-run"' in self.client.get(f"/runs/{self.run.pk}/").content.decode()


def test_an_error_is_stored_as_plain_text():
    from webapp.lab.models import printable

    coloured = "\x1b[1;31mValueError\x1b[0m: bad\x07 scope\r\nnext line\tend\u200b"
    assert printable(coloured) == "ValueError: bad scope\nnext line\tend"
