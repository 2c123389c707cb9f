"""The server side of the tus resumable-upload protocol 1.0.0 (https://tus.io/protocols/resumable-upload): the
core protocol with the creation, termination and expiration extensions, at /api/uploads/.

Python's tus servers (django-tus and the like) are small and little kept, while the protocol is stable and
well specified, and both its official clients (tuspy, tus-js-client) and ours (static/prunelab/uploads.js)
follow it; so the protocol is implemented here, in one module, on the storage rules of webapp/lab/uploads.py.

    POST   /api/uploads/       Upload-Length, Upload-Metadata (filename, kind: dataset|badnet, team: optional id)
                               -> 201, Location: /api/uploads/<uuid>
    HEAD   /api/uploads/<id>   -> 200, Upload-Offset, Upload-Length
    PATCH  /api/uploads/<id>   Upload-Offset, Content-Type: application/offset+octet-stream, the bytes
                               -> 204, Upload-Offset
    DELETE /api/uploads/<id>   -> 204
    OPTIONS                    -> 204, Tus-Version, Tus-Extension, Tus-Max-Size

Signed-in users only: a session (with its CSRF token in the X-CSRFToken header) or an API token, as for the
rest of the API. A PATCH's body was judged from its headers before this runs (webapp/core/middleware.py: at
most MAX_UPLOAD_CHUNK_BYTES a request); anyone else's upload is a 404. A finished upload becomes a row only
through a dataset or BadNet form (`upload` = its id), with every check of a plain upload.
"""

import base64
import binascii
import io
from datetime import timedelta

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.urls import reverse
from django.utils.http import http_date
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from webapp.lab import uploads
from webapp.lab.access import current_team, teams_of
from webapp.lab.models import Upload
from webapp.lab.uploads import UploadRefused

VERSION = "1.0.0"
EXTENSIONS = "creation,termination,expiration"
CONTENT_TYPE = "application/offset+octet-stream"
MAX_METADATA_CHARS = 4096


class VersionMismatch(APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = f"This server speaks tus {VERSION}: send the header 'Tus-Resumable: {VERSION}'."


class UnreadBody(BaseParser):
    """Any body, left unread: a PATCH's bytes are read by the view itself, in pieces, and a creation's body must
    be empty (the view says so). Without a parser DRF's CSRF check, which asks for request.POST, would read it
    and answer 415 before the view could give its reason."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return {}


class TusView(APIView):
    """What every tus answer shares: the version check and headers, errors as {"detail": advice} JSON, and no
    body parsing."""

    parser_classes = [UnreadBody]
    renderer_classes = [JSONRenderer]
    schema = None  # the protocol is tus's, not an OpenAPI operation; README and the docstring above describe it

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # authentication first: a stranger learns nothing, not even this
        if request.method != "OPTIONS" and request.headers.get("Tus-Resumable") != VERSION:
            raise VersionMismatch()

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Tus-Resumable"] = VERSION
        response["Cache-Control"] = "no-store"  # an offset from a cache would resume at the wrong byte
        if response.status_code == status.HTTP_412_PRECONDITION_FAILED:
            response["Tus-Version"] = VERSION
        return response

    def options(self, request, *args, **kwargs):
        response = HttpResponse(status=204)
        response["Tus-Version"] = VERSION
        response["Tus-Extension"] = EXTENSIONS
        response["Tus-Max-Size"] = str(settings.MAX_UPLOAD_BYTES)
        return response


def refused(refusal: UploadRefused) -> JsonResponse:
    return JsonResponse({"detail": str(refusal)}, status=refusal.status)


def byte_count(request, header: str) -> int:
    """A header that must hold a byte count (Upload-Length, Upload-Offset); 400 with advice otherwise."""
    raw = request.headers.get(header, "").strip()
    if not raw:
        raise UploadRefused(400, f"The {header} header is missing: send it with the number of bytes.")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise UploadRefused(400, f"The {header} header is {raw[:40]!r}: send a number of bytes (0 or more).")
    return int(raw)


def parse_metadata(header: str) -> dict[str, str]:
    """Upload-Metadata: comma-separated 'key base64(value)' pairs (a key alone means an empty value)."""
    if len(header) > MAX_METADATA_CHARS:
        raise UploadRefused(400, f"Upload-Metadata is {len(header):,} characters; send at most {MAX_METADATA_CHARS}.")
    pairs = {}
    for item in header.split(","):
        key, _, value = item.strip().partition(" ")
        if not key:
            continue
        if key in pairs:
            raise UploadRefused(400, f"Upload-Metadata names {key!r} twice; send each key once.")
        try:
            pairs[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise UploadRefused(
                400, f"Upload-Metadata: the value of {key[:40]!r} is not base64 of UTF-8 text."
            ) from None
    return pairs


def encode_metadata(upload: Upload) -> str:
    values = {"filename": upload.filename, "kind": upload.kind}
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


def team_named(request, metadata: dict):
    """The team the upload is for: the metadata's `team` (an id of one of the user's teams), else the team the
    user works in (the session's, else the one they joined first: as the API's create calls choose)."""
    wanted = metadata.get("team", "").strip()
    if not wanted:
        team = current_team(request)
        if team is None:
            raise UploadRefused(404, "You belong to no team yet: create one on the Teams page, or ask to be invited.")
        return team
    number = wanted.isascii() and wanted.isdigit() and len(wanted) <= 18  # a longer one overflows the database
    team = teams_of(request.user).filter(pk=int(wanted)).first() if number else None
    if team is None:
        raise UploadRefused(404, f"You are not a member of team {wanted[:20]!r}, or there is no such team.")
    return team


def with_expiry(response: HttpResponse, upload: Upload) -> HttpResponse:
    expires = upload.updated + timedelta(seconds=settings.UPLOAD_EXPIRY_SECONDS)
    response["Upload-Expires"] = http_date(expires.timestamp())
    return response


class Uploads(TusView):
    """The creation URL."""

    def post(self, request):
        try:
            if request.headers.get("Upload-Defer-Length"):
                raise UploadRefused(400, "A deferred length is not supported: send Upload-Length, the file's size.")
            if request.META.get("CONTENT_LENGTH", "0").strip() not in ("", "0"):
                raise UploadRefused(400, "Create the upload with an empty body, then send the bytes with PATCH.")
            length = byte_count(request, "Upload-Length")
            metadata = parse_metadata(request.headers.get("Upload-Metadata", ""))
            if not metadata.get("filename", "").strip():
                raise UploadRefused(400, "Upload-Metadata needs the file's name: 'filename <base64 of the name>'.")
            team = team_named(request, metadata)
            upload = uploads.open_upload(request.user, team, metadata.get("kind", ""), metadata["filename"], length)
        except UploadRefused as refusal:
            return refused(refusal)
        response = HttpResponse(status=201)
        response["Location"] = reverse("api:upload", args=[upload.pk])
        response["Upload-Offset"] = "0"
        return with_expiry(response, upload)


class UploadDetail(TusView):
    """One upload's URL: where it stands (HEAD), its next bytes (PATCH), its end (DELETE)."""

    def head(self, request, pk):
        upload = uploads.upload_of(request.user, pk)
        if upload is None:
            return HttpResponse(status=404)  # a HEAD answer has no body to say more in
        response = HttpResponse(status=200)
        response["Upload-Offset"] = str(upload.offset)
        response["Upload-Length"] = str(upload.length)
        response["Upload-Metadata"] = encode_metadata(upload)
        return with_expiry(response, upload)

    def patch(self, request, pk):
        upload = uploads.upload_of(request.user, pk)
        try:
            if upload is None:
                raise UploadRefused(404, "No such upload of yours: it was used, deleted or expired. Upload again.")
            if request.content_type.split(";")[0].strip().lower() != CONTENT_TYPE:
                raise UploadRefused(415, f"{upload.filename}: send the bytes with 'Content-Type: {CONTENT_TYPE}'.")
            offset = byte_count(request, "Upload-Offset")
            length = int(request.META.get("CONTENT_LENGTH") or 0)  # a byte count: the body guard saw to that
            if length > settings.MAX_UPLOAD_CHUNK_BYTES:  # the guard refused larger ones already; said again here
                raise UploadRefused(413, f"{upload.filename}: send at most {settings.MAX_UPLOAD_CHUNK_BYTES} a PATCH.")
            upload = uploads.append(upload, offset, length, request.stream or io.BytesIO())
        except UploadRefused as refusal:
            return refused(refusal)
        response = HttpResponse(status=204)
        response["Upload-Offset"] = str(upload.offset)
        return with_expiry(response, upload)

    def delete(self, request, pk):
        upload = uploads.upload_of(request.user, pk)
        if upload is None:
            return refused(UploadRefused(404, "No such upload of yours: it was used, deleted or expired."))
        uploads.remove(upload)
        return HttpResponse(status=204)
