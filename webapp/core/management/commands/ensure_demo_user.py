"""Make the demo login that `make run` prints, so a first-time user can sign in at once: an ordinary account
(never staff or superuser) with a random password made when the account is made, printed then and kept in
var/demo-login.txt (readable by the stack's own account only), never reset. An account left by an earlier
version, a superuser with the password that version published, is demoted and given a random one."""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

DEMO_USERNAME = "demo"
PUBLISHED_PASSWORD = "prunelab-demo"  # what earlier versions set on every start: anyone could read it


def remember(password: str) -> Path:
    """Write the password where the operator finds it again, readable by this account only."""
    path = Path(settings.VAR_DIR) / "demo-login.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(handle, "w") as file:
        file.write(f"user: {DEMO_USERNAME}\npassword: {password}\n")
    return path


class Command(BaseCommand):
    help = "Make the demo login for the local stack (once) and say how to sign in."

    def handle(self, *args, **options):
        user, created = get_user_model().objects.get_or_create(username=DEMO_USERNAME)
        published = not created and user.check_password(PUBLISHED_PASSWORD)
        if user.is_staff or user.is_superuser:
            user.is_staff = user.is_superuser = False
            user.save(update_fields=["is_staff", "is_superuser"])
        if created or published:
            password = os.environ.get("PRUNELAB_DEMO_PASSWORD") or secrets.token_urlsafe(12)
            user.set_password(password)
            user.save(update_fields=["password"])
            kept = remember(password)
            verb = "created" if created else "given a new password (it had the one earlier versions published)"
            self.stdout.write(
                f"Demo login {verb}: user '{DEMO_USERNAME}', password '{password}' (shown once; kept in {kept}, "
                "readable by this account only)"
            )
        else:
            self.stdout.write(
                f"Demo login: user '{DEMO_USERNAME}', the password printed when it was made "
                f"(in {Path(settings.VAR_DIR) / 'demo-login.txt'} if it was made here)"
            )
        from webapp.lab.demo import ensure_demo_team

        ensure_demo_team(DEMO_USERNAME)  # the team exists before its data: pages say the data is being made
