"""A finished resumable upload given to the dataset and BadNet forms (pages and API) by its id: the same checks
and messages as a file sent with the form, the row stored with the bytes that arrived, and the upload used up
whatever the verdict; a refused file leaves nothing behind (no row, no upload, no file)."""

import errno
import html
import os
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.core.files import File
from django.test import Client, TransactionTestCase, override_settings
from rest_framework.authtoken.models import Token

from tests import hostile
from tests.conftest import FIXTURES
from tests.defenses.tiny import tiny_data, write_dataset
from tests.webapp.test_tus_doors import TusTestCase
from webapp.lab.models import BadNet, Dataset, Membership, Team, Upload

KERAS2 = FIXTURES / "models" / "keras2_full_model_repaired_sunglasses.h5"


class FinishedUploadBase(TusTestCase):
    def setUp(self):
        super().setUp()
        self.folder = Path(self.enterContext(tempfile.TemporaryDirectory()))

    def uploaded(self, path: Path, kind="dataset", client=None, send=None) -> str:
        """The id of a finished upload of `path` (of its first `send` bytes only, when given)."""
        data = path.read_bytes()
        url = self.new_upload(len(data), filename=path.name, kind=kind, client=client)
        assert self.patch(url, data[:send], client=client).status_code == 204
        return url.rsplit("/", 1)[1]

    def post_dataset(self, upload_id: str, **fields):
        form = {"name": "set", "role": Dataset.CLEAN_VALID, "trigger": "", "target": "", "upload": upload_id}
        return self.client.post("/datasets/", form | fields)

    def assert_nothing_left(self):
        assert not Dataset.objects.exists() and not BadNet.objects.exists() and not Upload.objects.exists()
        assert not self.every_file(), self.every_file()


class FinishedUploadPageTestCase(FinishedUploadBase):
    def test_a_finished_upload_is_checked_and_stored_and_used_up(self):
        path = write_dataset(self.folder / "clean_validation_data.h5", *tiny_data(40))
        response = self.post_dataset(self.uploaded(path))
        dataset = Dataset.objects.get()
        assert response.status_code == 302 and response["Location"] == f"/datasets/{dataset.pk}/"
        assert (dataset.count, dataset.original_name, dataset.owner, dataset.team) == (
            40,
            path.name,
            self.alice,
            self.blue,
        )
        assert Path(dataset.file.path).read_bytes() == path.read_bytes()
        assert not Upload.objects.exists() and self.every_file() == [Path(dataset.file.path)]
        again = html.unescape(self.client.get("/datasets/").content.decode())
        assert "clean_validation_data.h5" in again

    def test_a_refused_file_leaves_nothing_and_says_why_as_for_a_plain_upload(self):
        refusals = {
            hostile.with_pixels(self.folder / "nan.h5", 2, float("nan")): "Refused: nan.h5: image 2 has pixel values",
            hostile.shape_bomb(self.folder / "bomb.h5"): "Refused: bomb.h5",
            hostile.soft_link(self.folder / "soft.h5"): "soft link at /data",
        }
        for path, message in refusals.items():
            upload_id = self.uploaded(path)
            response = self.post_dataset(upload_id)
            page = html.unescape(response.content.decode())
            assert response.status_code == 400 and message in page, (path.name, message)
            assert upload_id not in page and "is on the server" not in page  # the page does not offer it again
            self.assert_nothing_left()

    def test_a_field_error_keeps_the_upload_for_the_next_try(self):
        path = write_dataset(self.folder / "poisoned.h5", *tiny_data(10))
        upload_id = self.uploaded(path)
        first = self.post_dataset(upload_id, role=Dataset.POISONED_TEST)
        page = html.unescape(first.content.decode())
        assert first.status_code == 400 and "needs the name of its trigger" in page
        assert "poisoned.h5 (" in page and "is on the server: submit again" in page and upload_id in page
        assert Upload.objects.filter(pk=upload_id).exists()
        second = self.post_dataset(upload_id, role=Dataset.POISONED_TEST, trigger="patch", target=0)
        assert second.status_code == 302 and Dataset.objects.get().trigger == "patch"
        assert not Upload.objects.exists()

    def test_only_the_users_own_finished_upload_of_the_right_kind_is_taken(self):
        path = write_dataset(self.folder / "set.h5", *tiny_data(10))
        unfinished = self.uploaded(path, send=100)
        refused = html.unescape(self.post_dataset(unfinished).content.decode())
        assert f"set.h5 has not arrived yet: 100 of {path.stat().st_size:,} bytes" in refused
        bob = Client()
        bob.force_login(self.bob)
        bobs = self.uploaded(path, client=bob)
        assert f"There is no upload {bobs} of yours in blue" in html.unescape(self.post_dataset(bobs).content.decode())
        as_model = self.uploaded(path, kind="badnet")
        wrong_kind = html.unescape(self.post_dataset(as_model).content.decode())
        assert "set.h5 was uploaded as a BadNet file, not as a dataset file" in wrong_kind
        not_an_id = html.unescape(self.post_dataset("../../etc/passwd").content.decode())
        assert "Enter a valid UUID" in not_an_id
        assert not Dataset.objects.exists() and Upload.objects.count() == 3  # refused forms take nothing

    def test_a_file_the_team_has_opens_the_stored_one_and_the_upload_is_used_up(self):
        path = write_dataset(self.folder / "set.h5", *tiny_data(10))
        self.post_dataset(self.uploaded(path))
        again = self.post_dataset(self.uploaded(path), name="copy")
        assert again.status_code == 302 and again["Location"] == f"/datasets/{Dataset.objects.get().pk}/"
        assert "already stored as 'set'" in html.unescape(self.client.get(again["Location"]).content.decode())
        assert not Upload.objects.exists() and len(self.every_file()) == 1

    def test_a_damaged_model_upload_is_refused_and_nothing_left(self):
        broken = self.folder / "truncated.h5"
        broken.write_bytes(KERAS2.read_bytes()[:5000])
        form = {"name": "net", "arch": "", "divisor": 255.0, "upload": self.uploaded(broken, kind="badnet")}
        response = self.client.post("/badnets/", form)
        assert response.status_code == 400
        assert "Refused: truncated.h5 is a damaged HDF5 file" in html.unescape(response.content.decode())
        self.assert_nothing_left()

    @pytest.mark.slow
    def test_a_model_upload_goes_through_the_sandbox_and_is_stored(self):
        form = {"name": "net", "arch": "", "divisor": 255.0, "upload": self.uploaded(KERAS2, kind="badnet")}
        response = self.client.post("/badnets/", form)
        badnet = BadNet.objects.get()
        assert response.status_code == 302 and badnet.original_name == KERAS2.name and badnet.n_classes == 1283
        assert Path(badnet.file.path).read_bytes() == KERAS2.read_bytes() and not Upload.objects.exists()


class FinishedUploadApiTestCase(FinishedUploadBase):
    """The API's create calls take `upload` as the pages do, multipart or JSON, and never a path."""

    def setUp(self):
        super().setUp()
        self.api = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=self.alice).key}")

    def test_a_dataset_is_made_from_an_upload_by_json(self):
        path = write_dataset(self.folder / "valid.h5", *tiny_data(12))
        body = {"name": "v", "role": Dataset.CLEAN_VALID, "upload": self.uploaded(path)}
        created = self.api.post("/api/datasets/", body, content_type="application/json")
        assert created.status_code == 201, created.content
        assert (created.json()["count"], created.json()["original_name"]) == (12, "valid.h5")
        assert not Upload.objects.exists()

    def test_a_refusal_names_the_file_and_leaves_nothing(self):
        path = hostile.with_pixels(self.folder / "hot.h5", 4, 300.0)
        body = {"name": "v", "role": Dataset.CLEAN_VALID, "upload": self.uploaded(path)}
        refused = self.api.post("/api/datasets/", body, content_type="application/json")
        message = refused.json()["errors"]["file"][0]["message"]
        assert refused.status_code == 400 and message.startswith("Refused: hot.h5: image 4 has pixel values")
        self.assert_nothing_left()

    def test_a_duplicate_is_409_with_the_stored_row(self):
        path = write_dataset(self.folder / "valid.h5", *tiny_data(12))
        body = {"name": "v", "role": Dataset.CLEAN_VALID}
        self.api.post("/api/datasets/", body | {"upload": self.uploaded(path)}, content_type="application/json")
        again = self.api.post("/api/datasets/", body | {"upload": self.uploaded(path)}, content_type="application/json")
        assert again.status_code == 409 and again.json()["existing"]["id"] == Dataset.objects.get().pk
        assert not Upload.objects.exists()

    def test_a_server_path_is_never_taken(self):
        secret = hostile.secret_file(self.folder)
        for field, value in (("file", str(secret)), ("upload", str(secret)), ("path", str(secret))):
            body = {"name": "v", "role": Dataset.CLEAN_VALID, field: value}
            refused = self.api.post("/api/datasets/", body, content_type="application/json")
            assert refused.status_code == 400, field
            assert hostile.SECRET[:16].decode() not in refused.content.decode()
        assert not Dataset.objects.exists()

    def test_a_badnet_from_an_upload_is_checked_like_a_sent_file(self):
        broken = self.folder / "truncated.h5"
        broken.write_bytes(KERAS2.read_bytes()[:5000])
        body = {"name": "net", "divisor": 255, "upload": self.uploaded(broken, kind="badnet")}
        refused = self.api.post("/api/badnets/", body, content_type="application/json")
        assert refused.status_code == 400
        assert "truncated.h5 is a damaged HDF5 file" in refused.json()["errors"]["file"][0]["message"]
        self.assert_nothing_left()

    def test_the_schema_offers_upload_beside_file_and_hides_no_path_field(self):
        schema = self.api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
        for name in ("Dataset", "BadNet"):
            multipart, referenced = (
                schema["components"]["schemas"][f"{name}Upload"],
                schema["components"]["schemas"][f"{name}FromUpload"],
            )
            assert {"file", "upload"} <= set(multipart["properties"]) and "upload" in referenced["required"]
            assert "/api/uploads/" in referenced["properties"]["upload"]["description"]
            assert not {"path", "server_path"} & set(multipart["properties"])
        body = schema["paths"]["/api/datasets/"]["post"]["requestBody"]["content"]
        assert set(body) == {"multipart/form-data", "application/json"}


class FullDiskTestCase(TransactionTestCase):
    """A store that fails in a real transaction: in a TestCase the failed save marks the test's own atomic block
    for rollback (production runs views outside one), and the page's next query fails there."""

    def setUp(self):
        super().setUp()
        self.enterContext(override_settings(MEDIA_ROOT=self.enterContext(tempfile.TemporaryDirectory())))
        self.folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        alice = get_user_model().objects.create_user("alice", password="password-alice")
        Membership.objects.create(user=alice, team=Team.objects.create(name="blue"), is_admin=True)
        self.client.force_login(alice)

    uploaded, post_dataset, assert_nothing_left = (
        FinishedUploadBase.uploaded,
        FinishedUploadBase.post_dataset,
        FinishedUploadBase.assert_nothing_left,
    )
    new_upload, create, patch, every_file = (
        TusTestCase.new_upload,
        TusTestCase.create,
        TusTestCase.patch,
        TusTestCase.every_file,
    )

    def test_a_full_disk_while_storing_leaves_no_half_file_and_says_so(self):
        """An attack review: when the copy of a checked set into storage failed (a full disk), Django's storage
        left the half-written team-N/dataset/<uuid>.h5 behind, with no row to find it by, and the page was a 500.
        The copy fails here after its first chunk with the kernel's ENOSPC."""
        path = write_dataset(self.folder / "clean_validation_data.h5", *tiny_data(40))
        upload_id = self.uploaded(path)

        def full_disk(file, chunk_size=None):
            yield file.read(100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        with mock.patch.object(File, "chunks", full_disk):
            response = self.post_dataset(upload_id)
        page = html.unescape(response.content.decode())
        assert response.status_code == 400, page[:300]
        assert "clean_validation_data.h5 could not be stored (No space left on device)" in page
        self.assert_nothing_left()
