"""Forms: every field a user types or uploads is checked here before a service sees it."""

import contextlib
import json
import math
import unicodedata
from dataclasses import asdict

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Prefetch

from defenses.data import DEFAULT_HOLDOUT
from defenses.methods import (
    JOB_KINDS,
    LAYERS,
    METHODS,
    PARAMETERS,
    Parameter,
    default,
    grid_size,
    plan_space,
)
from defenses.planner import SEED_STUDY, ParameterSpace
from defenses.search import SearchSettings, can_search, first_rung_cost
from webapp.core.health import queues_with_workers
from webapp.lab import budgets, listing, storage
from webapp.lab.models import BadNet, Dataset, Experiment, GoodNet, Membership, Run, Team, Upload, data_fingerprint
from webapp.lab.parsing import MAX_ID, MAX_POINTS, MAX_VALUES_TEXT, as_text, brief, parse_values, whole
from webapp.lab.results import goodnet_label, run_label
from webapp.lab.uploads import IMAGE_SUFFIXES, MODEL_SUFFIXES, UPLOAD_SUFFIXES, check_upload, finished_upload

ARCH_CHOICES = [("", "full model (.h5 or .keras)"), ("deepid-csaw", "weights only, DeepID (CSAW-HackML-2020)")]
MAX_EPOCHS = 500
MAX_SAMPLES = settings.MAX_IMAGES_PER_TEST  # images per classification, uploaded and sampled together
HOLDOUT_PERCENT = round(DEFAULT_HOLDOUT * 100)
MAX_SEARCH_BUDGET = 5000  # fine-tuning-epoch units a search may ask for (27 epochs a trial: 185 full trials)
LEADERBOARD_BUDGET = 100  # each training defense's search on a leaderboard: the same for every defense

# The seed report's study, one click each. Table 2 is one experiment here: T = 0 beside T = 0.8.
STUDY_TEMPLATES = {
    **{name: space for name, space in SEED_STUDY.items() if not name.startswith("table-2")},
    "table-2-with-and-without-pruning": ParameterSpace(thresholds=(0.0, 0.8), learning_rates=(0.001,), epochs=(30,)),
}
# what the pages call them (the slugs stay in addresses)
TEMPLATE_TITLES = {
    "figure-2-threshold": "Figure 2: against the pruning threshold",
    "figure-3-learning-rate": "Figure 3: against the learning rate",
    "figure-4-epochs": "Figure 4: against the epochs",
    "table-1-grid": "Table 1: the T x LR x epochs grid",
    "table-2-with-and-without-pruning": "Table 2: fine-tuning with and without pruning",
}


def data_size(data: dict) -> tuple[int, int]:
    """What a job's cost depends on besides its config (JobKind.cost): the chosen clean validation set's images
    (1 before one is chosen) and the BadNet's labels (0 before one is chosen)."""
    valid, badnet = data.get("valid"), data.get("badnet")
    return (valid.count if valid is not None else 1), (badnet.n_classes if badnet is not None else 0)


def check_budget(method, space: dict, budget: float, size: tuple[int, int]) -> None:
    """A budget must buy at least one trial's first rung of the defense (an I-BAU round costs 14 units, its
    first rung of 3 rounds 42): below it a search trains nothing. `size`: data_size's."""
    first = first_rung_cost(method, space | {"defense": method.name}, SearchSettings(budget=budget), *size)
    if budget < first:
        raise ValidationError(
            f"{method.title}'s first rung ({SearchSettings(budget=budget).rungs()[0]} epochs) costs {first:g} "
            f"fine-tuning-epoch units; a budget of {budget:g} trains nothing. Give at least {math.ceil(first)}."
        )


def name_key(name: str) -> str:
    """What two team names are the same by: Unicode compatibility form, case folded ('Blue' is 'blue')."""
    return unicodedata.normalize("NFKC", name).casefold().strip()


def scripts_of(name: str) -> set[str]:
    """The writing systems of a name's letters (LATIN, CYRILLIC, ...), from their Unicode names."""
    return {unicodedata.name(char, "?").split()[0] for char in name if char.isalpha()}


class ExperimentFilterForm(forms.Form):
    """The experiments list's filters (a GET form): words in the name, BadNet or defense; a state; a tag; the
    archived ones instead of the others."""

    q = forms.CharField(required=False, max_length=100, label="Find")
    state = forms.ChoiceField(required=False, choices=[("", "any state"), *((s, s) for s in listing.STATES)])
    tag = forms.CharField(required=False, max_length=30)
    archived = forms.BooleanField(required=False, label="archived ones (instead of the others)")


class TeamForm(forms.Form):
    """A team's name as members will trust it: not a look-alike of another (a second attack review made
    'Blue', 'blue' with a zero-width space, and 'blue' in Cyrillic look-alike letters beside 'blue') and not
    one of too many."""

    name = forms.CharField(max_length=100)
    MAX_TEAMS_ADMINISTERED = 20

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_name(self):
        name = unicodedata.normalize("NFKC", self.cleaned_data["name"]).strip()
        if any(unicodedata.category(char)[0] in "CZ" and char != " " for char in name):
            raise ValidationError("A team name may hold no invisible, control or unusual space characters.")
        if len(scripts_of(name)) > 1:
            raise ValidationError(
                f"A team name uses letters of one writing system; this one mixes "
                f"{', '.join(sorted(scripts_of(name))).lower()}."
            )
        if any(name_key(other) == name_key(name) for other in Team.objects.values_list("name", flat=True)):
            raise ValidationError("That name is taken (or one that reads the same); choose another.")
        if self.user is not None and Membership.objects.filter(user=self.user, is_admin=True).count() >= (
            self.MAX_TEAMS_ADMINISTERED
        ):
            raise ValidationError(f"You administer {self.MAX_TEAMS_ADMINISTERED} teams already; that is the limit.")
        return name


class InviteForm(forms.Form):
    username = forms.CharField(max_length=150, help_text="an existing account (staff create accounts in admin)")


class ScalingField(forms.TypedChoiceField):
    """The input scaling by its number: 255, 255.0 and 1 are all the values they say (a choice field alone
    takes only its choices' exact text, '255.0', which an API client has no reason to guess)."""

    def valid_value(self, value):
        with contextlib.suppress(TypeError, ValueError):
            return float(value) in {choice for choice, _ in BadNet.SCALES}
        return False


class FileOrUploadForm(forms.Form):
    """A form whose file is either sent with it (multipart) or is a finished resumable upload of the user's in
    the form's team (`upload`: its id; webapp/lab/tus.py). Either goes through the same checks; a big file
    comes the second way (the page's uploads.js sends it in chunks first)."""

    kind: str
    file = forms.FileField(required=False)
    upload = forms.UUIDField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, team=None, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.team, self.user = team, user

    def clean_file(self):
        sent = self.cleaned_data.get("file")
        if sent:
            suffixes, what = UPLOAD_SUFFIXES[self.kind]
            check_upload(sent, suffixes, what=what)
            # a finished resumable upload reserved its bytes when it was opened; a file sent here is checked now
            refused = storage.refusal(self.team, self.user, sent.size, sent.name) if self.team else None
            if refused:
                raise ValidationError(refused)
        return sent

    def clean_upload(self):
        upload_id = self.cleaned_data.get("upload")
        if upload_id is None:
            return None
        upload = finished_upload(upload_id, self.user, self.team, self.kind)
        suffixes, what = UPLOAD_SUFFIXES[self.kind]
        check_upload(upload, suffixes, what=what)
        return upload

    def clean(self):
        data = super().clean()
        if "file" in self.errors or "upload" in self.errors:
            return data
        if data.get("file") and data.get("upload"):
            self.add_error("file", "Send the file, or the id of a finished upload of it, not both.")
        elif not data.get("file") and not data.get("upload"):
            self.add_error("file", "Choose a file.")
        return data


class BadNetForm(FileOrUploadForm):
    kind = Upload.BADNET
    name = forms.CharField(max_length=100)
    arch = forms.ChoiceField(choices=ARCH_CHOICES, required=False, label="Architecture")
    divisor = ScalingField(choices=BadNet.SCALES, coerce=float, initial=255.0, label="Input scaling")
    field_order = ["name", "file", "arch", "divisor"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["file"].help_text = "a full Keras model (.h5 or .keras), or weights-only .h5 with a preset"


class DatasetForm(FileOrUploadForm):
    kind = Upload.DATASET
    name = forms.CharField(max_length=100)
    role = forms.ChoiceField(choices=Dataset.ROLES)
    trigger = forms.CharField(max_length=60, required=False, help_text="poisoned sets: e.g. sunglasses")
    target = forms.IntegerField(
        required=False, min_value=0, max_value=2**31 - 1, help_text="poisoned sets: the attacker's label"
    )
    badnet = forms.ModelChoiceField(
        queryset=BadNet.objects.none(),
        required=False,
        label="Check against BadNet",
        help_text="image size, labels and target must fit this BadNet's input and classes",
    )

    field_order = ["name", "file", "role", "trigger", "target", "badnet"]

    def __init__(self, team, *args, **kwargs):
        super().__init__(*args, team=team, **kwargs)
        self.fields["badnet"].queryset = BadNet.objects.filter(team=team).order_by("name")
        self.fields["file"].help_text = "CSAW layout: HDF5 with 'data' (N, 3, 55, 47) and 'label' (N,)"

    def clean(self):
        data = super().clean()
        if data.get("role", "").startswith("poisoned") and not data.get("trigger"):
            self.add_error("trigger", "A poisoned set needs the name of its trigger (it labels the ASR lines).")
        badnet, target = data.get("badnet"), data.get("target")
        if badnet is not None and target is not None and target >= badnet.n_classes:
            self.add_error("target", f"{badnet.name} has classes 0..{badnet.n_classes - 1}; no class {target}.")
        return data


class RowsField(forms.ModelMultipleChoiceField):
    """Several rows by id. Django passes every id to the database in one IN (...) query, where one beyond 64
    bits raises OverflowError (a 500); such an id is simply not one of the choices."""

    def clean(self, value):
        for pk in value if isinstance(value, list | tuple) else []:
            with contextlib.suppress(ValueError, TypeError):  # not a number at all: Django's own check says so
                if abs(int(str(pk))) > MAX_ID:
                    raise ValidationError(
                        self.error_messages["invalid_choice"], code="invalid_choice", params={"value": brief(str(pk))}
                    )
        return super().clean(value)


class FitsOptions:
    """A choice widget whose options say which BadNets (ids) each dataset fits (`data-fits`), so the page
    offers only the sets that fit the chosen BadNet (forms.js hides the others). The form still checks."""

    fits: dict[int, str] = {}

    def create_option(self, name, value, *args, **kwargs):
        option = super().create_option(name, value, *args, **kwargs)
        pk = getattr(value, "value", value)
        if pk in self.fits:
            option["attrs"]["data-fits"] = self.fits[pk]
        return option


class FitsSelect(FitsOptions, forms.Select):
    pass


class FitsCheckboxes(FitsOptions, forms.CheckboxSelectMultiple):
    pass


def fits_by_dataset(datasets, badnets) -> dict[int, str]:
    """dataset id -> the ids of the BadNets it fits (Dataset.misfit), space separated."""
    return {d.pk: " ".join(str(b.pk) for b in badnets if not d.misfit(b)) for d in datasets}


def text_of(parameter: Parameter, value) -> str:
    """A parameter's value as its field shows it."""
    if parameter.kind == LAYERS:
        return ", ".join(value or ())
    return as_text(value) if isinstance(value, list | tuple) else as_text([value])


def parameter_field(parameter: Parameter, methods: list[str]) -> forms.Field:
    """The form field of a defense's parameter (defenses.methods): the text of a list or range for an axis of
    the grid, a number for a single value, names for conv layers. Fields of every defense are on the form (the
    page shows the chosen one's, forms.js); only the chosen defense's are checked."""
    own = {m: default(METHODS[m], parameter) for m in methods if default(METHODS[m], parameter) != parameter.default}
    attrs = {
        "data-methods": " ".join(methods),
        "data-defaults": json.dumps({m: text_of(parameter, v) for m, v in own.items()}),
    }
    # Text fields all: a field of a defense not chosen is not checked at all, and parse_values measures and
    # counts a value's text itself before making anything of it.
    initial = text_of(parameter, parameter.default)
    return forms.CharField(
        label=parameter.label, required=False, help_text=parameter.help, initial=initial, widget=forms.TextInput(attrs)
    )


def live_queue(queue: str) -> str:
    """The queue, when a live worker consumes it. A run queued where no worker listens waits forever, and
    serves later requests of the same work from there. CPU workers are the stack's own (`make run`, compose)."""
    if queue != "cpu" and queue not in queues_with_workers():
        raise ValidationError(
            f"No {queue.upper()} worker is running now, so these runs would wait forever: choose CPU workers, or "
            f"ask an operator to start one on a machine with a GPU (python -m workers.start --queues {queue})."
        )
    return queue


class ExperimentForm(forms.Form):
    """A defense (any registered in defenses.methods), its parameters' values, the sets and the floor."""

    name = forms.CharField(max_length=100)
    badnet = forms.ModelChoiceField(queryset=BadNet.objects.none(), label="BadNet")
    valid = forms.ModelChoiceField(queryset=Dataset.objects.none(), label="Clean validation set", widget=FitsSelect)
    test = forms.ModelChoiceField(queryset=Dataset.objects.none(), label="Clean test set", widget=FitsSelect)
    poisoned = RowsField(queryset=Dataset.objects.none(), required=False, widget=FitsCheckboxes, label="Poisoned sets")
    defense = forms.ChoiceField(initial="fine-prune")
    max_ca_drop = forms.FloatField(
        initial=5.0,
        min_value=0,
        max_value=100,
        required=False,
        label="Clean-accuracy floor",
        help_text="points (default 5): a 'best' point's validation CA may be at most this far below the BadNet's own",
    )
    holdout = forms.FloatField(
        initial=HOLDOUT_PERCENT,
        min_value=5,
        max_value=50,
        required=False,
        label="Held out for selection (%)",
        help_text="5 to 50: the share of the clean validation set that no repair step sees; the floor and the "
        f"'best' choice read only it (default {HOLDOUT_PERCENT})",
    )
    budget = forms.IntegerField(
        min_value=1,
        max_value=MAX_SEARCH_BUDGET,
        required=False,
        label="Search budget (epoch units)",
        help_text="empty: the grid of the values above; a number: search the defense's parameters within this many "
        "fine-tuning-epoch units instead",
    )
    queue = forms.ChoiceField(choices=Experiment.QUEUES, initial="cpu")
    DATASET_FIELDS = ("valid", "test", "poisoned")

    def clean_queue(self):
        return live_queue(self.cleaned_data["queue"])

    def __init__(self, team, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.team, self.user = team, user  # whose budgets of training work the request is checked against
        datasets = Dataset.objects.filter(team=team).order_by("name")
        badnets = BadNet.objects.filter(team=team).order_by("name")
        self.fields["badnet"].queryset = badnets
        self.fields["valid"].queryset = datasets.filter(role=Dataset.CLEAN_VALID)
        self.fields["test"].queryset = datasets.filter(role=Dataset.CLEAN_TEST)
        self.fields["poisoned"].queryset = datasets.filter(role__in=[Dataset.POISONED_TEST, Dataset.POISONED_VALID])
        fits = fits_by_dataset(datasets, badnets)
        for name in self.DATASET_FIELDS:
            self.fields[name].widget.fits = fits
        self.fields["defense"].choices = [(m.name, f"{m.name}: {m.summary}") for m in METHODS.values()]
        for name, parameter in PARAMETERS.items():  # after max_ca_drop and queue: fields in the page's order
            using = [m.name for m in METHODS.values() if parameter in m.parameters]
            self.fields[name] = parameter_field(parameter, using)
        # the common fields after the defense's own
        self.order_fields(["name", "badnet", "valid", "test", "poisoned", "defense", *PARAMETERS])

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """The fields the live preview reports errors of: the defense and its parameters."""
        method = METHODS.get(self.data.get("defense") or self.initial.get("defense") or "fine-prune")
        return ("defense", "holdout", "budget", *(p.name for p in (method.parameters if method else ())))

    @classmethod
    def initial_for(cls, template: str) -> dict:
        space = STUDY_TEMPLATES.get(template)
        if space is None:
            return {}
        fields = asdict(space)
        return {
            "name": template,
            "defense": fields["defense"],
            "thresholds": as_text(fields["thresholds"]),
            "learning_rates": as_text(fields["learning_rates"]),
            "epochs": as_text(fields["epochs"]),
        }

    def clean_max_ca_drop(self):
        value = self.cleaned_data["max_ca_drop"]
        return 5.0 if value is None else value

    def clean_holdout(self):
        value = self.cleaned_data["holdout"]
        return (HOLDOUT_PERCENT if value is None else value) / 100.0

    def search_space(self, method, space: dict, budget: int, size: tuple[int, int]) -> dict:
        """A search of `method` within `budget` units (defenses.search), or the error why it cannot be one."""
        if not can_search(method):
            raise ValidationError(
                f"{method.title} has no training epochs to search over; leave the budget empty for its grid."
            )
        check_budget(method, space, budget, size)
        return space | {"search": {"budget": budget}}

    def clean(self):
        data = super().clean()
        badnet = data.get("badnet")
        method = METHODS.get(data.get("defense"))
        if badnet is not None:
            self.check_fit(badnet, data)
        self.check_memory(data)
        if method is None:
            return data
        space = {"defense": method.name}
        for parameter in method.parameters:
            if data.get("budget") and parameter.axis and not (data.get(parameter.name) or "").strip():
                space[parameter.name] = list(default(method, parameter))  # a search draws it: no value needed
                continue
            try:
                space[parameter.name] = self.parameter_value(parameter, data, badnet)
            except ValidationError as error:
                self.add_error(parameter.name, error)
        if any(name in self.errors for name in self.parameter_names):
            return data
        space["holdout"] = data.get("holdout", HOLDOUT_PERCENT / 100.0)
        valid = data.get("valid")
        if valid is not None and round(space["holdout"] * valid.count) < 1:
            self.add_error(
                "holdout",
                f"{valid.name} has {valid.count} image{'s' if valid.count != 1 else ''}: holding out "
                f"{space['holdout']:.0%} of it leaves no image to choose on. Hold out more, or choose a larger "
                "clean validation set.",
            )
            return data
        if data.get("budget"):
            try:
                space = self.search_space(method, space, data["budget"], data_size(data))
            except ValidationError as error:
                self.add_error("budget", error)
                return data
        size = 1 if "search" in space else grid_size(space)
        if size > MAX_POINTS:  # from the axes' lengths: the grid is never built
            axes = " x ".join(p.label.lower() for p in method.axes())
            raise ValidationError(
                f"This grid has {size:,} points ({axes}); the limit is {MAX_POINTS}. Split it into several "
                "experiments or use fewer values."
            )
        if "poisoned" not in self.errors and not any(d.role == Dataset.POISONED_TEST for d in data.get("poisoned", [])):
            self.add_error("poisoned", "Choose at least one poisoned test set: without one there is no ASR.")
        data["space"] = space
        if "search" not in space:  # the preview shows the plan before the data
            data["plan"] = plan_space(space)
        if not self.errors:
            chosen = [data.get(name) for name in ("badnet", "valid", "test")]
            fingerprint = data_fingerprint(*chosen, data.get("poisoned") or []) if all(chosen) else None
            data["units"] = budgets.needed(self.team, space, data.get("plan"), fingerprint, *data_size(data))
            refused = budgets.refusal(self.team, self.user, data["units"])
            if refused:
                self.add_error(None, refused)
        return data

    def parameter_value(self, parameter: Parameter, data: dict, badnet):
        """A parameter's checked value: a list of numbers (an axis), a number, or conv layer names of the BadNet.
        What JSON can store: lists, not tuples."""
        raw = data.get(parameter.name)
        if raw and len(raw) > MAX_VALUES_TEXT:
            raise ValidationError(
                f"The {parameter.noun or parameter.name} field has {len(raw):,} characters; the limit is "
                f"{MAX_VALUES_TEXT:,}."
            )
        if parameter.kind == LAYERS:
            layers = [name.strip() for name in (raw or "").split(",") if name.strip()]
            conv = badnet.report["conv_layers"] if badnet is not None else None
            unknown = [name for name in layers if conv is not None and name not in conv]
            if unknown:
                raise ValidationError(
                    f"{', '.join(unknown)}: not conv layers of {badnet.name}; it has {', '.join(conv)}."
                )
            return layers
        cast = whole if parameter.kind is int else float
        what = parameter.noun or parameter.name
        if parameter.axis:
            numbers = parse_values(raw, cast, what)
        elif not (raw or "").strip():
            numbers = (parameter.default,)
        else:  # one value: the same rules as one value of a list (finite, a whole number where it must be)
            numbers = parse_values(raw.replace(",", " "), cast, what)[:1]
        low_ok = (lambda v: v > parameter.low) if parameter.low_open else (lambda v: v >= parameter.low)
        if any(not (low_ok(v) and v <= parameter.high) for v in numbers):
            low, high = (f"{v}" if isinstance(v, int) else f"{v:g}" for v in (parameter.low, parameter.high))
            bounds = f"above {low} and at most {high}" if parameter.low_open else f"between {low} and {high}"
            whole_only = " (whole numbers)" if parameter.kind is int else ""
            raise ValidationError(f"{parameter.label}: every value must be {bounds}{whole_only}.")
        return list(numbers) if parameter.axis else numbers[0]

    def check_memory(self, data: dict) -> None:
        """A run's worker holds every chosen set in memory: their float32 pixels must fit MAX_RUN_PIXEL_BYTES
        (judged from the stored sizes, before any run is queued). An attack review made a worker hold 6.5 GB
        with three 26 MB uploads."""
        sets = [data[name] for name in ("valid", "test") if data.get(name)] + list(data.get("poisoned") or [])
        total = sum(dataset.memory_bytes for dataset in sets)
        if total > settings.MAX_RUN_PIXEL_BYTES:
            most = settings.MAX_RUN_PIXEL_BYTES / 2**30
            self.add_error(
                None,
                f"These sets hold {total / 2**30:.1f} GiB of pixels as a worker reads them; the "
                f"limit is {most:.1f} GiB. Choose fewer or smaller poisoned sets, or ask an "
                "operator to raise PRUNELAB_MAX_RUN_PIXEL_BYTES.",
            )

    def check_fit(self, badnet: BadNet, data: dict) -> None:
        """Every chosen set must fit the BadNet (Dataset.misfit): the refusal names the set and why."""
        for name in self.DATASET_FIELDS:
            chosen = data.get(name)
            sets = list(chosen or []) if name == "poisoned" else [chosen] if chosen else []
            for dataset in sets:
                reason = dataset.misfit(badnet)
                if reason:
                    self.add_error(name, reason)


class LeaderboardForm(forms.Form):
    """A BadNet's sets and the floor for a leaderboard: every defense's small sweep on them."""

    valid = forms.ModelChoiceField(queryset=Dataset.objects.none(), label="Clean validation set")
    test = forms.ModelChoiceField(queryset=Dataset.objects.none(), label="Clean test set")
    poisoned = RowsField(
        queryset=Dataset.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        label="Poisoned sets",
        help_text="a poisoned validation set lets the ranking see the backdoor; without one it "
        "ranks by clean validation accuracy",
    )
    max_ca_drop = forms.FloatField(initial=5.0, min_value=0, max_value=100, label="Clean-accuracy floor")
    holdout = ExperimentForm.base_fields["holdout"]
    budget = forms.IntegerField(
        initial=LEADERBOARD_BUDGET,
        min_value=1,
        max_value=MAX_SEARCH_BUDGET,
        required=False,
        label="Search budget per defense (epoch units)",
        help_text="every training defense searches its parameters within this many fine-tuning-epoch units; "
        "the pruning-only defenses run their small sweep",
    )
    seed = forms.IntegerField(
        initial=0,
        min_value=0,
        max_value=2**31 - 1,
        required=False,
        help_text="training order, held-out split and search; a board again with another seed shows the spread",
    )
    queue = forms.ChoiceField(choices=Experiment.QUEUES, initial="cpu")
    clean_holdout = ExperimentForm.clean_holdout
    clean_queue = ExperimentForm.clean_queue

    def clean_seed(self):
        return self.cleaned_data["seed"] or 0

    def clean_budget(self):
        value = self.cleaned_data["budget"]
        return LEADERBOARD_BUDGET if value is None else value

    def check_budgets(self, data: dict) -> None:
        """Every training defense's first rung must fit the board's budget (the same for all)."""
        space = {"holdout": data.get("holdout", HOLDOUT_PERCENT / 100)}
        too_small = []
        for method in METHODS.values():
            if can_search(method):
                try:
                    check_budget(method, space, data["budget"], (data["valid"].count, self.badnet.n_classes))
                except ValidationError as error:
                    too_small.append(error.messages[0].split(";")[0])
        if too_small:
            self.add_error("budget", f"{'; '.join(too_small)}: give a budget that buys one first rung of each.")

    def __init__(self, badnet: BadNet, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.badnet, self.user = badnet, user
        fitting = [d.pk for d in Dataset.objects.filter(team=badnet.team) if not d.misfit(badnet)]
        sets = Dataset.objects.filter(pk__in=fitting).order_by("name")
        self.fields["valid"].queryset = sets.filter(role=Dataset.CLEAN_VALID)
        self.fields["test"].queryset = sets.filter(role=Dataset.CLEAN_TEST)
        self.fields["poisoned"].queryset = sets.filter(role__in=[Dataset.POISONED_TEST, Dataset.POISONED_VALID])

    def clean(self):
        data = super().clean()
        if "poisoned" not in self.errors and not any(d.role == Dataset.POISONED_TEST for d in data.get("poisoned", [])):
            self.add_error("poisoned", "Choose at least one poisoned test set: without one there is no ASR.")
        ExperimentForm.check_memory(self, data)
        if "budget" in data and data.get("valid") is not None:
            self.check_budgets(data)
        data["badnet"] = self.badnet
        if not self.errors:
            data["units"] = self.training_units(data)
            refused = budgets.refusal(self.badnet.team, self.user, data["units"])
            if refused:
                self.add_error(None, refused)
        return data

    @staticmethod
    def training_units(data: dict) -> float:
        """Units the board queues: the search budget of each training defense, and the others' sweeps."""
        units = 0.0
        for method in METHODS.values():
            space = {"defense": method.name, **method.sweep, "holdout": data.get("holdout", HOLDOUT_PERCENT / 100)}
            if can_search(method):
                units += data["budget"] + budgets.search_setup(space, data["valid"].count, data["badnet"].n_classes)
                continue
            size = data["valid"].count, data["badnet"].n_classes
            units += sum(budgets.run_units(j.kind, j.config, *size) for j in plan_space(space).jobs)
        return units


class RunChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        return run_label(obj)


class GoodNetFromRunForm(forms.Form):
    name = forms.CharField(max_length=100)
    run = RunChoiceField(queryset=Run.objects.none(), label="Repaired network of run")

    def __init__(self, team, *args, **kwargs):
        super().__init__(*args, **kwargs)
        repairs = [kind.name for kind in JOB_KINDS.values() if kind.repairs]
        runs = Run.objects.filter(team=team, kind__in=repairs, status=Run.DONE).order_by("-pk")
        own = Prefetch("experiments", queryset=Experiment.objects.filter(team=team).select_related("owner"))
        self.fields["run"].queryset = runs.select_related("badnet").prefetch_related(
            "points", own, "experiments__poisoned"
        )


class GoodNetUploadForm(forms.Form):
    name = forms.CharField(max_length=100)
    badnet = forms.ModelChoiceField(queryset=BadNet.objects.none(), label="BadNet")
    file = forms.FileField(label="Repaired network", help_text="a full Keras model (.h5 or .keras)")

    def __init__(self, team, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.team, self.user = team, user
        self.fields["badnet"].queryset = BadNet.objects.filter(team=team).order_by("name")

    def clean_file(self):
        sent = self.cleaned_data["file"]
        check_upload(sent, MODEL_SUFFIXES, what="model file")
        refused = storage.refusal(self.team, self.user, sent.size, sent.name)  # a repaired network is kept too
        if refused:
            raise ValidationError(refused)
        return sent


class StripForm(forms.Form):
    """STRIP for a GoodNet: the clean set it is calibrated on, the false-rejection rate, and the test sets its
    figures are measured on; only sets of the GoodNet's team that fit its BadNet are offered."""

    valid = forms.ModelChoiceField(queryset=Dataset.objects.none(), label="Calibrate on (clean validation set)")
    frr = forms.FloatField(
        initial=1.0,
        min_value=0.1,
        max_value=50.0,
        label="False-rejection rate (%)",
        help_text="the share of clean inputs STRIP may call poisoned",
    )
    test = forms.ModelChoiceField(queryset=Dataset.objects.none(), label="Clean test set (false alarms)")
    poisoned = RowsField(
        queryset=Dataset.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        label="Poisoned test sets (detection per trigger)",
    )

    def __init__(self, goodnet: GoodNet, *args, **kwargs):
        super().__init__(*args, **kwargs)
        badnet = goodnet.badnet
        fitting = [d.pk for d in Dataset.objects.filter(team=goodnet.team) if not d.misfit(badnet)]
        sets = Dataset.objects.filter(pk__in=fitting).order_by("name")
        self.fields["valid"].queryset = sets.filter(role=Dataset.CLEAN_VALID)
        self.fields["test"].queryset = sets.filter(role=Dataset.CLEAN_TEST)
        self.fields["poisoned"].queryset = sets.filter(role=Dataset.POISONED_TEST)

    def clean(self):
        data = super().clean()
        valid = data.get("valid")
        if valid is not None and valid.count < 120:
            needed = "STRIP needs at least 120 (100 to blend with, the rest to calibrate on)"
            self.add_error("valid", f"{valid.name} has {valid.count} images; {needed}.")
        ExperimentForm.check_memory(self, data)
        return data


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    widget = MultipleFileInput

    def clean(self, data, initial=None):
        files = data if isinstance(data, list | tuple) else [data] if data else []
        return [super(MultipleImageField, self).clean(item, initial) for item in files]


class ClassifyForm(forms.Form):
    network = forms.ChoiceField(label="Network")
    images = MultipleImageField(required=False, help_text="PNG or JPEG; other sizes are resized")
    sample_dataset = forms.ModelChoiceField(queryset=Dataset.objects.none(), required=False, label="or samples from")
    sample_indices = forms.CharField(required=False, initial="0, 1, 2, 3", label="image numbers")

    def __init__(self, team, *args, **kwargs):
        super().__init__(*args, **kwargs)
        goodnets = GoodNet.objects.filter(team=team).select_related("badnet", "run__badnet").order_by("name")
        badnets = BadNet.objects.filter(team=team).order_by("name")
        self.fields["network"].choices = [
            ("GoodNets", [(f"goodnet-{g.pk}", goodnet_label(g)) for g in goodnets]),
            ("BadNets alone", [(f"badnet-{b.pk}", str(b)) for b in badnets]),
        ]
        self.fields["sample_dataset"].queryset = Dataset.objects.filter(team=team).order_by("name")
        self.goodnets, self.badnets = goodnets, badnets

    def clean_images(self):
        images = self.cleaned_data["images"]
        if len(images) > MAX_SAMPLES:
            raise ValidationError(f"At most {MAX_SAMPLES} images at a time.")
        for image in images:
            check_upload(image, IMAGE_SUFFIXES, settings.MAX_IMAGE_UPLOAD_BYTES, what="PNG or JPEG image")
        return images

    def clean_sample_indices(self):
        text = self.cleaned_data["sample_indices"]
        indices = parse_values(text, whole, "image number") if text.strip() else ()
        if any(index < 0 for index in indices):
            raise ValidationError("Image numbers start at 0 (the first image of the set).")
        if len(indices) > MAX_SAMPLES:
            raise ValidationError(f"At most {MAX_SAMPLES} image numbers at a time.")
        return indices

    def clean(self):
        data = super().clean()
        kind, _, pk = data.get("network", "-").partition("-")
        rows = {"goodnet": self.goodnets, "badnet": self.badnets}.get(kind)
        data["goodnet"] = data["badnet"] = None
        if rows is not None and rows.filter(pk=pk).exists():
            chosen = rows.get(pk=pk)
            data["goodnet"] = chosen if kind == "goodnet" else None
            data["badnet"] = chosen.badnet if kind == "goodnet" else chosen
        if not data.get("images") and not data.get("sample_dataset"):
            raise ValidationError("Upload at least one image or choose a dataset to take samples from.")
        dataset, indices = data.get("sample_dataset"), data.get("sample_indices") or ()
        if dataset is not None and indices and max(indices) >= dataset.count:
            self.add_error(
                "sample_indices",
                f"{dataset.name} has {dataset.count} images, numbered 0 to "
                f"{dataset.count - 1}; there is no image {max(indices)}.",
            )
        return data
