"""Make the demo data `make run` shows: generate the synthetic demo preset under var/demo (once, a few
minutes) and import its BadNets and datasets for the team "demo". Safe to run again: it skips what exists.
The team exists before the data does; webapp.lab.demo records each step for the pages to show."""

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from defenses.synthetic import BADNETS, build_benchmark
from webapp.core.management.commands.ensure_demo_user import DEMO_USERNAME
from webapp.lab.demo import ensure_demo_team, write_status
from webapp.lab.models import BadNet, Dataset
from webapp.lab.services import add_badnet, add_dataset

# rendering the faces, training each BadNet, importing them into the team
STEPS = 1 + len(BADNETS) + 1


class Command(BaseCommand):
    help = "Generate (once) and import the synthetic demo BadNets and datasets for the team 'demo'."

    def add_arguments(self, parser):
        parser.add_argument("--preset", default="demo", choices=["tiny", "demo", "full"])

    def handle(self, *args, **options):
        team = ensure_demo_team(DEMO_USERNAME)
        try:
            self.prepare(team, options["preset"])
        except BaseException as error:  # the page says so instead of "preparing" for ever
            write_status(0, STEPS, "stopped", error=f"{type(error).__name__}: {error}")
            raise
        write_status(STEPS, STEPS, "ready", done=True)
        self.stdout.write(f"Demo data ready: team 'demo', {BadNet.objects.filter(team=team).count()} BadNets.")

    def prepare(self, team, preset: str) -> None:
        folder = Path(settings.VAR_DIR) / preset
        if not (folder / "synth.json").exists():  # written last: its absence means "not finished"
            self.stdout.write(f"Generating the {preset} data into {folder} (once)...")
            write_status(1, STEPS, "drawing the synthetic faces")
            trained = [spec.name for spec in BADNETS]

            def progress(what: str, done: int, total: int) -> None:
                self.stdout.write(f"  {what} {done}/{total}")
                name = what.removeprefix("training ")
                if name in trained:  # one step per BadNet; the clean network is not made for the demo
                    index, epochs = trained.index(name), total // len(trained)
                    status = f"training the {name} BadNet ({done - index * epochs} of {epochs} epochs)"
                    write_status(2 + index, STEPS, status)

            build_benchmark(preset, folder, progress=progress, with_clean=False)
        write_status(STEPS, STEPS, "checking and importing the BadNets and datasets")
        self.import_into(team, folder)

    def import_into(self, team, folder: Path) -> None:
        record = json.loads((folder / "synth.json").read_text())
        user = team.membership_set.get(user__username=DEMO_USERNAME).user
        n = record["sizes"]["identities"]
        sets = folder / "data"
        for role, path in (
            (Dataset.CLEAN_VALID, sets / "clean_validation_data.h5"),
            (Dataset.CLEAN_TEST, sets / "clean_test_data.h5"),
        ):
            if not Dataset.objects.filter(team=team, original_name=path.name, role=role).exists():
                add_dataset(team, user, path, path.stem.replace("_", " "), role, n_classes=n)
        for name, entry in record["badnets"].items():
            if name == "clean" or BadNet.objects.filter(team=team, name=name).exists():
                continue
            badnet = add_badnet(team, user, folder / name / f"{name}_bd_net.h5", name, divisor=record["divisor"])
            for trigger, target in entry["triggers"].items():
                shown = trigger if entry["disclosed"] else "undisclosed"
                for role, suffix in ((Dataset.POISONED_TEST, "data"), (Dataset.POISONED_VALID, "valid_data")):
                    path = folder / name / f"{trigger}_poisoned_{suffix}.h5"
                    label = f"{name}: {shown} (target {target})"
                    add_dataset(team, user, path, label, role, shown, target, n, badnet=badnet)  # its own
        clean = Dataset.objects.filter(team=team, role__in=[Dataset.CLEAN_VALID, Dataset.CLEAN_TEST])
        for badnet in BadNet.objects.filter(team=team):  # the four share the clean sets, as CSAW's do
            badnet.declared_sets.add(*clean)
