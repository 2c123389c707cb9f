"""API list pages (?limit=&offset=). DRF's LimitOffsetPagination passes any integer to the database, and one
beyond 64 bits is a database error (a 500); here both are bounded, so a wild value is just an empty page."""

from rest_framework.pagination import LimitOffsetPagination

MAX_OFFSET = 10**12  # no team has this many rows; offset + limit stays far inside SQLite's 64-bit integers


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    max_limit = 1000

    def get_offset(self, request):
        return min(super().get_offset(request), MAX_OFFSET)
