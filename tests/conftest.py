"""Shared fixtures: a real Redis for the whole session (unless REDIS_URL is given) and a real Celery worker
process per test, or one per module where every test may have it alive (module_worker)."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from stack.redis import start_redis
from tests.processes import celery_worker_process

# The real CSAW-HackML-2020 files live in shared/ beside the project (never copied into it).
FIXTURES = Path(
    os.environ.get("PRUNELAB_CSAW_FIXTURES", Path(__file__).resolve().parent.parent.parent / "shared/fixtures/csaw")
)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Start the session's redis-server before any test; pytest-django has loaded settings by now, so the
    URL is written both to the environment (for worker processes) and to the settings object."""
    from django.conf import settings

    # The test database starts empty each session, so run ids repeat: stale artifacts of an earlier session
    # under var/test-media would look like this session's results.
    if Path(settings.MEDIA_ROOT).name == "test-media":  # never an installation's real uploads
        shutil.rmtree(settings.MEDIA_ROOT, ignore_errors=True)
    from tests.browser import ARTIFACTS

    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # the browser tests' screenshots are this session's
    # Pages name static files by their content hash (whitenoise's manifest), as under make run and in docker.
    from django.core.management import call_command

    call_command("collectstatic", "--noinput", verbosity=0)
    if os.environ.get("REDIS_URL"):
        return
    data_dir = Path(tempfile.mkdtemp(prefix="prunelab-test-redis-"))
    server = start_redis(data_dir)
    config.stash[REDIS_KEY] = server
    os.environ["REDIS_URL"] = server.url
    settings.REDIS_URL = settings.CELERY_BROKER_URL = settings.CELERY_RESULT_BACKEND = server.url
    settings.CACHES["default"]["LOCATION"] = server.url  # read on the cache's first use, after this


def pytest_unconfigure(config):
    server = config.stash.get(REDIS_KEY, None)
    if server is not None:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


REDIS_KEY = pytest.StashKey()


@pytest.fixture
def celery_worker():
    """A real `celery worker` process on queues cpu and gpu, on the test database; killed after the test."""
    with celery_worker_process(extra_env=test_database_env()) as worker:
        yield worker


@pytest.fixture(scope="module")
def module_worker(django_db_setup, django_db_blocker):
    """One real worker for a whole module, for modules whose every test may have a worker alive (a module opts
    in by defining `celery_worker` as this): starting one and its first TensorFlow import cost about 8 s."""
    with django_db_blocker.unblock():
        environment = test_database_env()
    with celery_worker_process(extra_env=environment) as worker:
        yield worker


def test_database_env() -> dict:
    """Environment that points a worker process at the database this test uses."""
    from django.db import connection

    return {"DATABASE_URL": f"sqlite:///{connection.settings_dict['NAME']}"}


@pytest.fixture
def restart_redis(request):
    """Restart the session's redis-server in place (same port, same append-only file)."""
    server = request.config.stash.get(REDIS_KEY, None)
    if server is None:
        pytest.skip("REDIS_URL names an outside Redis; this test restarts the suite's own")

    def restart():
        current = request.config.stash[REDIS_KEY]
        current.stop()
        request.config.stash[REDIS_KEY] = start_redis(current.data_dir, port=current.port, password=current.password)

    return restart


@pytest.fixture(scope="session")
def csaw_fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"The CSAW fixtures are missing: expected them in {FIXTURES} (shared/ beside the project)")
    return FIXTURES


@pytest.fixture(scope="session")
def live_server():
    """pytest-django's live server, with /static/ served by the app's own WhiteNoise (content-hashed names,
    compressed) as under make run and in docker, not by Django's test handler, which knows no hashed names."""
    from pytest_django.live_server_helper import LiveServer

    server = LiveServer("localhost", start=False)
    server.thread.static_handler = lambda application: application
    server.start()
    yield server
    server.stop()
