"""The doors of the resumable-upload endpoints (webapp/lab/tus.py), through the test client: who may use them,
what each header must say, the caps, and that a client's file name never becomes a path. The protocol itself,
with the official client against a live server, is tests/webapp/test_tus.py."""

import base64
import os
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.test import Client, override_settings
from django.utils import timezone
from rest_framework.authtoken.models import Token

from tests.webapp.base import BaseTestCase
from webapp.lab.models import Membership, Upload

TUS = {"HTTP_TUS_RESUMABLE": "1.0.0"}
OCTETS = "application/offset+octet-stream"


def metadata(**values) -> str:
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


class TusTestCase(BaseTestCase):
    """Alice signed in (the test client skips CSRF unless a test asks for it); helpers speak tus."""

    def setUp(self):
        super().setUp()
        self.client.force_login(self.alice)

    def create(self, length=100, filename="clean_validation_data.h5", kind="dataset", client=None, **headers):
        headers = (
            TUS
            | {"HTTP_UPLOAD_LENGTH": str(length), "HTTP_UPLOAD_METADATA": metadata(filename=filename, kind=kind)}
            | headers
        )
        return (client or self.client).generic("POST", "/api/uploads/", b"", **headers)

    def new_upload(self, length=100, **kwargs) -> str:
        response = self.create(length, **kwargs)
        assert response.status_code == 201, response.content
        return response["Location"]

    def patch(self, url, body: bytes, offset=0, client=None, **headers):
        headers = TUS | {"HTTP_UPLOAD_OFFSET": str(offset)} | headers
        return (client or self.client).generic(
            "PATCH", url, body, content_type=headers.pop("content_type", OCTETS), **headers
        )

    def head(self, url, client=None):
        return (client or self.client).head(url, **TUS)

    def uploads_folder(self) -> Path:
        return Path(settings.MEDIA_ROOT) / f"team-{self.blue.pk}" / "uploads"

    def every_file(self) -> list[Path]:
        return [path for path in Path(settings.MEDIA_ROOT).rglob("*") if path.is_file()]


class TusDoorsTestCase(TusTestCase):
    def test_an_upload_is_created_written_and_read_back_by_its_owner(self):
        url = self.new_upload(10)
        assert url.startswith("/api/uploads/") and len(url.rsplit("/", 1)[1]) == 36  # a UUID
        first = self.patch(url, b"01234")
        assert first.status_code == 204 and first["Upload-Offset"] == "5" and first["Tus-Resumable"] == "1.0.0"
        assert "Upload-Expires" in first
        head = self.head(url)
        assert (head.status_code, head["Upload-Offset"], head["Upload-Length"]) == (200, "5", "10")
        assert head["Cache-Control"] == "no-store"
        assert self.patch(url, b"56789", offset=5)["Upload-Offset"] == "10"
        upload = Upload.objects.get()
        assert upload.complete and upload.file_path.read_bytes() == b"0123456789"
        assert upload.file_path.parent == self.uploads_folder() and upload.file_path.name == f"{upload.pk.hex}.part"
        # the server account's alone, as every stored upload
        assert oct(upload.file_path.stat().st_mode & 0o777) == "0o600"
        assert oct(self.uploads_folder().stat().st_mode & 0o777) == "0o700"

    def test_options_says_version_extensions_and_the_largest_file(self):
        response = self.client.options("/api/uploads/")
        assert response.status_code == 204 and response["Tus-Version"] == "1.0.0"
        assert set(response["Tus-Extension"].split(",")) == {"creation", "termination", "expiration"}
        assert response["Tus-Max-Size"] == str(settings.MAX_UPLOAD_BYTES)

    def test_strangers_are_refused_before_anything_is_made_or_read(self):
        anonymous = Client()
        assert self.create(client=anonymous).status_code == 401
        url = self.new_upload(100)
        assert self.head(url, client=anonymous).status_code == 401
        # a big chunk from nobody is refused from its headers (webapp/core/middleware.py), the body unread
        big = anonymous.generic("PATCH", url, b"", content_type=OCTETS, CONTENT_LENGTH=str(8 * 2**20), **TUS)
        assert big.status_code == 401 and "Sign in before sending files" in big.json()["detail"]
        small = self.patch(url, b"x" * 10, client=anonymous)
        assert small.status_code == 401
        assert Upload.objects.get().offset == 0

    def test_a_session_must_send_its_csrf_token_as_a_header_and_a_token_needs_none(self):
        browser = Client(enforce_csrf_checks=True)
        browser.force_login(self.alice)
        refused = self.create(client=browser)
        assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
        browser.get("/datasets/")  # the page sets the CSRF cookie, as a browser's visit does
        token = browser.cookies[settings.CSRF_COOKIE_NAME].value
        assert self.create(client=browser, HTTP_X_CSRFTOKEN=token).status_code == 201
        api = Client()
        key = Token.objects.create(user=self.alice).key
        assert self.create(client=api, HTTP_AUTHORIZATION=f"Token {key}").status_code == 201
        assert self.create(client=api, HTTP_AUTHORIZATION="Token " + "0" * 40).status_code == 401

    def test_another_account_gets_404_for_every_method(self):
        url = self.new_upload(10)
        self.patch(url, b"01234")
        bob = Client()
        bob.force_login(self.bob)
        assert self.head(url, client=bob).status_code == 404
        assert self.patch(url, b"xxxxx", offset=5, client=bob).status_code == 404
        assert bob.delete(url, **TUS).status_code == 404
        # a colleague in the same team too: an upload is its owner's until a form makes it the team's row
        Membership.objects.create(user=self.bob, team=self.blue)
        assert self.head(url, client=bob).status_code == 404
        assert self.client.get(url.replace(url.rsplit("/", 1)[1], "not-a-uuid"), **TUS).status_code == 404
        upload = Upload.objects.get()
        assert upload.offset == 5 and upload.file_path.read_bytes() == b"01234"

    def test_an_owner_who_left_the_team_can_no_longer_reach_the_upload(self):
        url = self.new_upload(10)
        Membership.objects.filter(user=self.alice, team=self.blue).delete()
        assert self.head(url).status_code == 404

    def test_the_offset_must_be_where_the_upload_stands(self):
        url = self.new_upload(10)
        self.patch(url, b"01234")
        for wrong in (0, 3, 7):
            refused = self.patch(url, b"abc", offset=wrong)
            assert refused.status_code == 409, wrong
            assert (
                "clean_validation_data.h5: the upload stands at byte 5, this request starts at"
                in refused.json()["detail"]
            )
        assert Upload.objects.get().file_path.read_bytes() == b"01234"

    def test_nothing_passes_the_declared_length_or_the_caps(self):
        url = self.new_upload(10)
        past = self.patch(url, b"0123456789A")
        assert past.status_code == 413 and "pass the declared length of 10 bytes" in past.json()["detail"]
        assert Upload.objects.get().offset == 0
        over = self.create(settings.MAX_UPLOAD_BYTES + 1, filename="huge.h5")
        assert over.status_code == 413 and "huge.h5 is 2.0\xa0GB; the limit is 2.0\xa0GB" in over.json()["detail"]
        with override_settings(MAX_UPLOAD_CHUNK_BYTES=2**20):
            # over the chunk cap and its framing margin: refused from the headers, before a byte is read
            chunk = self.client.generic("PATCH", url, b"", content_type=OCTETS, CONTENT_LENGTH=str(3 * 2**20), **TUS)
            assert chunk.status_code == 413 and "resumable upload chunks" in chunk.json()["detail"]
            assert "chunk_size=8 * 2**20" in chunk.json()["detail"]
        assert Upload.objects.count() == 1

    def test_a_full_disk_is_the_servers_error_and_no_byte_of_the_request_counts(self):
        """An attack review: a write that failed (ENOSPC) was taken for a broken connection, so the answer was a
        204 with the offset unchanged and both clients (uploads.js, tuspy) sent the same chunk again at once, for
        ever; a small chunk was a 500. The upload's file is /dev/full here: the kernel's real ENOSPC."""
        url = self.new_upload(3 * 2**20)
        upload = Upload.objects.get()
        upload.file_path.unlink()
        upload.file_path.symlink_to("/dev/full")
        for size in (3 * 2**20, 5):  # written past the buffer, and held in it until the flush
            refused = self.patch(url, b"0" * size)
            assert refused.status_code == 507, (size, refused.content)
            assert "could not store" in refused.json()["detail"] and "need disk space" in refused.json()["detail"]
            assert Upload.objects.get().offset == 0 and self.head(url)["Upload-Offset"] == "0"

    def test_missing_or_malformed_headers_are_400_with_what_to_send(self):
        no_length = self.client.generic(
            "POST", "/api/uploads/", b"", **TUS, HTTP_UPLOAD_METADATA=metadata(filename="a.h5", kind="dataset")
        )
        assert no_length.status_code == 400 and "Upload-Length header is missing" in no_length.json()["detail"]
        for length in ("-5", "ten", "1e9"):
            bad = self.create(HTTP_UPLOAD_LENGTH=length)
            assert bad.status_code == 400 and "send a number of bytes" in bad.json()["detail"], length
        deferred = self.create(HTTP_UPLOAD_DEFER_LENGTH="1")
        assert deferred.status_code == 400 and "deferred length is not supported" in deferred.json()["detail"]
        nameless = self.create(HTTP_UPLOAD_METADATA=metadata(kind="dataset"))
        assert nameless.status_code == 400 and "needs the file's name" in nameless.json()["detail"]
        garbled = self.create(HTTP_UPLOAD_METADATA="filename !!notbase64!!")
        assert garbled.status_code == 400 and "not base64" in garbled.json()["detail"]
        kindless = self.create(HTTP_UPLOAD_METADATA=metadata(filename="a.h5"))
        assert kindless.status_code == 400 and "a.h5: say what the file is" in kindless.json()["detail"]
        wrong_type = self.create(filename="notes.txt")
        assert wrong_type.status_code == 400 and "notes.txt is not a dataset file" in wrong_type.json()["detail"]
        empty = self.create(0)
        assert empty.status_code == 400 and "is empty" in empty.json()["detail"]
        no_version = self.client.generic("POST", "/api/uploads/", b"", HTTP_UPLOAD_LENGTH="10")
        assert no_version.status_code == 412 and no_version["Tus-Version"] == "1.0.0"
        assert not Upload.objects.exists() and not self.every_file()

        url = self.new_upload(10)
        no_offset = self.client.generic("PATCH", url, b"abc", content_type=OCTETS, **TUS)
        assert no_offset.status_code == 400 and "Upload-Offset header is missing" in no_offset.json()["detail"]
        not_octets = self.patch(url, b"abc", content_type="multipart/form-data; boundary=x")
        assert not_octets.status_code == 415 and "application/offset+octet-stream" in not_octets.json()["detail"]
        assert Upload.objects.get().offset == 0

    def test_a_team_named_in_the_metadata_must_be_one_of_the_users(self):
        for team in (str(self.red.pk), "9" * 30, "blue"):
            other = self.create(HTTP_UPLOAD_METADATA=metadata(filename="a.h5", kind="dataset", team=team))
            assert other.status_code == 404 and "not a member of team" in other.json()["detail"], team
        own = self.create(HTTP_UPLOAD_METADATA=metadata(filename="a.h5", kind="dataset", team=str(self.blue.pk)))
        assert own.status_code == 201 and Upload.objects.get().team == self.blue

    @override_settings(MAX_OPEN_UPLOADS=3, MAX_OPEN_UPLOAD_BYTES=1000)
    def test_a_user_may_have_only_so_many_unfinished_uploads_and_bytes(self):
        for _ in range(2):
            self.new_upload(300)
        too_big = self.create(500, filename="third.h5")
        assert (
            too_big.status_code == 403
            and "third.h5 (500\xa0bytes) with your unfinished uploads (600\xa0bytes)" in (too_big.json()["detail"])
        )
        self.new_upload(400)
        too_many = self.create(1, filename="fourth.h5")
        assert too_many.status_code == 403 and "you have 3 unfinished uploads already" in too_many.json()["detail"]
        bob = Client()
        bob.force_login(self.bob)
        assert self.create(300, client=bob).status_code == 201  # the caps are per user
        # a finished upload holds its place until a form uses it; deleting one frees a place
        assert self.client.delete(self.url_of_first(), **TUS).status_code == 204
        assert self.create(1, filename="fourth.h5").status_code == 201

    def url_of_first(self) -> str:
        return f"/api/uploads/{Upload.objects.filter(owner=self.alice).order_by('created').first().pk}"

    def test_path_like_names_are_data_never_paths(self):
        hostile = ["../../../../../tmp/evil.h5", "/etc/cron.d/evil.h5", "..\\..\\windows\\evil.h5", "evil\x1b[31m.h5"]
        for name in hostile:
            url = self.new_upload(4, filename=name)
            assert self.patch(url, b"HDF?").status_code == 204
        names = sorted(Upload.objects.values_list("filename", flat=True))
        assert names == ["evil.h5"] * 4  # the last part of the path, terminal escapes removed
        stored = self.every_file()
        assert len(stored) == 4 and all(path.parent == self.uploads_folder() for path in stored)
        assert all(path.name.endswith(".part") and "evil" not in path.name for path in stored)
        assert not Path("/tmp/evil.h5").exists()

    def test_termination_removes_the_upload_and_its_bytes(self):
        url = self.new_upload(10)
        self.patch(url, b"01234")
        path = Upload.objects.get().file_path
        deleted = self.client.delete(url, **TUS)
        assert deleted.status_code == 204 and not path.exists() and not Upload.objects.exists()
        assert self.head(url).status_code == 404
        assert self.patch(url, b"56789", offset=5).status_code == 404

    def test_uploads_untouched_for_a_day_go_at_the_next_creation_or_by_the_command(self):
        stale = self.new_upload(10)
        fresh = self.new_upload(10)
        day_ago = timezone.now() - timedelta(seconds=settings.UPLOAD_EXPIRY_SECONDS + 60)
        Upload.objects.filter(pk=stale.rsplit("/", 1)[1]).update(updated=day_ago)
        stale_path = Path(settings.MEDIA_ROOT) / Upload.objects.get(pk=stale.rsplit("/", 1)[1]).path
        self.new_upload(10)
        assert self.head(stale).status_code == 404 and not stale_path.exists()
        assert self.head(fresh).status_code == 200

        Upload.objects.filter(pk=fresh.rsplit("/", 1)[1]).update(updated=day_ago)
        leftover = self.uploads_folder() / "check-abandoned"  # what a process killed during a check leaves
        leftover.mkdir()
        (leftover / "set.h5").write_bytes(b"x")
        old = time.time() - settings.UPLOAD_EXPIRY_SECONDS - 60
        os.utime(leftover, (old, old))
        call_command("expire_uploads", stdout=open(os.devnull, "w"))  # noqa: SIM115
        assert self.head(fresh).status_code == 404 and not leftover.exists()
        assert Upload.objects.count() == 1 and len(self.every_file()) == 1
