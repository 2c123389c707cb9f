"""Check every stored upload again with today's rules: after an upgrade that closes a door (the HDF5 checks of
issue 12), files stored before it may be hostile. Lists each refused file with its reason; exit status 1 when
any is found, so it can run in a deploy script. Also lists the media no row holds (a crash between a file and
its row, an older version's leftovers: storage.orphans), which `--remove-orphans` deletes."""

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import filesizeformat

from defenses.data import DataError, validate_dataset
from defenses.modelcheck import ModelRefused, check_model_file
from webapp.lab.deletion import disk_bytes, remove
from webapp.lab.limits import dataset_limits, model_limits
from webapp.lab.models import BadNet, Dataset, GoodNet
from webapp.lab.storage import orphans


class Command(BaseCommand):
    help = "Check every stored BadNet, dataset and GoodNet file with the current upload rules; list those refused."

    def add_arguments(self, parser):
        parser.add_argument("--remove-orphans", action="store_true", help="delete the media no row holds")

    def handle(self, *args, **options):
        self.report_orphans(options["remove_orphans"])
        refused = [*self.refused_models(), *self.refused_datasets()]
        for row, reason in refused:
            self.stdout.write(f"{type(row).__name__} {row.pk} '{row.name}' of team {row.team_id}: {reason}")
        checked = BadNet.objects.count() + GoodNet.objects.count() + Dataset.objects.count()
        if refused:
            raise CommandError(
                f"{len(refused)} of {checked} stored files fail today's checks. Delete those rows in "
                "/admin/ (their files may read other files or exhaust memory) and ask their owners "
                "to upload them again."
            )
        self.stdout.write(f"All {checked} stored files pass today's checks.")

    def report_orphans(self, remove_them: bool) -> None:
        found = orphans()
        for path in found:
            self.stdout.write(f"Orphaned: {path} ({filesizeformat(disk_bytes(path))}): no row holds it")
        if not found:
            return
        size = filesizeformat(sum(disk_bytes(path) for path in found))
        if remove_them:
            remove(found)
            self.stdout.write(f"Removed {len(found)} orphaned files or folders ({size}).")
        else:
            self.stdout.write(
                f"{len(found)} files or folders ({size}) belong to no row; `manage.py audit_files --remove-orphans` "
                "deletes them."
            )

    def refused_models(self):
        caps = model_limits()
        rows = [(row, row.file.path) for row in BadNet.objects.all()]
        rows += [(row, str(row.repaired_path)) for row in GoodNet.objects.all()]
        for row, path in rows:
            try:
                check_model_file(path, caps)
            except (ModelRefused, OSError) as refusal:
                yield row, str(refusal)

    def refused_datasets(self):
        caps = dataset_limits()
        for row in Dataset.objects.all():
            try:
                validate_dataset(row.file.path, limits=caps)
            except (DataError, OSError) as refusal:
                yield row, str(refusal)
