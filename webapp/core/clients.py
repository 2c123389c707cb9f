"""Who is on the other end of a request, as far as per-address limits are concerned."""

from django.conf import settings


def client_ip(request) -> str:
    """The client's address: REMOTE_ADDR, or behind TRUSTED_PROXIES reverse proxies the address the outermost
    one saw. Only entries our own proxies appended are believed: anything further left in X-Forwarded-For
    was written by the client, and believing it would let a client escape every per-address limit."""
    remote = request.META.get("REMOTE_ADDR", "")
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if settings.TRUSTED_PROXIES <= 0 or not forwarded:
        return remote
    return forwarded[-min(settings.TRUSTED_PROXIES, len(forwarded))]
