"""Storage quotas: the bytes a team, and each user, keep on the server (stored BadNets, sets and GoodNets plus
unfinished uploads, which reserve their declared length; a team's also its runs' folders and its GoodNets'
bundles, which belong to no one user), and a reserve of free disk no upload may take.
Checked when a resumable upload is opened and when a file sent with a form is stored, so a refusal comes
before the bytes are written."""

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db.models import Sum
from django.template.defaultfilters import filesizeformat

from webapp.lab.models import BadNet, Dataset, GoodNet, Run, Upload


def stored_bytes(**owner) -> int:
    """Bytes of the stored files of the rows matching `owner` (team=... or owner=...), read from the disk."""
    total = 0
    for model, fields in ((BadNet, ("file",)), (Dataset, ("file",)), (GoodNet, ("file", "strip_file"))):
        for row in model.objects.filter(**owner).only(*fields):
            for name in fields:
                field = getattr(row, name)
                if field and Path(field.path).is_file():
                    total += Path(field.path).stat().st_size
    return total


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else 0


def derived_bytes(team) -> int:
    """Bytes the team's work wrote: its runs' folders (repaired networks, exports, checkpoints) and its
    GoodNets' bundles."""
    root = Path(settings.MEDIA_ROOT) / f"team-{team.pk}"
    return folder_bytes(root / "runs") + folder_bytes(root / "bundles")


def open_bytes(**owner) -> int:
    return Upload.objects.filter(**owner).aggregate(total=Sum("length"))["total"] or 0


def free_disk() -> int:
    """Free bytes on the disk that holds MEDIA_ROOT (the nearest folder that exists: a fresh install has none)."""
    folder = Path(settings.MEDIA_ROOT)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


@dataclass
class Usage:
    team: int
    user: int
    derived: int  # of the team's: its runs' and bundles'

    @classmethod
    def of(cls, team, user) -> "Usage":
        derived = derived_bytes(team)
        return cls(
            team=stored_bytes(team=team) + open_bytes(team=team) + derived,
            user=stored_bytes(owner=user) + open_bytes(owner=user),
            derived=derived,
        )


def refusal(team, user, adding: int, name: str) -> str | None:
    """Why `adding` more bytes (the file `name`) may not be kept now, in words that say what to do; None: they
    may."""
    usage = Usage.of(team, user)
    for who, used, quota, setting in (
        ("your team", usage.team, settings.TEAM_STORAGE_BYTES, "PRUNELAB_TEAM_STORAGE_BYTES"),
        ("you", usage.user, settings.USER_STORAGE_BYTES, "PRUNELAB_USER_STORAGE_BYTES"),
    ):
        if used + adding > quota:
            return (
                f"{name} ({filesizeformat(adding)}) would take {who} past the {filesizeformat(quota)} of storage "
                f"allowed ({filesizeformat(used)} used, counting unfinished uploads). Delete BadNets, sets, "
                f"experiments or GoodNets you no longer need, or ask an operator to raise {setting}."
            )
    free = free_disk()
    if free - adding < settings.DISK_RESERVE_BYTES:
        return (
            f"{name} ({filesizeformat(adding)}) cannot be kept: the server has {filesizeformat(free)} of disk free and "
            f"keeps {filesizeformat(settings.DISK_RESERVE_BYTES)} in reserve. Tell an operator; try again later."
        )
    return None


def orphans(min_age_seconds: float = 600) -> list[Path]:
    """Files and folders under MEDIA_ROOT that no row holds (manage.py audit_files lists them): an upload's
    file without its BadNet, set, GoodNet or unfinished upload; a run's folder without its run; a bundle
    without its GoodNet. Anything written in the last `min_age_seconds` is left out: it may be a row's,
    still being made."""
    root = Path(settings.MEDIA_ROOT)
    held = {row.path for row in Upload.objects.all()}
    for model, fields in ((BadNet, ("file",)), (Dataset, ("file",)), (GoodNet, ("file", "strip_file"))):
        held |= {name for row in model.objects.only(*fields) for name in (getattr(row, f).name for f in fields) if name}
    runs = {f"team-{team}/runs/{pk}" for pk, team in Run.objects.values_list("pk", "team_id")}
    bundles = {f"team-{team}/bundles/goodnet-{pk}" for pk, team in GoodNet.objects.values_list("pk", "team_id")}
    found = []
    for team in sorted(root.glob("team-*")):
        for kind in sorted(path for path in team.iterdir() if path.is_dir()):
            for entry in sorted(kind.iterdir()):
                name = entry.relative_to(root).as_posix()
                if kind.name == "runs" and re.fullmatch(r"\d+", entry.name):
                    orphaned = name not in runs
                elif kind.name == "bundles":
                    orphaned = name not in bundles
                else:
                    orphaned = entry.is_file() and name not in held
                if orphaned and newest_change(entry) < time.time() - min_age_seconds:
                    found.append(entry)
    return found


def newest_change(path: Path) -> float:
    """The latest modification time of a file, or of anything in a folder."""
    inside = [item.stat().st_mtime for item in path.rglob("*")] if path.is_dir() else []
    return max([path.stat().st_mtime, *inside])
