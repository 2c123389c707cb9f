"""The tus protocol as its official Python client, tuspy, speaks it to a live server (real sockets, the
whole middleware stack, an API token): an upload in chunks arrives byte for byte; a chunk whose connection
breaks off is kept as far as it came and the upload resumes from the offset HEAD reports; the API then makes a
dataset of the finished upload. The doors one by one are tests/webapp/test_tus_doors.py."""

import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from rest_framework.authtoken.models import Token
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

from tests.defenses.tiny import tiny_data, write_dataset
from tests.lab.factories import team_with_user
from webapp.lab.models import Dataset, Upload

pytestmark = pytest.mark.django_db(transaction=True)

CHUNK = 64 * 2**10  # small chunks: a test file of ~1 MB crosses many of them


@pytest.fixture
def media(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def alice():
    team, user = team_with_user()
    return team, user, Token.objects.create(user=user).key


@pytest.fixture
def dataset_file(tmp_path) -> Path:
    return write_dataset(tmp_path / "clean_validation_data.h5", *tiny_data(400))


def tus_client(live_server, token: str) -> TusClient:
    return TusClient(f"{live_server.url}/api/uploads/", headers={"Authorization": f"Token {token}"})


def uploader_for(client: TusClient, path: Path, **options):
    metadata = {"filename": path.name, "kind": "dataset"}
    return client.uploader(file_path=str(path), chunk_size=CHUNK, metadata=metadata, **options)


def stored(url: str) -> Upload:
    return Upload.objects.get(pk=url.rstrip("/").rsplit("/", 1)[1])


def break_off(url: str, token: str, offset: int, declared: int, sent: bytes) -> bytes:
    """A PATCH whose headers promise `declared` bytes but whose connection ends after `sent`: the client's side
    is shut (as a dropped link ends it for the server), and the server's answer read."""
    parts = urlsplit(url)
    head = (
        f"PATCH {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Token {token}\r\n"
        f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    with socket.create_connection((parts.hostname, parts.port)) as connection:
        connection.sendall(head.encode() + sent)
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_an_upload_in_chunks_arrives_byte_for_byte_and_becomes_a_dataset(live_server, media, alice, dataset_file):
    team, user, token = alice
    uploader = uploader_for(tus_client(live_server, token), dataset_file)
    uploader.upload()
    upload = stored(uploader.url)
    size = dataset_file.stat().st_size
    assert size > 8 * CHUNK and uploader.offset == upload.offset == upload.length == size
    assert upload.file_path.read_bytes() == dataset_file.read_bytes()
    assert upload.file_path.parent == media / f"team-{team.pk}" / "uploads"
    assert uploader.get_offset() == size  # HEAD, as a resuming client asks it

    created = requests.post(
        f"{live_server.url}/api/datasets/",
        json={"name": "valid", "role": Dataset.CLEAN_VALID, "upload": str(upload.pk)},
        headers={"Authorization": f"Token {token}"},
    )
    assert created.status_code == 201, created.text
    dataset = Dataset.objects.get()
    assert (dataset.count, dataset.original_name, dataset.owner) == (400, dataset_file.name, user)
    assert Path(dataset.file.path).read_bytes() == dataset_file.read_bytes()
    assert not Upload.objects.exists() and not upload.file_path.exists()


def test_an_upload_resumes_after_a_chunk_breaks_off(live_server, media, alice, dataset_file):
    _, _, token = alice
    client = tus_client(live_server, token)
    data = dataset_file.read_bytes()
    first = uploader_for(client, dataset_file)
    first.set_url(first.create_url())
    first.upload_chunk()
    assert first.offset == CHUNK

    part = CHUNK // 3
    answer = break_off(first.url, token, CHUNK, CHUNK, data[CHUNK : CHUNK + part])
    assert answer.startswith(b"HTTP/1.1 204") and f"Upload-Offset: {CHUNK + part}".encode() in answer
    assert stored(first.url).offset == CHUNK + part  # what arrived before the break is kept

    # the client that lost its connection asks where the upload stands (HEAD) and goes on from there
    resumed = uploader_for(client, dataset_file, url=first.url)
    assert resumed.offset == CHUNK + part
    resumed.upload()
    assert stored(first.url).file_path.read_bytes() == data


def test_a_stale_offset_conflicts_and_a_retrying_client_recovers(live_server, media, alice, dataset_file):
    _, _, token = alice
    client = tus_client(live_server, token)
    ahead = uploader_for(client, dataset_file)
    ahead.set_url(ahead.create_url())
    ahead.upload_chunk()
    stale = uploader_for(client, dataset_file, url=ahead.url)
    ahead.upload_chunk()  # the upload moved on; `stale` still thinks it is at one chunk
    with pytest.raises(TusUploadFailed) as conflict:
        stale.upload_chunk()
    assert conflict.value.status_code == 409 and b"Ask HEAD for Upload-Offset" in conflict.value.response_content
    # tuspy's own retry asks HEAD after a failed chunk and continues from the server's offset
    retrying = uploader_for(client, dataset_file, url=ahead.url, retries=1, retry_delay=0)
    retrying.offset = 0
    retrying.upload()
    assert stored(ahead.url).file_path.read_bytes() == dataset_file.read_bytes()


def test_another_account_cannot_see_or_continue_the_upload(live_server, media, alice, dataset_file):
    _, _, token = alice
    mine = uploader_for(tus_client(live_server, token), dataset_file)
    mine.set_url(mine.create_url())
    mine.upload_chunk()
    _, bob = team_with_user("red", "bob")
    with pytest.raises(TusCommunicationError) as hidden:  # the HEAD a resuming client starts with
        uploader_for(tus_client(live_server, Token.objects.create(user=bob).key), dataset_file, url=mine.url)
    assert hidden.value.status_code == 404
    assert stored(mine.url).offset == CHUNK
