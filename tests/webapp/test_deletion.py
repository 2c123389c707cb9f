"""Deleting BadNets, datasets, experiments and GoodNets: the confirmation page says what goes along, the
deletion takes exactly that (shared runs stay with the experiments that share them) and removes the files;
another team cannot, a plain member may delete only their own rows, running work is not pulled away. A file
uploaded twice is offered, not stored twice."""

import tempfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token

from tests.defenses.tiny import tiny_data, write_dataset
from tests.webapp.base import BaseTestCase
from tests.webapp.test_experiment import GRID, grid_metrics
from webapp.lab.models import BadNet, Dataset, Experiment, GoodNet, Membership, Point, Run


class DeletionTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.client.force_login(self.alice)
        self.exp = self.experiment(GRID)
        self.runs = self.finish(self.exp, grid_metrics)
        for run in self.runs:  # each run's folder holds its repaired network
            run.artifact_dir().mkdir(parents=True)
            (run.artifact_dir() / "repaired_net.keras").write_bytes(b"weights")
        self.goodnet = GoodNet.objects.create(
            team=self.blue, owner=self.alice, name="from run", badnet=self.exp.badnet, run=self.runs[0], sha256="g"
        )
        self.uploaded = GoodNet.objects.create(
            team=self.blue,
            owner=self.alice,
            name="uploaded",
            badnet=self.exp.badnet,
            file=ContentFile(b"net", name="r.keras"),
            sha256="u",
        )

    def delete(self, url: str):
        """POST the confirmation as the browser would; files go once the transaction commits."""
        with self.captureOnCommitCallbacks(execute=True):
            return self.client.post(url)

    def test_the_confirmation_page_says_what_goes_with_a_badnet(self):
        page = self.client.get(f"/badnets/{self.exp.badnet.pk}/delete").content.decode()
        assert "1 experiment: blue-study" in page and "4 runs and their results" in page
        assert "2 GoodNets: from run, uploaded" in page and "6 stored files or run folders" in page
        assert BadNet.objects.filter(pk=self.exp.badnet.pk).exists()  # a GET deletes nothing

    def test_deleting_a_badnet_takes_its_experiments_runs_goodnets_and_files(self):
        files = [Path(self.exp.badnet.file.path), Path(self.uploaded.file.path), *[r.artifact_dir() for r in self.runs]]
        assert all(path.exists() for path in files)
        response = self.delete(f"/badnets/{self.exp.badnet.pk}/delete")
        assert response.status_code == 302 and response["Location"] == "/badnets/"
        assert not BadNet.objects.exists() and not Experiment.objects.exists() and not Run.objects.exists()
        assert not GoodNet.objects.exists() and not Point.objects.exists()
        assert not any(path.exists() for path in files)
        assert Dataset.objects.count() == 3  # the sets stay

    def test_an_experiment_takes_only_the_runs_no_other_experiment_shares(self):
        twin = Experiment.objects.create(
            team=self.blue,
            owner=self.alice,
            name="twin",
            badnet=self.exp.badnet,
            valid=self.exp.valid,
            test=self.exp.test,
            space=self.exp.space,
        )
        twin.runs.add(self.runs[0])
        page = self.client.get(f"/experiments/{self.exp.pk}/delete").content.decode()
        assert "3 runs and their results" in page and "1 GoodNet" not in page
        self.delete(f"/experiments/{self.exp.pk}/delete")
        assert list(Run.objects.all()) == [self.runs[0]] and self.runs[0].artifact_dir().exists()
        assert GoodNet.objects.count() == 2 and not self.runs[1].artifact_dir().exists()

    def test_a_dataset_takes_the_experiments_that_use_it(self):
        self.delete(f"/datasets/{self.exp.test.pk}/delete")
        assert not Experiment.objects.exists() and not Run.objects.exists()
        assert set(Dataset.objects.values_list("name", flat=True)) == {"blue-valid", "blue-sunglasses"}
        assert BadNet.objects.count() == 1 and list(GoodNet.objects.all()) == [self.uploaded]

    def test_a_goodnet_alone(self):
        path = Path(self.uploaded.file.path)
        self.delete(f"/goodnets/{self.uploaded.pk}/delete")
        assert not path.exists() and list(GoodNet.objects.all()) == [self.goodnet] and Run.objects.count() == 4
        page = self.client.get(f"/goodnets/{self.goodnet.pk}/delete").content.decode()
        assert "no file of its own: its repaired network is its run&#x27;s, which stays" in page  # not "0 bytes"

    def test_another_team_gets_404_and_a_plain_member_may_delete_only_their_own(self):
        self.client.force_login(self.bob)
        assert self.delete(f"/badnets/{self.exp.badnet.pk}/delete").status_code == 404
        carol = get_user_model().objects.create_user("carol", password="password-carol")
        Membership.objects.create(user=carol, team=self.blue, is_admin=False)
        self.client.force_login(carol)
        refused = self.delete(f"/experiments/{self.exp.pk}/delete")
        assert refused.status_code == 403 and b"only an admin of blue may delete it" in refused.content
        assert Experiment.objects.count() == 1 and BadNet.objects.count() == 1
        # the second attack review: carol's own set, used by alice's experiment, took that experiment along
        carols = self.dataset(Dataset.CLEAN_TEST, name="carols-test")
        Dataset.objects.filter(pk=carols.pk).update(owner=carol)
        alices = Experiment.objects.create(
            team=self.blue,
            owner=self.alice,
            name="on carol's set",
            space={},
            badnet=self.exp.badnet,
            valid=self.exp.valid,
            test=carols,
        )
        page = self.client.get(f"/datasets/{carols.pk}/delete").content.decode()
        assert 'id="not-allowed"' in page and 'id="confirm-delete"' not in page
        assert self.delete(f"/datasets/{carols.pk}/delete").status_code == 403
        assert Experiment.objects.filter(pk=alices.pk).exists() and Dataset.objects.filter(pk=carols.pk).exists()
        alices.delete()
        assert self.delete(f"/datasets/{carols.pk}/delete").status_code == 302  # all hers now: she may
        assert Experiment.objects.count() == 1 and BadNet.objects.count() == 1

    def test_running_runs_are_not_deleted_under_a_worker(self):
        Run.objects.filter(pk=self.runs[0].pk).update(status=Run.RUNNING)
        refused = self.delete(f"/experiments/{self.exp.pk}/delete")
        assert refused.status_code == 409 and b"press Cancel on their experiment" in refused.content
        assert Run.objects.count() == 4


class DuplicateUploadTestCase(BaseTestCase):
    def test_the_same_file_twice_is_offered_not_stored_again(self):
        self.client.force_login(self.alice)
        folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        path = write_dataset(folder / "valid.h5", *tiny_data(12))

        def form(name):
            return {
                "name": name,
                "role": Dataset.CLEAN_VALID,
                "file": SimpleUploadedFile("valid.h5", path.read_bytes()),
            }

        first = self.client.post("/datasets/", form("first"))
        stored = Dataset.objects.get()
        again = self.client.post("/datasets/", form("second"), follow=True)
        assert again.redirect_chain[-1][0] == f"/datasets/{stored.pk}/" == first["Location"]
        assert b"valid.h5 is already stored as &#x27;first&#x27; (uploaded by alice" in again.content
        token = {"HTTP_AUTHORIZATION": f"Token {Token.objects.create(user=self.alice).key}"}
        conflict = self.client.post("/api/datasets/", form("third"), **token)
        assert conflict.status_code == 409 and conflict.json()["existing"]["id"] == stored.pk
        assert Dataset.objects.count() == 1
        self.client.force_login(self.bob)  # another team may store the same public file: teams share nothing
        assert self.client.post("/datasets/", form("bob's")).status_code == 302 and Dataset.objects.count() == 2

    def test_a_duplicate_that_does_not_fit_the_named_badnet_is_refused_for_that(self):
        """Not 'already stored, here it is' when the upload names a BadNet the stored set does not fit."""
        self.client.force_login(self.alice)
        folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        path = write_dataset(folder / "valid.h5", *tiny_data(12))
        upload = {"name": "v", "role": Dataset.CLEAN_VALID}
        self.client.post("/datasets/", upload | {"file": SimpleUploadedFile("valid.h5", path.read_bytes())})
        badnet = self.badnet(name="wide")
        BadNet.objects.filter(pk=badnet.pk).update(report={**badnet.report, "input_shape": [55, 47, 3]})
        again = self.client.post(
            "/datasets/", upload | {"file": SimpleUploadedFile("valid.h5", path.read_bytes()), "badnet": badnet.pk}
        )
        assert again.status_code == 400 and "holds 12x10 images; wide takes 55x47" in again.content.decode()
