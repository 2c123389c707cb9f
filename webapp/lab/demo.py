"""The demo data `make run` prepares in the background: the team exists from the first second, and its members
see "preparing the demo data: step k of n" (templates/lab/_demo_status.html, polled) until it is ready.

The state lives in one small JSON file under VAR_DIR, written atomically by `manage.py demo_data` and read by
the pages: no table for a one-machine convenience, and nothing to clean up in a deployment without demo data.
"""

import json
import os
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from webapp.lab.models import Membership, Team

DEMO_TEAM = "demo"


def status_path() -> Path:
    return Path(settings.VAR_DIR) / "demo-status.json"


def write_status(step: int, steps: int, what: str, done: bool = False, error: str = "") -> None:
    """Record where the preparation is; a reader never sees half a file (write, then rename)."""
    path = status_path()
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"step": step, "steps": steps, "what": what, "done": done, "error": error}))
    os.replace(partial, path)


def read_status() -> dict | None:
    """The preparation's state, or None where no demo data is being (or was ever) prepared."""
    try:
        return json.loads(status_path().read_text())
    except (OSError, ValueError):
        return None


@transaction.atomic
def ensure_demo_team(username: str) -> Team:
    """The demo team with the demo user as its admin, made at once, before any data exists."""
    user, _ = get_user_model().objects.get_or_create(username=username)
    team, _ = Team.objects.get_or_create(name=DEMO_TEAM)
    Membership.objects.get_or_create(user=user, team=team, defaults={"is_admin": True})
    return team


def demo_status(request) -> dict:
    """Context processor: the preparation's state for members of the demo team while it is not finished."""
    team = getattr(request, "team", None)
    if team is None or team.name != DEMO_TEAM:
        return {}
    status = read_status()
    return {"demo_status": status} if status and not status["done"] else {}
