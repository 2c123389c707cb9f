"""Request bodies are judged from their headers before they are read (webapp/core/middleware.py): strangers
may send a sign-in form and nothing bigger, nobody sends more than the upload cap, and a body without a
length is refused. The live-server tests stream a declared 1 GiB body from a raw socket into a real server
and watch the upload temporary folder and the media folder while they do."""

import select
import socket
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.servers.basehttp import ThreadedWSGIServer
from django.test import LiveServerTestCase, override_settings
from django.test.testcases import LiveServerThread
from rest_framework.authtoken.models import Token

from tests.webapp.base import BaseTestCase
from webapp.core.devserver import ClosingRequestHandler
from webapp.lab.models import BadNet, Dataset

GIB = 2**30
CSRF_COOKIE = f"{settings.CSRF_COOKIE_NAME}={'a' * 32}"
BOUNDARY = "prunelab-test-boundary"
# The start of a multipart upload of a "dataset"; the rest of the declared length is zeros.
PREAMBLE = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig\r\n--{BOUNDARY}\r\n'
    f'Content-Disposition: form-data; name="role"\r\n\r\nclean-test\r\n--{BOUNDARY}\r\n'
    'Content-Disposition: form-data; name="file"; filename="big.h5"\r\n'
    "Content-Type: application/octet-stream\r\n\r\n"
).encode()


class BodyGuardTestCase(BaseTestCase):
    """The verdicts, through the test client (whose body is never as long as it claims: reading it fails)."""

    def setUp(self):
        super().setUp()
        self.token = Token.objects.create(user=self.alice).key

    def post(self, path, length, **headers):
        return self.client.post(path, {}, CONTENT_LENGTH=str(length), **headers)

    def test_a_stranger_may_send_a_sign_in_form_and_nothing_bigger(self):
        page = self.post("/datasets/", GIB)
        assert page.status_code == 403 and "Sign in before sending files" in page.content.decode()
        api = self.post("/api/datasets/", GIB)
        assert api.status_code == 401 and api["WWW-Authenticate"] == "Token"
        assert "at most 64.0\xa0KB" in api.json()["detail"]
        signed_in = self.client.post("/login/", {"username": "alice", "password": "password-alice"})
        assert signed_in.status_code == 302 and signed_in["Location"] == settings.LOGIN_REDIRECT_URL

    def test_a_token_only_counts_on_the_api_and_a_wrong_one_is_refused_before_the_body(self):
        good, wrong = f"Token {self.token}", "Token 0123456789abcdef0123456789abcdef01234567"
        assert self.post("/datasets/", GIB, HTTP_AUTHORIZATION=good).status_code == 403  # pages sign in by session
        refused = self.post("/api/datasets/", GIB, HTTP_AUTHORIZATION=wrong)
        assert refused.status_code == 401 and "Invalid token." in refused.json()["detail"]

    @override_settings(MAX_UPLOAD_BYTES=10 * 2**20)
    def test_over_the_cap_is_413_for_everyone(self):
        over = 11 * 2**20 + 1  # cap plus the 1 MiB margin for the multipart framing, plus one
        api = self.post("/api/datasets/", over, HTTP_AUTHORIZATION=f"Token {self.token}")
        assert api.status_code == 413 and "uploads are limited to 10.0\xa0MB" in api.json()["detail"]
        self.client.force_login(self.alice)
        page = self.post("/badnets/", over)
        assert page.status_code == 413 and "PRUNELAB_MAX_UPLOAD_BYTES" in page.content.decode()

    def test_only_the_upload_forms_take_upload_sized_bodies(self):
        """A signed-in user could POST 2 GB to any address (a 404, the image test, a JSON endpoint), spooled
        before any view could refuse it. Each address now takes what it needs."""
        auth = {"HTTP_AUTHORIZATION": f"Token {self.token}"}
        json_body = self.post("/api/experiments/", 5 * 2**20, **auth)
        assert (
            json_body.status_code == 413
            and "forms and JSON bodies here are limited to 1.0" in json_body.json()["detail"]
        )
        images = self.post("/api/classify/", 200 * 2**20, **auth)
        assert images.status_code == 413 and "the image test's images are limited to 128.0" in images.json()["detail"]
        self.client.force_login(self.alice)
        for path in ("/no/such/page/", "/experiments/new/", "/teams/"):
            assert self.post(path, 50 * 2**20).status_code == 413, path

    def test_the_upload_addresses_take_upload_sized_bodies_as_multipart_only(self):
        """An attack review: a 5 MB JSON or form-encoded body to /api/datasets/ (which takes JSON with an upload's
        id) passed the upload cap and met Django's in-memory limit in the view: a bare HTML 400 with no reason, and
        a server error logged. Only a multipart body carries a file; any other is judged as forms and JSON are."""
        auth = {"HTTP_AUTHORIZATION": f"Token {self.token}"}
        for content_type in ("application/json", "application/x-www-form-urlencoded", "text/plain"):
            body = self.client.post(
                "/api/datasets/", "x", content_type=content_type, CONTENT_LENGTH=str(5 * 2**20), **auth
            )
            assert body.status_code == 413, (content_type, body.content[:200])
            assert "forms and JSON bodies here are limited to 1.0" in body.json()["detail"]
        self.client.force_login(self.alice)
        page = self.client.post(
            "/datasets/", "x", content_type="application/x-www-form-urlencoded", CONTENT_LENGTH=str(5 * 2**20)
        )
        assert page.status_code == 413 and "limited to 1.0" in page.content.decode()
        small = self.client.post("/api/datasets/", {"name": "x"}, content_type="application/json", **auth)
        assert small.status_code == 400 and "errors" in small.json()  # a JSON body under the cap reaches the form

    def test_a_length_that_is_not_a_byte_count_is_400(self):
        self.client.force_login(self.alice)
        for length in ("-1", "12abc", "1e9", "+5", "٣"):
            response = self.post("/datasets/", length)
            assert response.status_code == 400 and "not a byte count" in response.content.decode(), length

    def test_a_body_without_a_length_is_refused_not_ignored(self):
        # Django reads nothing of a body without CONTENT_LENGTH; the view would have said "no file".
        self.client.force_login(self.alice)
        response = self.client.post("/datasets/", {}, CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked")
        assert response.status_code == 411 and "Content-Length" in response.content.decode()


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


class MakeRunServerThread(LiveServerThread):
    """The live server with make run's request handler (webapp/core/devserver.py), not Django's own."""

    def _create_server(self, connections_override=None):
        return ThreadedWSGIServer(
            (self.host, self.port),
            ClosingRequestHandler,
            allow_reuse_address=False,
            connections_override=connections_override,
        )


class LiveBodyTestCase(LiveServerTestCase):
    """A real server (make run's) and a raw socket: the refusal comes while the client is still sending, the
    server wrote (almost) nothing of the body anywhere, and closed the connection rather than read on."""

    server_thread_class = MakeRunServerThread

    def setUp(self):
        super().setUp()
        self.spool = Path(self.enterContext(tempfile.TemporaryDirectory()))
        self.media = Path(self.enterContext(tempfile.TemporaryDirectory()))
        self.enterContext(override_settings(FILE_UPLOAD_TEMP_DIR=str(self.spool), MEDIA_ROOT=str(self.media)))
        self.alice = get_user_model().objects.create_user("alice", password="password-alice")

    def stream(self, path: str, headers: dict, budget=48 * 2**20, seconds=20.0) -> tuple[int | None, int]:
        """Send the headers, then body chunks until the server answers (or the budget is spent); the answer's
        status (None: no answer) and the most the two folders ever held together meanwhile. After the answer
        the client goes on sending: `self.taken_after` is how much more the server took (read or buffered)."""
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.server_thread.host}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        chunked = headers.get("Transfer-Encoding") == "chunked"
        chunk = b"\0" * 2**16
        if chunked:
            chunk = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        peak, sent, deadline = 0, 0, time.monotonic() + seconds
        with socket.create_connection((self.server_thread.host, self.server_thread.port), timeout=seconds) as sock:
            sock.sendall(head + (b"" if chunked else PREAMBLE))
            sock.setblocking(False)
            answered = False
            while sent < budget and time.monotonic() < deadline:
                readable, writable, _ = select.select([sock], [sock], [], 0.2)
                peak = max(peak, folder_bytes(self.spool) + folder_bytes(self.media))
                if readable:
                    answered = True
                    break
                if writable:
                    try:
                        sent += sock.send(chunk)
                    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                        answered = True  # the server stopped listening: its answer is in the socket
                        break
            status = read_status(sock) if answered else None
            self.taken_after = keep_sending(sock, chunk, 64 * 2**20, 3.0) if answered else 0
        return status, peak

    def session_cookie(self) -> str:
        self.client.force_login(self.alice)
        return f"{settings.SESSION_COOKIE_NAME}={self.client.cookies[settings.SESSION_COOKIE_NAME].value}"

    def upload_headers(self, length: int, **extra) -> dict:
        # With a CSRF cookie (anyone gets one from the sign-in page) Django's CSRF check reads request.POST
        # to find the form's token: without the guard, that spools the whole body.
        return {
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Length": str(length),
            "Cookie": CSRF_COOKIE,
            **extra,
        }

    def assert_nothing_kept(self, peak: int):
        assert peak < 2**20, f"{peak} bytes of the body were written"
        assert folder_bytes(self.spool) + folder_bytes(self.media) < 2**20
        assert not Dataset.objects.exists() and not BadNet.objects.exists()

    def test_a_strangers_gigabyte_is_refused_before_it_is_read(self):
        for path, expected in (("/datasets/", 403), ("/api/datasets/", 401), ("/badnets/", 403)):
            status, peak = self.stream(path, self.upload_headers(GIB))
            assert status == expected, (path, status)
            self.assert_nothing_kept(peak)
            # The development server used to read the rest of the body into memory after answering.
            assert self.taken_after < 16 * 2**20, f"the server went on reading: {self.taken_after} bytes"

    @override_settings(MAX_UPLOAD_BYTES=100 * 2**20)
    def test_a_signed_in_upload_over_the_cap_is_413_before_it_is_read(self):
        token = Token.objects.create(user=self.alice).key
        for path, auth in (
            ("/datasets/", {"Cookie": f"{CSRF_COOKIE}; {self.session_cookie()}"}),
            ("/api/datasets/", {"Authorization": f"Token {token}"}),
        ):
            status, peak = self.stream(path, self.upload_headers(GIB, **auth))
            assert status == 413, (path, status)
            self.assert_nothing_kept(peak)

    def test_a_request_hidden_in_a_refused_body_is_never_served(self):
        """The attack review's desync: an anonymous POST refused unread, whose body begins with a second
        request. The server used to keep the connection and answer the hidden GET as the next request."""
        hidden = f"GET /smuggled HTTP/1.1\r\nHost: {self.server_thread.host}\r\n\r\n".encode()
        body = hidden + b"x" * (70_000 - len(hidden))
        head = (
            f"POST /datasets/ HTTP/1.1\r\nHost: {self.server_thread.host}\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: application/octet-stream\r\nCookie: {CSRF_COOKIE}\r\n\r\n"
        ).encode()
        with socket.create_connection((self.server_thread.host, self.server_thread.port), timeout=10) as sock:
            sock.sendall(head + body)
            answers = b""
            while chunk := sock.recv(65536):  # until the server closes the connection
                answers += chunk
        assert answers.startswith(b"HTTP/1.1 403") and b"Connection: close" in answers
        assert answers.count(b"HTTP/1.1 ") == 1, answers[:2000]  # no second answer: nothing else was served

    def test_a_request_hidden_behind_doubtful_framing_is_never_served(self):
        """The second review's variants: a length Django reads as 0 ('abc', '-5', '5, 5'), two lengths, a
        Transfer-Encoding beside a zero length. Each gets one answer and the connection ends."""
        host = self.server_thread.host
        hidden = f"GET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        for framing in (
            "Content-Length: abc",
            "Content-Length: -5",
            "Content-Length: 5, 5",
            "Content-Length: 0x10",
            "Content-Length: 3\r\nContent-Length: 70",
            "Transfer-Encoding: identity\r\nContent-Length: 0",
            "Transfer-Encoding: Chunked\r\nContent-Length: 0",
        ):
            head = f"POST /datasets/ HTTP/1.1\r\nHost: {host}\r\n{framing}\r\nCookie: {CSRF_COOKIE}\r\n\r\n"
            with socket.create_connection((host, self.server_thread.port), timeout=10) as sock:
                sock.sendall(head.encode() + hidden)
                answers = b""
                while chunk := sock.recv(65536):
                    answers += chunk
            assert answers.count(b"HTTP/1.1 ") == 1 and b"Connection: close" in answers, (framing, answers[:600])

    def test_no_100_continue_before_the_refusal(self):
        host = self.server_thread.host
        head = (
            f"POST /datasets/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: {GIB}\r\nExpect: 100-continue\r\n"
            f"Content-Type: {self.upload_headers(0)['Content-Type']}\r\nCookie: {CSRF_COOKIE}\r\n\r\n"
        )
        with socket.create_connection((host, self.server_thread.port), timeout=10) as sock:
            sock.sendall(head.encode())
            first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 403"), first[:200]  # the verdict, not an invitation to send 1 GiB

    def test_a_chunked_body_is_refused_before_it_is_read(self):
        token = Token.objects.create(user=self.alice).key
        headers = {
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Transfer-Encoding": "chunked",
            "Authorization": f"Token {token}",
        }
        status, peak = self.stream("/api/datasets/", headers)
        assert status == 411
        self.assert_nothing_kept(peak)


def read_status(sock: socket.socket) -> int | None:
    """The status code of the response waiting in the socket (None when the server closed without one)."""
    sock.setblocking(True)
    sock.settimeout(5)
    data = b""
    try:
        while b"\r\n" not in data:
            more = sock.recv(4096)
            if not more:
                break
            data += more
    except (TimeoutError, ConnectionResetError):
        pass
    first = data.split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) >= 2 and first[1].isdigit() else None


def keep_sending(sock, chunk: bytes, budget: int, seconds: float) -> int:
    """Bytes the peer takes within `seconds`: socket buffers (a few MB) if it stopped reading, all if not."""
    sent, deadline = 0, time.monotonic() + seconds
    while sent < budget and time.monotonic() < deadline:
        _, writable, _ = select.select([], [sock], [], 0.2)
        if writable:
            try:
                sent += sock.send(chunk)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
    return sent
