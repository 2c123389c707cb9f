"""Create (or reset) the demo login that `make run` prints, so a first-time user can sign in at once."""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

DEMO_USERNAME = "demo"


class Command(BaseCommand):
    help = "Create the demo superuser for the local stack and print its credentials."

    def handle(self, *args, **options):
        password = os.environ.get("PRUNELAB_DEMO_PASSWORD", "prunelab-demo")
        user, created = get_user_model().objects.get_or_create(username=DEMO_USERNAME)
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        from webapp.lab.demo import ensure_demo_team

        ensure_demo_team(DEMO_USERNAME)  # the team exists before its data: pages say the data is being made
        verb = "created" if created else "reset"
        self.stdout.write(f"Demo login {verb}: user '{DEMO_USERNAME}', password '{password}'")
