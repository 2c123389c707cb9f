"""`manage.py import_dataset PATH ... --user U --role ROLE`: CSAW-layout HDF5 sets already on this server,
checked and stored as the Datasets page stores an upload (webapp/lab/management/importing.py)."""

from django.core.management.base import CommandError

from defenses.data import DataError
from webapp.lab.forms import DatasetForm
from webapp.lab.management.importing import ImportCommand
from webapp.lab.models import BadNet, Dataset
from webapp.lab.services import add_dataset


class Command(ImportCommand):
    help = "Check and store dataset files that are already on this server, as the Datasets page would."
    what, refused = "dataset", DataError

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--role",
            required=True,
            choices=[role for role, _ in Dataset.ROLES],
            help="what the set is for: " + "; ".join(f"{role}: {words}" for role, words in Dataset.ROLES),
        )
        parser.add_argument("--trigger", default="", help="poisoned sets: the trigger's name (e.g. sunglasses)")
        parser.add_argument("--target", type=int, help="poisoned sets: the attacker's target label")
        parser.add_argument(
            "--badnet",
            type=int,
            help="check image size and labels against this BadNet of the team: its id, as in /badnets/ID/",
        )

    def check_options(self, team, options) -> None:
        wanted = options["badnet"]
        if wanted is None or BadNet.objects.filter(team=team, pk=wanted).exists():
            return
        ids = [
            f"{pk} {name!r}" for pk, name in BadNet.objects.filter(team=team).order_by("pk").values_list("pk", "name")
        ]
        raise CommandError(
            f"--badnet {wanted}: team {team.name} has no BadNet {wanted}; "
            + (f"its BadNets are {', '.join(ids)}." if ids else "it has no BadNet yet (manage.py import_badnet).")
        )

    def make_form(self, data, files, team, user):
        return DatasetForm(team, data, files, user=user)

    def form_data(self, options) -> dict:
        data = {"role": options["role"], "trigger": options["trigger"]}
        for optional in ("target", "badnet"):
            if options[optional] is not None:
                data[optional] = str(options[optional])
        return data

    def store(self, team, user, path, data):
        return add_dataset(
            team, user, path, data["name"], data["role"], data["trigger"], data["target"], badnet=data["badnet"]
        )

    def stored(self, row) -> str:
        return (
            f"{row.count} images of {row.height}x{row.width}, labels {row.label_min}..{row.label_max}, "
            f"{row.get_role_display()}{f', trigger {row.trigger} -> {row.target}' if row.trigger else ''}"
        )
