"""`manage.py import_badnet PATH ... --user U [--arch deepid-csaw] [--divisor 1]`: model files already on this
server, checked in the sandbox and stored as the BadNets page stores an upload
(webapp/lab/management/importing.py)."""

from defenses.modelcheck import ModelRefused
from webapp.lab.forms import ARCH_CHOICES, BadNetForm
from webapp.lab.management.importing import ImportCommand
from webapp.lab.services import add_badnet


class Command(ImportCommand):
    help = "Check and store BadNet model files that are already on this server, as the BadNets page would."
    what, refused = "BadNet", ModelRefused

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--arch",
            default="",
            choices=[arch for arch, _ in ARCH_CHOICES],
            help="'' for a full model (default), deepid-csaw for CSAW's weights-only files",
        )
        parser.add_argument("--divisor", default="255", help="input scaling: 255 (divide by 255, default) or 1 (raw)")

    def make_form(self, data, files, team, user):
        return BadNetForm(data, files, team=team, user=user)

    def form_data(self, options) -> dict:
        return {"arch": options["arch"], "divisor": options["divisor"]}

    def store(self, team, user, path, data):
        return add_badnet(team, user, path, data["name"], data["arch"], data["divisor"])

    def stored(self, row) -> str:
        shape = "x".join(map(str, row.report["input_shape"]))
        return f"{row.n_classes} classes, input {shape}, {row.get_divisor_display()}"
