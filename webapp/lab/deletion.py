"""Deleting a BadNet, dataset, experiment or GoodNet, and what it takes along: one place that says it (the
confirmation page shows `Deletion.summary()` before anything happens) and does it.

What goes with what: a BadNet takes its experiments, runs, profiles and GoodNets; a dataset takes the
experiments that use it (with the runs only they use) and its profiles; an experiment takes the runs no other
experiment uses; every run taken takes the GoodNets composed from it (their network is the run's file); a
BadNet or dataset takes its Neural Cleanse scans (by cascade: they hold no file). Files
go once the database has let go of them (on commit): uploads are stored under a name of their own per row,
so a file is referenced by exactly one row. Work a worker is doing is not deleted under its feet: running
runs (the user is asked to cancel them first), a Neural Cleanse scan being computed, a STRIP calibration
waiting or being computed (the user is asked to wait for them: they cannot be cancelled, and take minutes).
"""

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction
from django.db.models import Q
from django.template.defaultfilters import filesizeformat

from webapp.lab.models import STRIP_WAITING, BadNet, Dataset, Experiment, GoodNet, Profile, Run, TriggerScan


@dataclass
class Deletion:
    row: BadNet | Dataset | Experiment | GoodNet
    experiments: list[Experiment] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    goodnets: list[GoodNet] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)  # files and run folders removed with the rows
    scans: list[TriggerScan] = field(default_factory=list)  # the scans deleted with the BadNet or dataset
    calibrating: list[GoodNet] = field(default_factory=list)  # GoodNets whose STRIP calibrates on the set

    def owners(self) -> set[int]:
        """Who made what goes: the row, and the experiments and GoodNets taken with it."""
        return {row.owner_id for row in [self.row, *self.experiments, *self.goodnets]}

    @property
    def running(self) -> list[Run]:
        return [run for run in self.runs if run.status == Run.RUNNING]

    @property
    def detecting(self) -> list[str]:
        """The detections a worker is computing on what goes, in words: a scan running, a STRIP calibration
        queued or running (a worker would store its result for a row that is gone)."""
        scans = [f"the Neural Cleanse scan of {s.badnet.name} on {s.dataset.name}" for s in self.scans if s.computing]
        strips = [f"the STRIP calibration of {g.name}" for g in self.goodnets + self.calibrating if g.strip_pending]
        return scans + strips

    def summary(self) -> list[str]:
        """What the deletion takes along, in words, for the confirmation page."""
        lines = []
        for what, rows in (
            ("experiment", [e for e in self.experiments if e is not self.row]),
            ("GoodNet", [g for g in self.goodnets if g is not self.row]),
        ):
            if rows:
                names = ", ".join(row.name for row in rows[:10]) + (", ..." if len(rows) > 10 else "")
                lines.append(f"{len(rows)} {what}{'s' if len(rows) != 1 else ''}: {names}")
        if self.runs:
            lines.append(f"{len(self.runs)} run{'s' if len(self.runs) != 1 else ''} and their results")
        if self.profiles:
            lines.append(f"{len(self.profiles)} activation profile{'s' if len(self.profiles) != 1 else ''}")
        size = sum(disk_bytes(path) for path in self.paths)
        if self.paths:
            lines.append(
                f"{len(self.paths)} stored file{'s' if len(self.paths) != 1 else ''} or run folder"
                f"{'s' if len(self.paths) != 1 else ''} ({filesizeformat(size)})"
            )
        elif isinstance(self.row, GoodNet) and self.row.run_id:
            lines.append("no file of its own: its repaired network is its run's, which stays")
        else:
            lines.append("no stored file")
        return lines


def disk_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return path.stat().st_size if path.exists() else 0


def plan_deletion(row) -> Deletion:
    """Everything that deleting `row` deletes with it (nothing is touched here)."""
    planned = {BadNet: of_badnet, Dataset: of_dataset, Experiment: of_experiment, GoodNet: of_goodnet}[type(row)](row)
    own = [planned.row] if isinstance(planned.row, BadNet | Dataset) else []
    files = [Path(r.file.path) for r in own + planned.goodnets if r.file]
    files += [Path(g.strip_file.path) for g in planned.goodnets if g.strip_file]  # STRIP's overlays
    files += [g.bundle_dir() for g in planned.goodnets if g.bundle_dir().exists()]  # built bundles
    planned.paths = files + [run.artifact_dir() for run in planned.runs if run.artifact_dir().exists()]
    scans = TriggerScan.objects.select_related("badnet", "dataset")
    if isinstance(planned.row, BadNet):
        planned.scans = list(scans.filter(badnet=planned.row))
    elif isinstance(planned.row, Dataset):
        planned.scans = list(scans.filter(dataset=planned.row))
        # its clean validation set (a test or poisoned set deleted under it fails the calibration with a reason)
        planned.calibrating = list(GoodNet.objects.filter(strip_valid=planned.row, strip_status__in=STRIP_WAITING))
    return planned


def of_badnet(badnet: BadNet) -> Deletion:
    return Deletion(
        badnet,
        list(badnet.experiments.all()),
        list(badnet.runs.all()),
        list(badnet.goodnets.all()),
        list(badnet.profiles.all()),
    )


def of_dataset(dataset: Dataset) -> Deletion:
    used = Q(valid=dataset) | Q(test=dataset) | Q(poisoned=dataset)
    experiments = list(Experiment.objects.filter(used, team=dataset.team).distinct())
    runs = runs_only_of(experiments)
    return Deletion(dataset, experiments, runs, goodnets_of(runs), list(Profile.objects.filter(dataset=dataset)))


def of_experiment(experiment: Experiment) -> Deletion:
    runs = runs_only_of([experiment])
    return Deletion(experiment, [experiment], runs, goodnets_of(runs))


def of_goodnet(goodnet: GoodNet) -> Deletion:
    return Deletion(goodnet, goodnets=[goodnet])


def goodnets_of(runs: list[Run]) -> list[GoodNet]:
    return list(GoodNet.objects.filter(run__in=runs))


def runs_only_of(experiments: list[Experiment]) -> list[Run]:
    """The runs of these experiments that no other experiment uses (shared work stays with the others)."""
    ids = [e.pk for e in experiments]
    runs = Run.objects.filter(experiments__in=ids).distinct()
    return [run for run in runs if not run.experiments.exclude(pk__in=ids).exists()]


def delete(deletion: Deletion) -> None:
    """Delete the rows in one transaction, then their files. Raises ValueError when runs are still running or
    a worker is computing a detection on them."""
    if deletion.running:
        raise ValueError(
            f"{len(deletion.running)} run(s) are still running; press Cancel on their experiment and "
            "delete once they have stopped."
        )
    if deletion.detecting:
        raise ValueError(
            f"A worker is computing {' and '.join(deletion.detecting)}; delete once its page shows the result "
            "(it cannot be cancelled, and usually ends within minutes)."
        )
    with transaction.atomic():
        for goodnet in deletion.goodnets:
            goodnet.delete()
        for experiment in deletion.experiments:
            experiment.delete()
        Run.objects.filter(pk__in=[run.pk for run in deletion.runs]).delete()
        if not isinstance(deletion.row, Experiment | GoodNet):
            deletion.row.delete()
        paths = list(deletion.paths)
        transaction.on_commit(lambda: remove(paths))


def remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
