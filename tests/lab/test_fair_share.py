"""Fair share between teams on the shared workers: a message is a turn on its queue (Run.claim_turn), given to
the next run in line by team (Run.next_in_line), so one team's queued thousands never stand before another
team's one run; a worker that died has its run resumed by the redelivery."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.defenses.tiny import tiny_badnet_files
from tests.lab.factories import experiment_row, team_with_user
from webapp.celery_app import EXECUTE_RUN, app
from webapp.lab.models import Run
from webapp.lab.services import cancel, submit

ONE_EPOCH = {"thresholds": [1.0], "learning_rates": [0.01], "epochs": [1]}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny_badnet_files(tmp_path_factory.mktemp("fair-badnet"))


def queued_copies(run: Run, count: int) -> list[Run]:
    """`count` more queued runs like `run` (other keys), each with a message id as if its message were sent."""
    fields = {f.name: getattr(run, f.name) for f in Run._meta.fields if f.name not in ("id", "key", "task_id")}
    copies = [Run(**fields, key=f"{run.key[:40]}-{n}", task_id=f"message-{run.pk}-{n}") for n in range(count)]
    return Run.objects.bulk_create(copies)


def take_turn(hint: Run, worker: str = "w1") -> Run | None:
    return Run.claim_turn(hint.pk, worker=worker, stale_after=60)


@pytest.mark.django_db
def test_one_run_of_team_b_starts_within_one_job_while_team_a_has_500_queued(files):
    team_a, alice = team_with_user("a", "alice")
    team_b, bob = team_with_user("b", "bob")
    first_a = submit(experiment_row(team_a, alice, files, ONE_EPOCH), enqueue=False)[0]
    Run.objects.filter(pk=first_a.pk).update(task_id="message-a")
    flood = queued_copies(first_a, 499)
    only_b = submit(experiment_row(team_b, bob, files, ONE_EPOCH, "b"), enqueue=False)[0]
    Run.objects.filter(pk=only_b.pk).update(task_id="message-b")

    # Every message in the queue is team A's but the last; each delivery is a turn.
    first = take_turn(flood[0])
    assert first.pk == first_a.pk  # neither team served yet: the run waiting longest
    second = take_turn(flood[1])
    assert second.pk == only_b.pk  # team A has one running, team B none: B's only run, one job after queuing
    Run.objects.filter(pk__in=[first.pk, second.pk]).update(status=Run.DONE)
    third = take_turn(flood[2])
    assert third.team_id == team_a.pk and third.pk == flood[0].pk  # B has nothing left: A's oldest next
    assert Run.objects.filter(team=team_a, status=Run.QUEUED).count() == 498


@pytest.mark.django_db
def test_teams_take_turns_and_a_team_served_longest_ago_goes_first(files):
    team_a, alice = team_with_user("a", "alice")
    team_b, bob = team_with_user("b", "bob")
    a_runs = queued_copies(submit(experiment_row(team_a, alice, files, ONE_EPOCH), enqueue=False)[0], 4)
    queued_copies(submit(experiment_row(team_b, bob, files, ONE_EPOCH, "b"), enqueue=False)[0], 4)
    order = []
    for n in range(6):
        run = take_turn(a_runs[0], worker=f"w{n}")
        order.append("a" if run.team_id == team_a.pk else "b")
        Run.objects.filter(pk=run.pk).update(status=Run.DONE)  # one worker: each run ends before the next turn
    assert order == ["a", "b", "a", "b", "a", "b"]


@pytest.mark.django_db
def test_a_redelivery_resumes_its_dead_run_and_other_turns_never_take_a_live_one(files):
    team, user = team_with_user()
    runs = queued_copies(submit(experiment_row(team, user, files, ONE_EPOCH), enqueue=False)[0], 3)
    running = take_turn(runs[0], worker="w1")
    assert running.pk == runs[0].pk and running.attempts == 1
    live = take_turn(running, worker="w2")  # a second delivery of a live run's message: a turn for the next
    assert live.pk == runs[1].pk
    Run.objects.filter(pk=running.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=120))
    resumed = take_turn(running, worker="w3")  # its worker died: the redelivery resumes it
    assert resumed.pk == running.pk and resumed.attempts == 2 and resumed.worker == "w3"


@pytest.mark.django_db
def test_cancelling_1000_queued_runs_ends_them_in_two_statements_and_their_turns_find_nothing(
    files, django_assert_max_num_queries
):
    team, user = team_with_user()
    experiment = experiment_row(team, user, files, ONE_EPOCH)
    runs = queued_copies(submit(experiment, enqueue=False)[0], 1000)
    experiment.runs.add(*runs)
    with django_assert_max_num_queries(5):  # not a statement, a message or a worker child per run
        assert cancel(experiment) == 1001
    assert set(Run.objects.values_list("status", flat=True)) == {Run.CANCELLED}
    assert take_turn(runs[0]) is None  # their messages are turns with nothing left to serve


@pytest.mark.django_db
def test_cancelled_runs_runs_without_a_message_and_other_queues_are_not_in_line(files):
    team, user = team_with_user()
    runs = queued_copies(submit(experiment_row(team, user, files, ONE_EPOCH), enqueue=False)[0], 4)
    Run.objects.filter(pk=runs[0].pk).update(cancel_requested=True)
    Run.objects.filter(pk=runs[1].pk).update(task_id="")  # a search's rung: its search trains it
    Run.objects.filter(pk=runs[2].pk).update(queue="gpu")
    assert take_turn(runs[0]).pk == runs[3].pk
    assert Run.objects.get(pk=runs[0].pk).status == Run.CANCELLED
    assert take_turn(runs[0]) is None  # nothing else waits on cpu
    assert take_turn(runs[2]).pk == runs[2].pk  # a gpu message serves the gpu queue


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_on_a_real_worker_team_bs_run_waits_for_at_most_one_of_team_as(celery_worker, files):
    team_a, alice = team_with_user("a", "alice")
    team_b, bob = team_with_user("b", "bob")
    flood = experiment_row(team_a, alice, files, {**ONE_EPOCH, "thresholds": [0.1 * n for n in range(1, 13)]})
    a_runs = submit(flood)
    deadline = time.monotonic() + 120
    while not Run.objects.filter(team=team_a, status__in=[Run.RUNNING, Run.DONE]).exists():
        assert time.monotonic() < deadline, "team A's first run never started"
        time.sleep(0.2)
    queued_at = timezone.now()
    b_run = submit(experiment_row(team_b, bob, files, ONE_EPOCH, "b"))[0]
    deadline = time.monotonic() + 300
    while Run.objects.get(pk=b_run.pk).status != Run.DONE:
        assert time.monotonic() < deadline, "team B's run never ended"
        time.sleep(0.5)
    b_started = Run.objects.get(pk=b_run.pk).started_at
    a_started = sorted(
        Run.objects.filter(pk__in=[r.pk for r in a_runs]).exclude(started_at=None).values_list("started_at", flat=True)
    )
    ahead = [t for t in a_started if queued_at <= t < b_started]
    assert len(ahead) <= 1, f"{len(ahead)} of team A's runs started between B's queuing and its start"
    assert cancel(flood) >= 1  # the rest of A's flood ends at once
    assert not Run.objects.filter(team=team_a, status=Run.QUEUED).exists()
    app.control.purge()  # their messages are spare turns now: not for the next test's worker


def messages_waiting(queue: str = "cpu") -> int:
    with app.connection_for_write() as connection:
        return connection.default_channel.client.llen(queue)  # Redis keeps a queue as a list (gone when empty)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_drops_1000_cancelled_runs_messages_in_seconds(celery_worker, files):
    """Each message of a cancelled run would otherwise be a turn with nothing to serve, at ~5 s of a new worker
    child each (83 minutes for 1,000): cancel revokes them, and the worker drops them on arrival."""
    team, user = team_with_user()
    experiment = experiment_row(team, user, files, ONE_EPOCH)
    first = submit(experiment, enqueue=False)[0]
    runs = [first, *queued_copies(first, 999)]
    experiment.runs.add(*runs)
    Run.objects.filter(pk=first.pk).update(task_id="message-first")
    for run in Run.objects.filter(pk__in=[r.pk for r in runs]):
        app.send_task(EXECUTE_RUN, args=[run.pk], queue="cpu", task_id=run.task_id)
    cancelled_at = time.monotonic()
    assert cancel(experiment) == 1000  # outside a transaction: the revoke goes out at once
    while messages_waiting() > 0:
        assert time.monotonic() - cancelled_at < 120, f"{messages_waiting()} messages still waiting after 2 minutes"
        time.sleep(0.5)
    revoked = {task for tasks in (app.control.inspect(timeout=5).revoked() or {}).values() for task in tasks}
    # the worker may take the first message (prefetch 1) before the cancel: that one turn starts a run, which
    # stops at its next batch check; every other message was dropped unrun
    assert len({run.task_id for run in Run.objects.all()} - revoked) <= 1
    assert Run.objects.filter(attempts__gt=0).count() <= 1
    while Run.objects.filter(status=Run.RUNNING).exists():
        assert time.monotonic() - cancelled_at < 300, "the one started run did not stop"
        time.sleep(0.5)
    assert set(Run.objects.values_list("status", flat=True)) == {Run.CANCELLED}


@pytest.mark.django_db
def test_submitting_again_sends_no_second_message_for_a_queued_run(files, django_capture_on_commit_callbacks):
    team, user = team_with_user()
    experiment = experiment_row(team, user, files, {**ONE_EPOCH, "thresholds": [0.5, 1.0]})
    with django_capture_on_commit_callbacks(execute=False) as first:
        runs = submit(experiment)
    assert len(first) == 2
    with django_capture_on_commit_callbacks(execute=False) as again:
        Run.objects.filter(pk__in=[r.pk for r in runs]).update(task_id="sent")  # as the first callbacks do
        submit(experiment)
    assert again == []  # a second message would be a spare turn, and 1,200 of them a queue of no-ops


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_run_waits_for_at_most_one_of_another_teams_profiles_scans_or_searches(files, tmp_path):
    """Work that is not a run (profiles here; scans, STRIP and searches alike) goes on the side lane of its
    queue, which the worker takes in turn with the runs' queue: team B's run is not behind all of team A's.
    Everything is queued before the worker starts; first in, first out would run A's 3 profiles first."""
    from tests.conftest import test_database_env
    from tests.defenses.tiny import tiny_data, write_dataset
    from tests.processes import celery_worker_process
    from webapp.lab.models import Dataset, Profile
    from webapp.lab.services import add_dataset, request_profile

    team_a, alice = team_with_user("a", "alice")
    team_b, bob = team_with_user("b", "bob")
    a_study = experiment_row(team_a, alice, files, ONE_EPOCH)
    for n in range(3):
        path = write_dataset(tmp_path / f"clean-{n}.h5", *tiny_data(40, seed=10 + n))
        request_profile(a_study.badnet, add_dataset(team_a, alice, path, f"clean {n}", Dataset.CLEAN_VALID))
    b_run = submit(experiment_row(team_b, bob, files, ONE_EPOCH, "b"))[0]
    with celery_worker_process(extra_env=test_database_env()):
        deadline = time.monotonic() + 300
        while Run.objects.get(pk=b_run.pk).status == Run.QUEUED:
            assert time.monotonic() < deadline, "team B's run never started"
            time.sleep(0.05)
        profiled_first = Profile.objects.exclude(status=Profile.Status.QUEUED).count()
        while Profile.objects.filter(status=Profile.Status.QUEUED).exists():
            assert time.monotonic() < deadline, "team A's profiles never ended"
            time.sleep(0.5)
    assert profiled_first <= 1, f"{profiled_first} of team A's profiles ran before team B's run"
    assert set(Profile.objects.values_list("status", flat=True)) == {Profile.Status.DONE}
