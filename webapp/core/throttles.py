"""Per-user rates on the requests that cost the server real work (an image test loads networks, a preview
plans a grid, an export streams or writes a model file): DRF's throttle bookkeeping in the shared cache, so
every web process counts the same hits, and the same class serves the API (`throttle_classes`) and the pages
(`throttled`), so a user cannot double the rate by switching between them. Rates are settings
(REQUEST_RATES, from PRUNELAB_*_RATE), read at each request."""

from functools import wraps

from django.conf import settings
from django.http import HttpResponse
from rest_framework.exceptions import Throttled
from rest_framework.throttling import SimpleRateThrottle

# what each scope's requests are, for the refusal
WHAT = {"classify": "image tests", "preview": "plan previews", "export": "model downloads", "figure": "PDF figures"}


class PerUserThrottle(SimpleRateThrottle):
    """Requests of one scope per signed-in user in a fixed window (a minute of the clock, for "N/minute").

    Counted with the cache's atomic increment, not DRF's read-then-write history: 20 requests at once all read
    the same history and all passed (68 of a limit of 30 in a minute, in an attack review). A fixed window lets
    at most twice the rate through across a window's edge, and never more than the rate within one window."""

    def get_rate(self) -> str:
        return settings.REQUEST_RATES[self.scope]

    def get_cache_key(self, request, view=None) -> str:
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}

    def allow_request(self, request, view) -> bool:
        now = self.timer()
        window = int(now // self.duration)
        self.window_ends = (window + 1) * self.duration
        key = f"{self.get_cache_key(request, view)}:{window}"
        self.cache.add(key, 0, self.duration + 5)
        try:
            count = self.cache.incr(key)
        except ValueError:  # expired between add and incr: this request opens the window
            self.cache.add(key, 1, self.duration + 5)
            count = 1
        if count <= self.num_requests:
            return True
        if view is not None:  # the API: DRF's 429, in the same words as the pages'
            raise Throttled(wait=self.wait(), detail=refusal(self))
        return False

    def wait(self) -> int:
        """Whole seconds until the window ends (at least 1): the Retry-After and the refusal's words."""
        return max(1, round(self.window_ends - self.timer()))


class ClassifyThrottle(PerUserThrottle):
    scope = "classify"


class PreviewThrottle(PerUserThrottle):
    scope = "preview"


class ExportThrottle(PerUserThrottle):
    scope = "export"


class FigureThrottle(PerUserThrottle):
    scope = "figure"


def refusal(throttle: PerUserThrottle) -> str:
    """The 429's words: what was too many, when to try again, and who sets the rate."""
    window = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}.get(throttle.duration, f"{throttle.duration} s")
    return (
        f"Too many {WHAT[throttle.scope]}: you may send {throttle.num_requests} a {window}. Try again in "
        f"{throttle.wait()} s (an operator sets the rate: PRUNELAB_{throttle.scope.upper()}_RATE)."
    )


def throttled(throttle_class: type[PerUserThrottle], methods: tuple[str, ...] = ("GET", "POST")):
    """A page view counted against the same per-user rate as its API twin (its requests of these methods: a
    form's GET costs nothing): past it, a 429 that says when to try again (Retry-After too)."""

    def decorate(view):
        @wraps(view)
        def counted(request, *args, **kwargs):
            throttle = throttle_class()
            if request.method in methods and not throttle.allow_request(request, None):
                response = HttpResponse(refusal(throttle), status=429, content_type="text/plain; charset=utf-8")
                response["Retry-After"] = str(throttle.wait())
                return response
            return view(request, *args, **kwargs)

        return counted

    return decorate
