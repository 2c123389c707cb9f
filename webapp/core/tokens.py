"""API-token authentication with a bound on guessing: DRF's TokenAuthentication, counting wrong tokens per
client address with DRF's own throttle bookkeeping (in the shared cache, so every worker process sees the
same count). The body guard in webapp/core/middleware.py judges tokens with this same class."""

from django.conf import settings
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.throttling import SimpleRateThrottle

from webapp.core.clients import client_ip

# Set on the Django request by the body guard once it has judged a good token, so that DRF does not look
# the same key up a second time.
JUDGED = "prunelab_token_auth"


class WrongTokenThrottle(SimpleRateThrottle):
    """Wrong tokens per client address in a sliding window; only failures are recorded."""

    scope = "wrong-token"

    def __init__(self):
        # The limits are ours, not a DRF rate string (which knows no "15 minutes").
        self.num_requests = settings.TOKEN_FAILURE_LIMIT
        self.duration = settings.TOKEN_FAILURE_WINDOW_SECONDS

    def get_cache_key(self, request, view=None):
        return self.cache_format % {"scope": self.scope, "ident": client_ip(request)}

    def exhausted(self, request) -> bool:
        self.key = self.get_cache_key(request)
        self.now = self.timer()
        self.history = [hit for hit in self.cache.get(self.key, []) if hit > self.now - self.duration]
        return len(self.history) >= self.num_requests

    def record_failure(self, request) -> None:
        if not hasattr(self, "history"):
            self.exhausted(request)
        self.throttle_success()  # DRF's name for "add this hit to the history"


class ThrottledTokenAuthentication(TokenAuthentication):
    def authenticate(self, request):
        judged = getattr(request, JUDGED, None)
        if judged:
            return judged
        words = get_authorization_header(request).split()
        if not words or words[0].lower() != self.keyword.lower().encode():
            return None  # no token offered: the next authenticator (session) decides
        throttle = WrongTokenThrottle()
        # Checked before the lookup, and for good tokens too: the point is to bound the work an address can
        # cause, and a 429-versus-200 answer would otherwise still tell a guesser when a key is right.
        if throttle.exhausted(request):
            raise Throttled(wait=throttle.wait(), detail=too_many(throttle))
        try:
            return super().authenticate(request)
        except AuthenticationFailed:
            throttle.record_failure(request)
            raise


def too_many(throttle: WrongTokenThrottle) -> str:
    return (
        f"Too many wrong API tokens from your address ({throttle.num_requests} within "
        f"{throttle.duration // 60} minutes). Check the token on your API page, then try again later."
    )
