"""`manage.py import_dataset` and `import_badnet`: files already on the server, stored as if a team member had
uploaded them. Each file passes through the upload form of its kind (the same field rules) and the same
services (the HDF5 door, full validation or the model sandbox, the duplicate check), from a private copy: the
stored file is a copy of the checked bytes, never a link to the path, which may change or go afterwards."""

import errno
import os
import stat
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files import File
from django.core.management.base import BaseCommand, CommandError

from webapp.lab.access import first_team
from webapp.lab.models import Membership, Team
from webapp.lab.services import AlreadyStored
from webapp.lab.uploads import store_checked


class ImportCommand(BaseCommand):
    """One command per kind: `form_data` turns the options into the form's fields, `store` calls the service,
    `refused` is the library's refusal and `stored` says in words what was stored."""

    what: str
    refused: type[Exception]

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH", help="files on this server")
        parser.add_argument("--user", required=True, help="the account that owns the rows (a user name)")
        parser.add_argument("--team", help="a team of the user's, by name or id (default: the one joined first)")
        parser.add_argument("--name", help="the name shown (default: the file's name without its suffix)")

    def handle(self, *args, **options):
        user, team = self.owner(options)
        self.check_options(team, options)
        paths = [Path(path) for path in options["paths"]]
        if options["name"] and len(paths) > 1:
            raise CommandError("--name names one file; with several PATHs each takes its own file's name.")
        failures = 0
        for path in paths:
            try:
                row = self.import_one(path, user, team, options)
            except AlreadyStored as duplicate:  # the file is there: what a script that runs twice wants
                self.stdout.write(f"{duplicate} ({self.what} {duplicate.row.pk})")
                continue
            except CommandError as refusal:
                self.stderr.write(str(refusal))
                failures += 1
                continue
            self.stdout.write(f"Stored {self.what} {row.pk} {row.name!r} in team {team.name}: {self.stored(row)}.")
        if failures:
            raise CommandError(f"{failures} of {len(paths)} file(s) refused; nothing of them was stored.")

    def owner(self, options):
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"There is no user {options['user']!r}; staff create accounts in /admin/.")
        wanted = options["team"]
        if wanted is None:
            team = first_team(user)
            if team is None:
                raise CommandError(f"{user.username} belongs to no team; give --team, or add them to one first.")
            return user, team
        found = Team.objects.filter(pk=int(wanted)) if wanted.isdigit() else Team.objects.filter(name=wanted)
        team = found.first()
        if team is None or not Membership.objects.filter(user=user, team=team).exists():
            raise CommandError(f"{user.username} is not a member of a team {wanted!r}; `--team` names one of theirs.")
        return user, team

    def import_one(self, path: Path, user, team, options):
        data = self.form_data(options) | {"name": options["name"] or path.stem[:100]}
        with open_plain_file(path) as handle:
            form = self.make_form(data, {"file": File(handle, name=path.name)}, team, user)

            def store(copy, cleaned):
                return self.store(team, user, copy, cleaned)

            row = form.is_valid() and store_checked(form, store, self.refused)
        if not row:
            raise CommandError(f"{path}: {reasons(form)}")
        return row

    def check_options(self, team, options) -> None:
        """Refuse options that no file can make right (CommandError), before any file is read."""

    def make_form(self, data: dict, files: dict, team, user):
        raise NotImplementedError

    def form_data(self, options) -> dict:
        raise NotImplementedError

    def store(self, team, user, path: Path, data: dict):
        raise NotImplementedError

    def stored(self, row) -> str:
        raise NotImplementedError


def open_plain_file(path: Path):
    """The file at `path` opened for reading, or CommandError with advice. Judged on what was opened, not on the
    name beforehand (a name can be swapped in between): a plain file, not reached through a symbolic link at its
    end (someone who may write into the folder could point it at any file the server reads) and not in the
    server's media folder (another team's stored files are there; a link higher up the path is caught here)."""
    try:
        # O_NONBLOCK: a FIFO opens at once (and is refused below) instead of waiting for a writer for ever
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file. Give the path of a file on this server.") from None
    except OSError as failed:
        if failed.errno == errno.ELOOP:
            raise CommandError(
                f"{path}: is a symbolic link; copy the file itself to the server and give its path."
            ) from None
        raise CommandError(f"{path}: cannot be read ({failed.strerror}).") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CommandError(f"{path}: not a plain file (a folder, device or pipe). Give the path of a file.")
        opened = Path(os.readlink(f"/proc/self/fd/{fd}")) if Path("/proc/self/fd").is_dir() else path.resolve()
        if opened.is_relative_to(Path(settings.MEDIA_ROOT).resolve()):
            raise CommandError(
                f"{path}: is in the server's own storage ({opened.parent}), where the teams' stored files live. "
                "Import a copy the owner gave you, from outside that folder."
            )
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def reasons(form) -> str:
    """A form's errors in one line, each after its option's name (the file's own errors need none)."""
    parts = []
    for field, errors in form.errors.items():
        text = " ".join(errors)
        parts.append(text if field in ("file", "__all__") else f"--{field}: {text}")
    return "; ".join(parts)
