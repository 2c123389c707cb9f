"""Prunelab's records: teams, BadNets, datasets, experiments, runs and their result points.

Our rows are the source of truth; a Celery task id is only noted on the run. A run is one planned job
(defenses.jobs.Job) on one BadNet and its data; experiments share runs whose work is identical.
"""

import hashlib
import json
import re
import unicodedata
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models, transaction
from django.db.models import Count, Max, Min
from django.utils import timezone

from defenses.finetune import CHECKPOINTS
from defenses.jobs import Job
from defenses.methods import job_kind


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="teams")
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    is_admin = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="one_membership_per_team")]

    def __str__(self):
        return f"{self.user} in {self.team}{' (admin)' if self.is_admin else ''}"


class Invitation(models.Model):
    """A team admin's invitation: the invitee becomes a member only by accepting it. (An attack review showed
    that adding members outright let a stranger put anyone into their team, where that user's next uploads
    could land.)"""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invitations")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="invitations")
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="one_invitation_per_team")]

    def __str__(self):
        return f"{self.user} invited to {self.team} by {self.invited_by}"


def printable(text: str) -> str:
    """Text for a page: terminal escape sequences (TensorFlow colours its errors) and other control characters
    removed, lines kept."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    return "".join(char for char in text if char in "\n\t" or unicodedata.category(char)[0] != "C")


def stored_name(instance, filename: str) -> str:
    """team/kind/uuid.ext: an uploaded file's own name is kept as data, never used as a path."""
    suffix = Path(filename).suffix.lower()[:8]
    return f"team-{instance.team_id}/{type(instance).__name__.lower()}/{uuid.uuid4().hex}{suffix}"


class BadNet(models.Model):
    SCALES = [(255.0, "divide by 255"), (1.0, "raw 0..255")]
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="badnets")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    name = models.CharField(max_length=100)
    file = models.FileField(upload_to=stored_name)
    original_name = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64)
    arch = models.CharField(max_length=40, blank=True)
    divisor = models.FloatField(choices=SCALES, default=255.0)
    n_classes = models.PositiveIntegerField()
    report = models.JSONField()
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name


class Dataset(models.Model):
    CLEAN_VALID, CLEAN_TEST, POISONED_TEST, POISONED_VALID = (
        "clean-valid",
        "clean-test",
        "poisoned-test",
        "poisoned-valid",
    )
    ROLES = [
        (CLEAN_VALID, "clean validation (the defender's data)"),
        (CLEAN_TEST, "clean test"),
        (POISONED_TEST, "poisoned test"),
        (POISONED_VALID, "poisoned validation"),
    ]
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="datasets")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    name = models.CharField(max_length=100)
    role = models.CharField(max_length=20, choices=ROLES)
    trigger = models.CharField(max_length=60, blank=True, help_text="poisoned sets: the trigger's name")
    target = models.IntegerField(null=True, blank=True, help_text="poisoned sets: the attacker's target label")
    file = models.FileField(upload_to=stored_name)
    original_name = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64)
    count = models.PositiveIntegerField()
    # What the upload check learnt from the file, so that fitting a set to a BadNet needs no file read.
    # None only for sets stored before these were recorded (migration 0004 fills them where it can).
    height = models.PositiveIntegerField(null=True)
    width = models.PositiveIntegerField(null=True)
    label_min = models.IntegerField(null=True)
    label_max = models.IntegerField(null=True)
    classes_present = models.PositiveIntegerField(null=True, help_text="distinct labels in the set")
    created = models.DateTimeField(auto_now_add=True)
    # The BadNets whose data this is (a family may share it, as CSAW's four share their clean sets): declared at
    # upload ("check against BadNet"), on the set's page, or by using the set in one of their experiments.
    # Forms preselect them; a scan checks only their targets.
    badnets = models.ManyToManyField(BadNet, blank=True, related_name="declared_sets")

    def __str__(self):
        return f"{self.name} ({self.get_role_display()})"

    @property
    def memory_bytes(self) -> int:
        """What a worker holds of this set: float32 pixels, channels-last (0 when its size is unknown)."""
        return self.count * (self.height or 0) * (self.width or 0) * 3 * 4

    def misfit(self, badnet: "BadNet") -> str:
        """Why this set cannot be used with `badnet`, or "" when it fits: its images must have the BadNet's
        input size, and its labels (and a poisoned set's declared target) must be classes of the BadNet. The
        one rule behind the experiment form, the API, the profile form and what the pages offer."""
        height, width = badnet.report["input_shape"][:2]
        n = badnet.n_classes
        if self.height is None or self.label_max is None:
            return f"{self.name}: its image size and labels were not recorded; upload it again."
        if (self.height, self.width) != (height, width):
            return (
                f"{self.name} holds {self.height}x{self.width} images; {badnet.name} takes {height}x{width}. "
                "Choose a set made for this BadNet."
            )
        if self.label_max >= n:
            return (
                f"{self.name} has labels up to {self.label_max}; {badnet.name} has classes 0..{n - 1}. "
                "Choose a set of this BadNet's classes."
            )
        if self.target is not None and self.target >= n:
            return f"{self.name} declares target {self.target}; {badnet.name} has classes 0..{n - 1}."
        return ""

    @property
    def metric_name(self) -> str:
        """The key of this set's ASR in a run's metrics; validation sets are told apart from test sets."""
        name = self.trigger or self.name
        return f"{name} (validation)" if self.role == self.POISONED_VALID else name


class Leaderboard(models.Model):
    """Every registered defense's small sweep on one BadNet and its sets, started with one click: one
    experiment per defense (sharing work where their jobs coincide), ranked by the honest selection."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="leaderboards")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    badnet = models.ForeignKey("BadNet", on_delete=models.CASCADE, related_name="leaderboards")
    max_ca_drop = models.FloatField(default=5.0)
    # fine-tuning-epoch units each training defense's search may spend (every defense the same); 0 for boards
    # made before search, whose experiments are sweeps
    budget = models.FloatField(default=0.0)
    # the seed of every experiment's training order, held-out split and search: boards that differ only in it
    # are repeats, and the page shows the spread of their chosen points
    seed = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"leaderboard {self.pk} of {self.badnet}"

    @property
    def name(self) -> str:
        return f"leaderboard of {self.badnet.name}, {self.created:%Y-%m-%d %H:%M}"


def data_fingerprint(badnet, valid, test, poisoned) -> dict:
    """What makes two experiments' data the same: file hashes, not names or rows."""
    return {
        "badnet": [badnet.sha256, badnet.arch, badnet.divisor],
        "valid": valid.sha256,
        "test": test.sha256,
        "poisoned": sorted([d.metric_name, d.sha256] for d in poisoned),
    }


class Status(models.TextChoices):
    """Every job's state, one vocabulary: runs, searches (Experiment.search["status"]), activation profiles,
    Neural Cleanse scans and STRIP calibrations (GoodNet.strip_status). A search alone has one more, in its
    JSON: "cancelling" (asked to stop, its worker has not yet ended it)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


SEARCH_ENDED = (Status.DONE, Status.FAILED, Status.CANCELLED)


class Experiment(models.Model):
    QUEUES = [("cpu", "CPU workers"), ("gpu", "GPU workers")]
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="experiments")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    name = models.CharField(max_length=100)
    badnet = models.ForeignKey(BadNet, on_delete=models.CASCADE, related_name="experiments")
    valid = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="+")
    test = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="+")
    poisoned = models.ManyToManyField(Dataset, blank=True, related_name="+")
    space = models.JSONField(help_text="defense (a defenses.methods name) and its parameters' values")
    queue = models.CharField(max_length=3, choices=QUEUES, default="cpu")
    # The honest-selection floor (DESIGN.md): a point is "best" only if its validation CA is at most this many
    # points below the BadNet's own. Not part of `space`: it chooses among results, it changes no work.
    max_ca_drop = models.FloatField(default=5.0)
    runs = models.ManyToManyField("Run", related_name="experiments", blank=True)
    leaderboard = models.ForeignKey(
        Leaderboard, null=True, blank=True, on_delete=models.CASCADE, related_name="experiments"
    )
    # A search experiment's state (space["search"] says it is one): status, trials with their runs' jobs and
    # objective by epoch, units spent, parameters' importance (webapp/lab/searches.py). Empty for a grid.
    search = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    tags = models.CharField(max_length=200, blank=True, help_text="',a,b,': the team's words to find it by")
    archived = models.BooleanField(default=False, help_text="hidden from the experiments list unless asked for")
    # the experiments list's cache of its selected point, valid while its runs' state is the same (webapp/lab/
    # listing.py): the selection reads every point, too much for each row of a list of a thousand
    listed = models.JSONField(default=dict, blank=True)

    def __str__(self):
        return self.name

    @property
    def tag_list(self) -> list[str]:
        return [tag for tag in self.tags.split(",") if tag]

    def data_fingerprint(self) -> dict:
        return data_fingerprint(self.badnet, self.valid, self.test, self.poisoned.all())

    def triggers(self, role: str = Dataset.POISONED_TEST) -> list[str]:
        """The trigger names of its poisoned sets of one role (Dataset.POISONED_TEST or POISONED_VALID)."""
        return sorted(d.metric_name for d in self.poisoned.all() if d.role == role)

    def run_inputs(self) -> dict:
        """File paths and scaling a worker needs to load this experiment's BadNet and data, and the names the
        user gave those files (for error messages)."""
        files = [self.badnet, self.valid, self.test, *self.poisoned.all()]
        return {
            "model": self.badnet.file.path,
            "arch": self.badnet.arch or None,
            "divisor": self.badnet.divisor,
            "valid": self.valid.file.path,
            "test": self.test.file.path,
            "poisoned": {d.metric_name: d.file.path for d in self.poisoned.all()},
            "names": {Path(row.file.name).name: row.original_name for row in files},
        }

    def own_runs(self) -> models.QuerySet:
        """The experiment's runs of its own team: the only runs its pages and buttons read or act on. (Runs
        are team-scoped by their key, so every linked run is the team's; the filter keeps it so whatever a
        stale link says.)"""
        return self.runs.filter(team_id=self.team_id)

    @property
    def is_search(self) -> bool:
        return "search" in self.space

    @property
    def holdout(self) -> float | None:
        """The share of the clean validation set held out for selection; None for an experiment made before
        held-out selection (its "validation" figures were measured on the images the repair trained on)."""
        return self.space.get("holdout")

    def is_finished(self) -> bool:
        if self.is_search and self.search.get("status") not in SEARCH_ENDED:
            return False
        return not self.own_runs().filter(status__in=[Run.QUEUED, Run.RUNNING]).exists()


class Run(models.Model):
    Status = Status
    QUEUED, RUNNING, DONE, FAILED, CANCELLED = (
        Status.QUEUED,
        Status.RUNNING,
        Status.DONE,
        Status.FAILED,
        Status.CANCELLED,
    )
    MAX_ATTEMPTS = 3
    TURN_TRIES = 50  # runs a turn may find cancelled or taken before it gives up (the next message tries again)

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="runs")
    badnet = models.ForeignKey(BadNet, on_delete=models.CASCADE, related_name="runs")
    key = models.CharField(max_length=64, unique=True, help_text="job key + data fingerprint + team: the reuse rule")
    family = models.CharField(
        max_length=64, blank=True, db_index=True, help_text="the key without the epoch count (JobKind.epoch_prefix)"
    )
    kind = models.CharField(max_length=20)
    config = models.JSONField()
    inputs = models.JSONField(help_text="paths and scaling the worker loads")
    queue = models.CharField(max_length=3, default="cpu")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    cancel_requested = models.BooleanField(default=False)
    progress = models.FloatField(default=0.0)
    attempts = models.PositiveIntegerField(default=0)
    task_id = models.CharField(max_length=64, blank=True)
    stage = models.CharField(
        max_length=200, blank=True, help_text="what it is doing between points (a scan's labels done)"
    )
    worker = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    artifact = models.CharField(max_length=500, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self):
        return f"run {self.pk} ({self.kind} {json.dumps(self.config, sort_keys=True)})"

    @staticmethod
    def key_for(job: Job, fingerprint: dict, team_id: int) -> str:
        """The reuse rule: the same work (job) on the same data (file hashes) *in the same team* is one run.
        Work is never shared across teams (DESIGN.md): two teams that upload the same public files (the CSAW
        ones, the deterministic demo data) get a run each, so one team's cancel, re-run or results never
        touch or reveal the other's. The team-less work key is scoped by a second hash so that migration
        0003 could scope the keys stored before issue 12 from the stored key alone."""
        work = hashlib.sha256(json.dumps([job.key, fingerprint], sort_keys=True).encode()).hexdigest()
        return Run.team_scoped(work, team_id)

    @staticmethod
    def family_for(job: Job, fingerprint: dict, team_id: int) -> str:
        """Runs of one family differ only in their epoch count, so the longest serves every shorter request
        (JobKind.epoch_prefix); "" for kinds where that does not hold."""
        if not job_kind(job.kind).epoch_prefix:
            return ""
        trunk = Job(job.kind, {name: value for name, value in job.config.items() if name != "epochs"})
        return Run.key_for(trunk, fingerprint, team_id)

    @classmethod
    def stored_for(cls, jobs: list[Job], fingerprint: dict, team_id: int) -> list["Run | None"]:
        """The team's run that serves each job, or None: the job's own run, or a run of its family trained
        to at least as many epochs. Finished runs first, then running and queued ones; a failed or cancelled
        run serves only its own job (pressing Re-run is then the user's choice)."""
        keys = [cls.key_for(job, fingerprint, team_id) for job in jobs]
        families = [cls.family_for(job, fingerprint, team_id) for job in jobs]
        wanted = models.Q(key__in=keys) | models.Q(family__in=[family for family in families if family])
        found = list(cls.objects.filter(wanted, team_id=team_id).prefetch_related("points"))
        return [serving_run(found, key, family, job) for job, key, family in zip(jobs, keys, families, strict=True)]

    @staticmethod
    def team_scoped(work_key: str, team_id: int) -> str:
        """A team's key for a piece of work (migration 0003 has a frozen copy of this formula)."""
        return hashlib.sha256(f"team {int(team_id)}: {work_key}".encode()).hexdigest()

    def network_key(self, epoch: int) -> str:
        """The key of the run that trains this run's job to `epoch` and keeps that epoch's network."""
        return Run.team_scoped(f"{self.key}: its network at epoch {int(epoch)}", self.team_id)

    @property
    def total_positions(self) -> int:
        """How many points the run stores, as its job kind counts them (defenses.methods)."""
        return job_kind(self.kind).positions(self.config, self.badnet.report)

    @classmethod
    def claim(cls, run_id: int, worker: str, stale_after: float) -> "Run | None":
        """Take the run for this worker, or None when another live worker holds it, it is finished, or it
        has already killed its worker MAX_ATTEMPTS times (then it is marked failed)."""
        now = timezone.now()
        with transaction.atomic():
            run = cls.objects.select_for_update().filter(pk=run_id).first()
            if run is None or run.status in (cls.DONE, cls.FAILED, cls.CANCELLED):
                return None
            if run.status == cls.RUNNING and run.heartbeat_fresh(stale_after):
                return None  # a second delivery of a run that is alive elsewhere
            if run.cancel_requested:
                run.status, run.finished_at = cls.CANCELLED, now
                run.save(update_fields=["status", "finished_at"])
                return None
            if run.attempts >= cls.MAX_ATTEMPTS:
                run.status, run.finished_at = cls.FAILED, now
                run.error = f"The run stopped its worker {run.attempts} times (out of memory?) and was given up."
                run.save(update_fields=["status", "finished_at", "error"])
                return None
            run.status, run.worker, run.heartbeat_at, run.started_at = cls.RUNNING, worker, now, now
            run.attempts += 1
            run.error = ""
            run.save(update_fields=["status", "worker", "heartbeat_at", "started_at", "attempts", "error"])
            return run

    def heartbeat_fresh(self, stale_after: float) -> bool:
        """Its worker beat within `stale_after` seconds: it is alive (else its worker died)."""
        return bool(self.heartbeat_at) and timezone.now() - self.heartbeat_at < timedelta(seconds=stale_after)

    @classmethod
    def claim_turn(cls, run_id: int, worker: str, stale_after: float, queue: str = "cpu") -> "Run | None":
        """The run that a delivery of `run_id`'s message works on, taken for this worker. A message is a turn
        on its queue, not a seat for one run: a redelivery of a run whose worker died resumes that run;
        otherwise the turn goes to the next run in line (`next_in_line`), so one team's thousand queued runs
        never stand before another team's one. None: nothing is waiting (a cancelled run ends at once and
        leaves its message without work)."""
        hinted = cls.objects.filter(pk=run_id).first()
        if hinted is not None:
            queue = hinted.queue
            if hinted.status == cls.RUNNING and not hinted.heartbeat_fresh(stale_after):
                return cls.claim(run_id, worker, stale_after)
            if hinted.status == cls.QUEUED and not hinted.task_id:  # run here directly (manage.py run_experiment)
                return cls.claim(run_id, worker, stale_after)
        for _ in range(cls.TURN_TRIES):  # a try fails when a run was cancelled or taken by another worker
            waiting = cls.next_in_line(queue)
            if waiting is None:
                return None
            claimed = cls.claim(waiting.pk, worker, stale_after)
            if claimed is not None:
                return claimed
        return None

    @classmethod
    def next_in_line(cls, queue: str) -> "Run | None":
        """The queued run that the next turn on `queue` serves, by fair share between teams: the team with the
        fewest runs running there, then the team served longest ago (one never served first), then the one
        whose oldest run has waited longest; within the team, its oldest run. Runs that no message was sent
        for (a search's rungs, trained by the search's own task) are not in line."""
        waiting = cls.objects.filter(status=cls.QUEUED, queue=queue).exclude(task_id="")
        oldest = dict(waiting.values("team_id").annotate(first=Min("pk")).values_list("team_id", "first"))
        if not oldest:
            return None
        teams = cls.objects.filter(queue=queue, team_id__in=oldest)
        running = dict(
            teams.filter(status=cls.RUNNING).values("team_id").annotate(n=Count("pk")).values_list("team_id", "n")
        )
        served = dict(
            teams.exclude(started_at=None)
            .values("team_id")
            .annotate(last=Max("started_at"))
            .values_list("team_id", "last")
        )

        def share(team_id: int) -> tuple:
            last = served.get(team_id)
            return running.get(team_id, 0), last.timestamp() if last else 0.0, oldest[team_id]

        return cls.objects.filter(pk=oldest[min(oldest, key=share)]).first()

    def place_in_line(self) -> int | None:
        """A queued run's place among its team's queued runs on its queue (1: the team's next turn serves it,
        Run.next_in_line); None for a run no message was sent for."""
        if not self.task_id:
            return None
        waiting = Run.objects.filter(team_id=self.team_id, queue=self.queue, status=Run.QUEUED, pk__lt=self.pk)
        return waiting.exclude(task_id="").count() + 1

    def record_point(self, position: int, metrics: dict) -> None:
        """Store one result point; a redelivered run overwrites its own rows instead of duplicating them."""
        with transaction.atomic():
            Point.objects.update_or_create(run=self, position=position, defaults={"metrics": metrics})
            self.progress = min(1.0, (position + 1) / max(self.total_positions, 1))
            self.heartbeat_at = timezone.now()
            self.stage = ""  # a point is stored: whatever came before it is done
            self.save(update_fields=["progress", "heartbeat_at", "stage"])

    def set_stage(self, words: str) -> None:
        """What the run is doing between its points (Loaded.on_stage), shown under its status; a beat too."""
        Run.objects.filter(pk=self.pk).update(stage=words[:200], heartbeat_at=timezone.now())

    def should_stop(self) -> bool:
        """Checked between batches: beats the heart and reads the cancel flag."""
        Run.objects.filter(pk=self.pk).update(heartbeat_at=timezone.now())
        return Run.objects.filter(pk=self.pk, cancel_requested=True).exists()

    def finish(self, status: str, error: str = "", keep_checkpoint: bool = False) -> None:
        """Record the run's end. A done run drops its checkpoints (it never resumes), unless a search keeps
        it for its next rung to extend (webapp/lab/searches.py deletes it then)."""
        self.status, self.error, self.finished_at = status, printable(error)[:5000], timezone.now()
        self.stage = ""
        if status == self.DONE:
            self.progress = 1.0
        self.save(update_fields=["status", "error", "finished_at", "progress", "stage"])
        if status == self.DONE and not keep_checkpoint:
            for checkpoint in self.artifact_dir().glob(CHECKPOINTS):
                checkpoint.unlink(missing_ok=True)

    def artifact_dir(self) -> Path:
        return Path(settings.MEDIA_ROOT) / f"team-{self.team_id}" / "runs" / str(self.pk)


SERVING_ORDER = {Run.DONE: 0, Run.RUNNING: 1, Run.QUEUED: 2}


def serving_run(runs: list[Run], key: str, family: str, job: Job) -> Run | None:
    """Of `runs`, the one that serves `job` (Run.stored_for's rule), or None."""
    epochs = job.config.get("epochs", 0)

    def serves(run: Run) -> bool:
        if run.key == key:
            return True
        return bool(family) and run.family == family and run.status in SERVING_ORDER and run.config["epochs"] >= epochs

    candidates = [run for run in runs if serves(run)]
    rank = lambda run: (SERVING_ORDER.get(run.status, 3), run.key != key, run.config.get("epochs", 0))  # noqa: E731
    return min(candidates, key=rank, default=None)


class Point(models.Model):
    """One result: a fine-tuning epoch (0 = pruned, not yet trained), a threshold of a prune-only curve,
    or a step of incremental pruning. Metrics are percent: ca, asr {trigger: value}, score, valid_acc."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="points")
    position = models.PositiveIntegerField()
    metrics = models.JSONField()

    class Meta:
        ordering = ["run", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "position"], name="one_point_per_position")]

    def __str__(self):
        return f"run {self.run_id} point {self.position}"


class Profile(models.Model):
    """A BadNet's activation profile on one clean dataset (mean activation per channel of each conv layer),
    computed by a worker and kept: it depends only on the two files."""

    badnet = models.ForeignKey(BadNet, on_delete=models.CASCADE, related_name="profiles")
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="+")

    Status = Status  # queued, then done or failed: a profile is not watched while it runs

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    means = models.JSONField(default=dict, help_text="conv layer -> mean activation of each channel")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["badnet", "dataset"], name="one_profile_per_data")]

    def __str__(self):
        return f"profile of {self.badnet} on {self.dataset}"


def lock_requesters(team: "Team", user) -> None:
    """Inside a transaction: lock the team's and the user's rows (SQLite's IMMEDIATE transactions lock the
    whole database), so that a count against a limit and the insert it allows are one step for requests at
    once (budgets, scans, STRIP)."""
    Team.objects.select_for_update().filter(pk=team.pk).first()
    if user is not None:
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()


def detections_lost_before() -> datetime:
    """A scan or STRIP calibration queued or running since before this was lost (its message or worker): past
    the tasks' hard time limit. It no longer counts against a limit, and may be asked for again."""
    return timezone.now() - timedelta(seconds=settings.LONGEST_RUN_SECONDS + 600)


class TriggerScan(models.Model):
    """A Neural Cleanse scan of a BadNet on one clean validation set (defenses.cleanse), computed by a worker
    and kept: per label the reversed trigger's mask size and anomaly indices, the flagged labels, and
    pictures (mask, pattern, a stamped example) of the flagged and smallest ones."""

    badnet = models.ForeignKey(BadNet, on_delete=models.CASCADE, related_name="scans")
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="+")

    Status = Status

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    # who asked for it last: a user's scans at once are bounded across all their teams
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    stage = models.CharField(
        max_length=200, blank=True, help_text="labels done while running (cleanse.scan's on_stage)"
    )
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, help_text="norms, anomaly indices, flagged labels, pictures")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)  # queued or running for longer than a worker may take: stale

    class Meta:
        constraints = [models.UniqueConstraint(fields=["badnet", "dataset"], name="one_scan_per_data")]

    def __str__(self):
        return f"Neural Cleanse scan of {self.badnet} on {self.dataset}"

    def set_stage(self, words: str) -> None:
        """What the running scan has done (cleanse.scan's on_stage), shown on the BadNet's page; a beat too."""
        TriggerScan.objects.filter(pk=self.pk).update(stage=words[:200], updated=timezone.now())

    @property
    def computing(self) -> bool:
        """A worker is computing it now (and has not been lost)."""
        return self.status == self.Status.RUNNING and not self.stale

    @property
    def stale(self) -> bool:
        """Queued or running past the tasks' hard time limit: its message or worker was lost; ask again."""
        return self.status in (self.Status.QUEUED, self.Status.RUNNING) and self.updated < detections_lost_before()


# a GoodNet's strip_status while a calibration is asked for and not ended
STRIP_WAITING = (Status.QUEUED, Status.RUNNING)


class GoodNet(models.Model):
    """A BadNet and its repaired network answering together (defenses.goodnet). The repaired network is an
    experiment run's output or a file the user uploaded, loaded through the same safe path as a BadNet."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="goodnets")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    name = models.CharField(max_length=100)
    badnet = models.ForeignKey(BadNet, on_delete=models.CASCADE, related_name="goodnets")
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="goodnets")
    file = models.FileField(upload_to=stored_name, blank=True)
    original_name = models.CharField(max_length=255, blank=True)
    # the network's file in the run's folder (a run may keep several, one per point: ANP's taus)
    run_file = models.CharField(max_length=100, default="repaired_net.keras")
    sha256 = models.CharField(max_length=64)
    created = models.DateTimeField(auto_now_add=True)
    # STRIP (defenses.strip) on the BadNet as a second rule: N also when the entropy is under the threshold
    strip_frr = models.FloatField(null=True, blank=True, help_text="false-rejection rate asked, percent")
    strip_valid = models.ForeignKey(Dataset, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    strip_status = models.CharField(
        max_length=10, blank=True, choices=Status.choices, help_text="queued, running, done or failed; blank: no STRIP"
    )
    strip_queued_at = models.DateTimeField(null=True, blank=True)
    strip_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    strip_error = models.TextField(blank=True)
    strip_threshold = models.FloatField(null=True, blank=True)
    strip_file = models.FileField(upload_to=stored_name, blank=True, help_text="the overlays (.npy)")
    # the detector's figures on test sets: per trigger detection, false alarms, ROC and AUC of each rule
    figures = models.JSONField(default=dict, blank=True)

    def __str__(self):
        return self.name

    @property
    def strip_pending(self) -> bool:
        """A calibration is queued and not past the tasks' hard time limit (after it, its message or worker
        was lost, and a new one may be asked for)."""
        queued_at = self.strip_queued_at or timezone.now()
        return self.strip_status in STRIP_WAITING and queued_at >= detections_lost_before()

    @property
    def repaired_path(self) -> Path:
        return Path(self.file.path) if self.file else self.run.artifact_dir() / self.run_file

    def bundle_dir(self) -> Path:
        """Where its bundle is kept once built (webapp.lab.composition.cached_bundle); deleted with it."""
        return Path(settings.MEDIA_ROOT) / f"team-{self.team_id}" / "bundles" / f"goodnet-{self.pk}"

    def bundle_key(self) -> str:
        """What the bundle's content depends on: both networks, the name, and STRIP's calibration."""
        parts = [self.name, self.sha256, self.badnet.sha256, self.strip_threshold, self.strip_file.name or ""]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


class Upload(models.Model):
    """A file on its way in through the tus protocol (webapp/lab/tus.py): its bytes are written into a file of its
    own, `path` (team-N/uploads/<id>.part under MEDIA_ROOT: the user's file name is data, never a path), until
    `offset` reaches `length`. A finished upload is taken once by a dataset or BadNet form (page, API or nothing
    else) and is gone from then on, whatever the checks say (webapp/lab/uploads.py)."""

    DATASET, BADNET = "dataset", "badnet"
    KINDS = [(DATASET, "dataset"), (BADNET, "BadNet")]
    # the id is the upload's URL: unguessable, so that a URL seen in a log or a proxy reveals nothing to try
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="uploads")
    kind = models.CharField(max_length=10, choices=KINDS)
    filename = models.CharField(max_length=255, help_text="the name the user gave the file (shown, never a path)")
    length = models.PositiveBigIntegerField(help_text="Upload-Length: the bytes the file has")
    offset = models.PositiveBigIntegerField(default=0, help_text="Upload-Offset: the bytes stored so far")
    path = models.CharField(max_length=255, help_text="the bytes so far, relative to MEDIA_ROOT")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["updated"])]

    def __str__(self):
        return f"{self.filename}: {self.offset} of {self.length} bytes"

    @property
    def complete(self) -> bool:
        return self.offset == self.length

    @property
    def file_path(self) -> Path:
        return Path(settings.MEDIA_ROOT) / self.path

    # what the upload checks (webapp.lab.uploads.check_upload) read of a file: its name and size
    @property
    def name(self) -> str:
        return self.filename

    @property
    def size(self) -> int:
        return self.length
