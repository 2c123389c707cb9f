"""Check every stored upload again with today's rules: after an upgrade that closes a door (the HDF5 checks of
issue 12), files stored before it may be hostile. Lists each refused file with its reason; exit status 1 when
any is found, so it can run in a deploy script."""

from django.core.management.base import BaseCommand, CommandError

from defenses.data import DataError, validate_dataset
from defenses.modelcheck import ModelRefused, check_model_file
from webapp.lab.limits import dataset_limits, model_limits
from webapp.lab.models import BadNet, Dataset, GoodNet


class Command(BaseCommand):
    help = "Check every stored BadNet, dataset and GoodNet file with the current upload rules; list those refused."

    def handle(self, *args, **options):
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
