import pytest
from django.test import Client

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


def test_health_reports_every_part_and_a_worker_that_dies(celery_worker):
    client = Client()
    healthy = client.get("/health")
    assert healthy.status_code == 200
    body = healthy.json()
    assert body["database"] == "ok" and body["redis"] == "ok"
    assert celery_worker.name in body["workers"]["names"]

    celery_worker.kill()
    degraded = client.get("/health")
    assert degraded.status_code == 503
    body = degraded.json()
    assert body["status"] == "degraded"
    assert celery_worker.name not in body["workers"]["names"]
    assert body["workers"]["count"] == 0


def test_health_without_any_worker_is_503():
    response = Client().get("/health")
    assert response.status_code == 503
    assert response.json()["redis"] == "ok"
