"""The pytest suite: same stack as `make run`, with fast password hashing."""

from .base import *  # noqa: F403

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Worker processes must see the test database: a file, not SQLite's in-memory default.
DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}  # noqa: F405
MEDIA_ROOT = VAR_DIR / "test-media"  # noqa: F405
STATIC_ROOT = VAR_DIR / "test-static"  # noqa: F405
# Tests make sets of 30 images, on which ANP's 500 mask steps of 128 images are thousands of passes: the budgets
# of training work are out of the way here, and tests/webapp/test_budgets.py sets its own.
TEAM_EPOCH_BUDGET = USER_EPOCH_BUDGET = 10**9
# Throttle histories live in Redis across tests: out of the way here; tests/webapp/test_throttling.py sets its own.
REQUEST_RATES = {scope: "100000/minute" for scope in REQUEST_RATES}  # noqa: F405
