"""Make the demo data `make run` shows: generate the synthetic demo preset under var/demo (once, a few
minutes) and import its BadNets and datasets for the team "demo". Safe to run again: it skips what exists."""

import json
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from defenses.synthetic import build_benchmark
from webapp.lab.models import BadNet, Dataset, Membership, Team
from webapp.lab.services import add_badnet, add_dataset


class Command(BaseCommand):
    help = "Generate (once) and import the synthetic demo BadNets and datasets for the team 'demo'."

    def add_arguments(self, parser):
        parser.add_argument("--preset", default="demo", choices=["tiny", "demo", "full"])

    def handle(self, *args, **options):
        folder = Path(settings.VAR_DIR) / options["preset"]
        if not (folder / "synth.json").exists():  # written last: its absence means "not finished"
            self.stdout.write(f"Generating the {options['preset']} data into {folder} (once)...")

            def progress(what: str, done: int, total: int) -> None:
                self.stdout.write(f"  {what} {done}/{total}")

            build_benchmark(options["preset"], folder, progress=progress)
        record = json.loads((folder / "synth.json").read_text())
        user, _ = get_user_model().objects.get_or_create(username="demo")
        team, _ = Team.objects.get_or_create(name="demo")
        Membership.objects.get_or_create(user=user, team=team, defaults={"is_admin": True})
        n = record["sizes"]["identities"]
        sets = folder / "data"
        for role, path in ((Dataset.CLEAN_VALID, sets / "clean_validation_data.h5"),
                           (Dataset.CLEAN_TEST, sets / "clean_test_data.h5")):  # fmt: skip
            if not Dataset.objects.filter(team=team, original_name=path.name, role=role).exists():
                add_dataset(team, user, path, path.stem.replace("_", " "), role, n_classes=n)
        for name, entry in record["badnets"].items():
            if name == "clean" or BadNet.objects.filter(team=team, name=name).exists():
                continue
            add_badnet(team, user, folder / name / f"{name}_bd_net.h5", name, divisor=record["divisor"])
            for trigger, target in entry["triggers"].items():
                shown = trigger if entry["disclosed"] else "undisclosed"
                for role, suffix in ((Dataset.POISONED_TEST, "data"), (Dataset.POISONED_VALID, "valid_data")):
                    path = folder / name / f"{trigger}_poisoned_{suffix}.h5"
                    add_dataset(team, user, path, f"{name}: {shown} (target {target})", role, shown, target, n)
        self.stdout.write(f"Demo data ready: team 'demo', {BadNet.objects.filter(team=team).count()} BadNets.")
