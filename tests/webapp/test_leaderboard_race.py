"""Requests at once: the same leaderboard POSTed six times makes one board (its check and insert are one
transaction behind a lock on the BadNet), and four experiments that each fit a budget alone but not together
get one through (the budget is charged in the transaction that stores the work, behind a lock on the team)."""

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


def test_four_experiments_at_once_that_each_fit_the_budget_alone_get_one_through(tmp_path, settings):
    from rest_framework.authtoken.models import Token

    from webapp.lab.models import Experiment

    settings.USER_EPOCH_BUDGET = 2000
    team, user = team_with_user()
    template = experiment_row(team, user, tiny_badnet_files(tmp_path), {"defense": "fine-prune"})
    token = Token.objects.create(user=user).key
    body = {
        "name": "flood",
        "badnet": template.badnet.pk,
        "valid": template.valid.pk,
        "test": template.test.pk,
        "poisoned": [d.pk for d in template.poisoned.all()],
        "defense": "fine-prune",
        "thresholds": [0.5, 1.0, 1.5],
        "learning_rates": [0.001],
        "epochs": [500],  # 1,500 units each
        "queue": "cpu",
    }
    barrier, answers = threading.Barrier(4), []

    def post(n):
        client = Client()
        barrier.wait()
        answer = client.post(
            f"/api/experiments/?team={team.pk}",
            body | {"name": f"flood {n}", "thresholds": [0.1 + 0.4 * n, 0.2 + 0.4 * n, 0.3 + 0.4 * n]},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Token {token}",
        )
        answers.append((answer.status_code, answer.content.decode()))
        connection.close()

    threads = [threading.Thread(target=post, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    app.control.purge()
    assert sorted(code for code, _ in answers) == [201, 400, 400, 400]
    refusals = [text for code, text in answers if code == 400]
    assert all("This needs 1,500 fine-tuning epochs; you have 500 of 2,000" in text for text in refusals), refusals
    assert Experiment.objects.filter(name__startswith="flood").count() == 1
