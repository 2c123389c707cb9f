"""The same leaderboard POSTed six times at once makes one board: its check and insert are one transaction
behind a lock on the BadNet (webapp/lab/services.py start_leaderboard)."""

import threading

import pytest
from django.db import connection
from django.test import Client

from tests.defenses.tiny import tiny_badnet_files
from tests.lab.factories import experiment_row, team_with_user
from webapp.celery_app import app
from webapp.lab.models import Leaderboard

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_six_identical_posts_at_once_make_one_board(tmp_path):
    team, user = team_with_user()
    template = experiment_row(team, user, tiny_badnet_files(tmp_path), {"defense": "fine-prune"})
    form = {
        "valid": template.valid.pk,
        "test": template.test.pk,
        "poisoned": [d.pk for d in template.poisoned.all()],
        "max_ca_drop": 5,
        "budget": 100,
        "queue": "cpu",
    }
    barrier, answers = threading.Barrier(6), []

    def post():
        client = Client()
        client.force_login(user)
        barrier.wait()
        answers.append(client.post(f"/badnets/{template.badnet.pk}/leaderboard", form).status_code)
        connection.close()

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    app.control.purge()  # the one board's messages: no worker runs in this test
    assert answers == [302] * 6
    assert Leaderboard.objects.count() == 1 and Leaderboard.objects.get().experiments.count() > 1
