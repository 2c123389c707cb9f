"""Every request body is judged from its headers before a byte of it is read: who sends it (a session, or an
API token on /api/) and how long it says it is. Without this, Django's CSRF check reads request.POST for any
POST and so spools a stranger's 2 GB upload to disk before answering 403, and the size cap was only checked
once the whole file had arrived.

Refusals, body unread:
- a body without a Content-Length (Transfer-Encoding: chunked): 411. Django would read nothing of it anyway
  (a missing CONTENT_LENGTH counts as 0) and the view would then complain about a missing file; saying so
  plainly is better than accepting a body we ignore.
- a malformed or negative Content-Length: 400;
- a wrong API token: 401, or 429 when the address has sent too many (webapp/core/tokens.py);
- no session and no good token, body over ANONYMOUS_MAX_BODY_BYTES: 401 JSON on /api/, 403 on pages;
- over what the address takes (`body_cap`: multipart uploads MAX_UPLOAD_BYTES, a resumable upload's PATCH
  MAX_UPLOAD_CHUNK_BYTES, the image test its images, every other form or JSON body FORM_MAX_BODY_BYTES), plus
  MAX_REQUEST_OVERHEAD_BYTES for the framing: 413.
"""

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.template.defaultfilters import filesizeformat
from django.urls import Resolver404, resolve
from rest_framework.exceptions import AuthenticationFailed, Throttled

from webapp.core.tokens import JUDGED, ThrottledTokenAuthentication


def guard_request_bodies(get_response):
    def middleware(request):
        return judge_body(request) or get_response(request)

    return middleware


def judge_body(request) -> HttpResponse | None:
    """A refusal for a body that must not be read, or None to let the request through."""
    if request.META.get("HTTP_TRANSFER_ENCODING"):
        return refuse(
            request,
            411,
            "This server needs the length of a request body up front. Send the file "
            "with a Content-Length header (browsers, curl -F and requests with a file "
            "object do), not with Transfer-Encoding: chunked.",
        )
    length = declared_length(request)
    if length is None:
        return refuse(
            request,
            400,
            "The Content-Length header is not a byte count. Send the request again "
            "with a correct one (your HTTP client normally sets it).",
        )
    if length == 0:
        return None
    try:
        signed_in = sender_is_known(request)
    except Throttled as throttled:
        response = refuse(request, 429, str(throttled.detail))
        response["Retry-After"] = str(throttled.wait or 1)
        return response
    except AuthenticationFailed as failed:
        return refuse(
            request,
            401,
            f"{failed.detail} Copy the token from your API page; the header reads 'Authorization: Token <key>'.",
        )
    if not signed_in and length > settings.ANONYMOUS_MAX_BODY_BYTES:
        return refuse(
            request,
            401 if is_api(request) else 403,
            (
                f"Sign in before sending files: without a session or an API token a request may carry at most "
                f"{filesizeformat(settings.ANONYMOUS_MAX_BODY_BYTES)}. Sign in (or send 'Authorization: Token "
                "<key>' to the API) and send it again."
            ),
        )
    cap, what = body_cap(request)
    if length > cap + settings.MAX_REQUEST_OVERHEAD_BYTES:
        advice = (
            "Send smaller chunks (tuspy: chunk_size=8 * 2**20), or ask an operator to raise "
            "PRUNELAB_MAX_UPLOAD_CHUNK_BYTES."
            if what == CHUNKS
            else "Send less, or ask an operator to raise PRUNELAB_MAX_UPLOAD_BYTES."
        )
        return refuse(
            request,
            413,
            f"This request is {filesizeformat(length)}; {what} are limited to {filesizeformat(cap)}. {advice}",
        )
    return None


# Where files come in (route names): everything else takes a form or JSON body, or the image test's images.
UPLOAD_ROUTES = {"badnets", "datasets", "goodnet-upload", "api:badnet-list", "api:dataset-list"}
IMAGE_ROUTES = {"classify", "api:api-classify"}
# A resumable upload's bytes come in PATCH requests to its own URL (webapp/lab/tus.py), each of a bounded size.
CHUNK_ROUTES = {"api:upload"}
CHUNKS = "resumable upload chunks (tus PATCH requests)"


def body_cap(request) -> tuple[int, str]:
    """The largest body this address takes, and what it takes, in words: a 2 GB upload is for the upload
    forms, not for any URL a signed-in user can POST to (every body is spooled before a view can say no)."""
    try:
        route = resolve(request.path_info).view_name
    except Resolver404:
        route = ""
    if route in UPLOAD_ROUTES and request.content_type == "multipart/form-data":
        # only a multipart body carries a file (Django spools it to disk); a JSON or form-encoded one (the API's
        # `upload` id) is read into memory, so it is judged as any other form or JSON body
        return settings.MAX_UPLOAD_BYTES, "uploads"
    if route in CHUNK_ROUTES:
        return settings.MAX_UPLOAD_CHUNK_BYTES, CHUNKS
    if route in IMAGE_ROUTES:
        return settings.MAX_IMAGES_PER_TEST * settings.MAX_IMAGE_UPLOAD_BYTES, "the image test's images"
    return settings.FORM_MAX_BODY_BYTES, "forms and JSON bodies here"


def declared_length(request) -> int | None:
    """The Content-Length as a byte count (0 when absent), or None when it is not one."""
    raw = request.META.get("CONTENT_LENGTH", "").strip()
    if not raw:
        return 0
    return int(raw) if raw.isascii() and raw.isdigit() else None


def sender_is_known(request) -> bool:
    """Signed in by session, or (on the API, the only place that honours tokens) by a good token. The token
    is judged exactly as DRF will judge it, and the verdict is kept for DRF so the key is looked up once."""
    if is_api(request):
        found = ThrottledTokenAuthentication().authenticate(request)
        if found:
            setattr(request, JUDGED, found)
            return True
    return request.user.is_authenticated


def is_api(request) -> bool:
    return request.path_info.startswith("/api/")


def refuse(request, status: int, message: str) -> HttpResponse:
    """The answer to a body that is not read: make run's server (webapp/core/devserver.py) then closes the
    connection rather than read the rest or take it for the next request; gunicorn drains it."""
    if is_api(request):
        response = JsonResponse({"detail": message}, status=status)
        if status == 401:
            response["WWW-Authenticate"] = "Token"
        return response
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
