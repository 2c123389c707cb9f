"""Sixteen scan requests at once by one user make as many queued scans as the limit allows, no more: the
count and the insert are one transaction behind a lock on the team and the user (services.request_scan)."""

import threading

import pytest
from django.core.files.base import ContentFile
from django.db import connection

from tests.lab.factories import team_with_user
from webapp.celery_app import app
from webapp.lab.models import BadNet, Dataset, TriggerScan
from webapp.lab.services import request_scan

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_sixteen_scans_at_once_queue_only_the_limit(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    team, user = team_with_user()
    valid = Dataset.objects.create(
        team=team,
        owner=user,
        name="valid",
        role=Dataset.CLEAN_VALID,
        count=10,
        sha256="v" * 64,
        file=ContentFile(b"-", name="v.h5"),
    )
    badnets = [
        BadNet.objects.create(
            team=team,
            owner=user,
            name=f"b{n}",
            sha256=f"{n}" * 64,
            n_classes=4,
            report={},
            file=ContentFile(b"-", name="b.h5"),
        )
        for n in range(16)
    ]
    barrier, answers = threading.Barrier(16), []

    def ask(badnet):
        barrier.wait()
        try:
            request_scan(badnet, valid, user)
            answers.append("queued")
        except ValueError as refusal:
            answers.append(str(refusal))
        finally:
            connection.close()

    threads = [threading.Thread(target=ask, args=(badnet,)) for badnet in badnets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    app.control.purge()  # the queued scans' messages: no worker runs in this test
    assert answers.count("queued") == settings.TEAM_PENDING_DETECTIONS == 4
    assert all("4 Neural Cleanse scans waiting or running already" in a for a in answers if a != "queued")
    assert TriggerScan.objects.count() == 4  # the refused left no row
