"""The queue works end to end: a task travels through the real Redis to a real worker process and back."""

import pytest

from workers.tasks import echo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def celery_worker(module_worker):
    return module_worker  # one worker for this module's tests


def test_task_round_trip_through_redis_and_worker(celery_worker):
    result = echo.apply_async(args=[{"seed": 7, "values": [0.8, 1.0]}], queue="cpu")
    answer = result.get(timeout=60)
    assert answer["payload"] == {"seed": 7, "values": [0.8, 1.0]}
    assert result.status == "SUCCESS"


def test_gpu_queue_reaches_a_worker_serving_it_and_the_forms_see_it_served(celery_worker):
    from webapp.core.health import queues_with_workers
    from webapp.lab.forms import live_queue

    result = echo.apply_async(args=[{"queue": "gpu"}], queue="gpu")
    assert result.get(timeout=60)["payload"] == {"queue": "gpu"}
    assert queues_with_workers() >= {"cpu", "gpu"}
    assert live_queue("gpu") == "gpu"  # the form's check lets a GPU request through while a worker serves it


def test_the_embedded_redis_asks_for_its_password(tmp_path):
    """Loopback is shared with every local user: without the password they could queue work or read queues."""
    import redis

    from stack.redis import start_redis

    server = start_redis(tmp_path / "redis")
    try:
        assert redis.Redis.from_url(server.url).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).ping()
    finally:
        server.stop()
