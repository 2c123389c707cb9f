"""Forms: every field a user types or uploads is checked here before a service sees it."""

from dataclasses import asdict

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from defenses.planner import DEFENSES, SEED_STUDY, ParameterSpace, plan
from webapp.lab.models import BadNet, Dataset, Experiment, GoodNet, Run
from webapp.lab.uploads import DATASET_SUFFIXES, IMAGE_SUFFIXES, MODEL_SUFFIXES, check_upload

ARCH_CHOICES = [("", "full model (.h5 or .keras)"), ("deepid-csaw", "weights only, DeepID (CSAW-HackML-2020)")]
MAX_POINTS = 400  # a grid larger than this is almost always a typo (0:2:0.001)
MAX_EPOCHS = 500

# The seed report's study, one click each. Table 2 is one experiment here: T = 0 beside T = 0.8.
STUDY_TEMPLATES = {
    **{name: space for name, space in SEED_STUDY.items() if not name.startswith("table-2")},
    "table-2-with-and-without-pruning": ParameterSpace(thresholds=(0.0, 0.8), learning_rates=(0.001,), epochs=(30,)),
}


def parse_values(text: str, cast, what: str) -> tuple:
    """'0.8, 1, 1.2' or a range 'start:stop:step' (stop included) -> a sorted tuple without repeats."""
    text = (text or "").strip()
    if not text:
        raise ValidationError(f"Give at least one {what}.")
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if step <= 0 or stop < start or (stop - start) / step > MAX_POINTS:
                raise ValidationError(f"The range {text!r} for {what} is empty or has more than {MAX_POINTS} values.")
            count = int(round((stop - start) / step)) + 1
            values = [cast(round(start + i * step, 10)) for i in range(count)]
        else:
            values = [cast(part.strip()) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise ValidationError(f"{what.capitalize()}: {text!r} is not a list of numbers like '0.8, 1.0' or "
                              "a range like '0:2:0.1'.") from None  # fmt: skip
    return tuple(sorted(set(values)))


def whole(value) -> int:
    number = float(value)
    if number != int(number):
        raise ValueError(value)
    return int(number)


def as_text(values) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


class TeamForm(forms.Form):
    name = forms.CharField(max_length=100)


class InviteForm(forms.Form):
    username = forms.CharField(max_length=150, help_text="an existing account (staff create accounts in admin)")


class BadNetForm(forms.Form):
    name = forms.CharField(max_length=100)
    file = forms.FileField(help_text="a full Keras model (.h5 or .keras), or weights-only .h5 with a preset")
    arch = forms.ChoiceField(choices=ARCH_CHOICES, required=False, label="Architecture")
    divisor = forms.TypedChoiceField(choices=BadNet.SCALES, coerce=float, initial=255.0, label="Input scaling")

    def clean_file(self):
        check_upload(self.cleaned_data["file"], MODEL_SUFFIXES, what="model file")
        return self.cleaned_data["file"]


class DatasetForm(forms.Form):
    name = forms.CharField(max_length=100)
    file = forms.FileField(help_text="CSAW layout: HDF5 with 'data' (N, 3, 55, 47) and 'label' (N,)")
    role = forms.ChoiceField(choices=Dataset.ROLES)
    trigger = forms.CharField(max_length=60, required=False, help_text="poisoned sets: e.g. sunglasses")
    target = forms.IntegerField(required=False, min_value=0, help_text="poisoned sets: the attacker's label")
    badnet = forms.ModelChoiceField(
        queryset=BadNet.objects.none(),
        required=False,
        label="Check against BadNet",
        help_text="image size, labels and target must fit this BadNet's input and classes",
    )

    def __init__(self, team, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["badnet"].queryset = BadNet.objects.filter(team=team).order_by("name")

    def clean_file(self):
        check_upload(self.cleaned_data["file"], DATASET_SUFFIXES, what="dataset file")
        return self.cleaned_data["file"]

    def clean(self):
        data = super().clean()
        if data.get("role", "").startswith("poisoned") and not data.get("trigger"):
            self.add_error("trigger", "A poisoned set needs the name of its trigger (it labels the ASR lines).")
        badnet, target = data.get("badnet"), data.get("target")
        if badnet is not None and target is not None and target >= badnet.n_classes:
            self.add_error("target", f"{badnet.name} has classes 0..{badnet.n_classes - 1}; no class {target}.")
        return data


class ExperimentForm(forms.Form):
    name = forms.CharField(max_length=100)
    badnet = forms.ModelChoiceField(queryset=BadNet.objects.none(), label="BadNet")
    valid = forms.ModelChoiceField(queryset=Dataset.objects.none(), label="Clean validation set")
    test = forms.ModelChoiceField(queryset=Dataset.objects.none(), label="Clean test set")
    poisoned = forms.ModelMultipleChoiceField(queryset=Dataset.objects.none(), required=False,
                                              widget=forms.CheckboxSelectMultiple, label="Poisoned sets")  # fmt: skip
    defense = forms.ChoiceField(choices=[(d, d) for d in DEFENSES], initial="fine-prune")
    thresholds = forms.CharField(initial="1.0", help_text="values or a range start:stop:step")
    learning_rates = forms.CharField(initial="0.001", label="Learning rates")
    epochs = forms.CharField(initial="10")
    layers = forms.CharField(required=False, help_text="conv layers to prune, comma separated; empty: all")
    seed = forms.IntegerField(initial=0, min_value=0)
    max_drop = forms.FloatField(initial=4.0, min_value=0.1, max_value=100, label="Incremental: max accuracy drop")
    queue = forms.ChoiceField(choices=Experiment.QUEUES, initial="cpu")
    PARAMETERS = ("defense", "thresholds", "learning_rates", "epochs", "layers", "seed", "max_drop")

    def __init__(self, team, *args, **kwargs):
        super().__init__(*args, **kwargs)
        datasets = Dataset.objects.filter(team=team).order_by("name")
        self.fields["badnet"].queryset = BadNet.objects.filter(team=team).order_by("name")
        self.fields["valid"].queryset = datasets.filter(role=Dataset.CLEAN_VALID)
        self.fields["test"].queryset = datasets.filter(role=Dataset.CLEAN_TEST)
        self.fields["poisoned"].queryset = datasets.filter(role__in=[Dataset.POISONED_TEST, Dataset.POISONED_VALID])

    @classmethod
    def initial_for(cls, template: str) -> dict:
        space = STUDY_TEMPLATES.get(template)
        if space is None:
            return {}
        fields = asdict(space)
        return {"name": template, "defense": fields["defense"], "thresholds": as_text(fields["thresholds"]),
                "learning_rates": as_text(fields["learning_rates"]), "epochs": as_text(fields["epochs"])}  # fmt: skip

    def clean_thresholds(self):
        values = parse_values(self.cleaned_data["thresholds"], float, "threshold")
        if any(not 0 <= t <= 2 for t in values):
            raise ValidationError("Thresholds are between 0 and 2 (T times the layer's mean activation).")
        return values

    def clean_learning_rates(self):
        values = parse_values(self.cleaned_data["learning_rates"], float, "learning rate")
        if any(not 0 < lr <= 1 for lr in values):
            raise ValidationError("Learning rates are above 0 and at most 1.")
        return values

    def clean_epochs(self):
        values = parse_values(self.cleaned_data["epochs"], whole, "epoch count")
        if any(not 0 <= e <= MAX_EPOCHS for e in values):
            raise ValidationError(f"Epochs are whole numbers from 0 to {MAX_EPOCHS}.")
        return values

    def clean(self):
        data = super().clean()
        badnet = data.get("badnet")
        layers = tuple(name.strip() for name in data.get("layers", "").split(",") if name.strip())
        if badnet is not None:
            unknown = [name for name in layers if name not in badnet.report["conv_layers"]]
            if unknown:
                self.add_error("layers", f"{', '.join(unknown)}: not conv layers of {badnet.name}; it has "
                                         f"{', '.join(badnet.report['conv_layers'])}.")  # fmt: skip
        if any(name in self.errors for name in self.PARAMETERS):
            return data
        try:
            space = ParameterSpace(defense=data["defense"], thresholds=data["thresholds"],
                                   learning_rates=data["learning_rates"], epochs=data["epochs"], layers=layers,
                                   seed=data["seed"], max_drop=data["max_drop"])  # fmt: skip
        except ValueError as error:
            raise ValidationError(str(error)) from None
        if len(space.points()) > MAX_POINTS:
            raise ValidationError(f"This grid has {len(space.points())} points; the limit is {MAX_POINTS}.")
        if not any(d.role == Dataset.POISONED_TEST for d in data.get("poisoned", [])):
            self.add_error("poisoned", "Choose at least one poisoned test set: without one there is no ASR.")
        data["space"], data["plan"] = space, plan(space)  # the preview shows the plan even before the data is chosen
        return data


class GoodNetFromRunForm(forms.Form):
    name = forms.CharField(max_length=100)
    run = forms.ModelChoiceField(queryset=Run.objects.none(), label="Repaired network of run")

    def __init__(self, team, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["run"].queryset = Run.objects.filter(team=team, kind="finetune", status=Run.DONE).order_by("-pk")


class GoodNetUploadForm(forms.Form):
    name = forms.CharField(max_length=100)
    badnet = forms.ModelChoiceField(queryset=BadNet.objects.none(), label="BadNet")
    file = forms.FileField(label="Repaired network", help_text="a full Keras model (.h5 or .keras)")

    def __init__(self, team, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["badnet"].queryset = BadNet.objects.filter(team=team).order_by("name")

    def clean_file(self):
        check_upload(self.cleaned_data["file"], MODEL_SUFFIXES, what="model file")
        return self.cleaned_data["file"]


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
    sample_dataset = forms.ModelChoiceField(queryset=Dataset.objects.none(), required=False,
                                            label="or samples from")  # fmt: skip
    sample_indices = forms.CharField(required=False, initial="0, 1, 2, 3", label="image numbers")

    def __init__(self, team, *args, **kwargs):
        super().__init__(*args, **kwargs)
        goodnets = GoodNet.objects.filter(team=team).select_related("badnet").order_by("name")
        badnets = BadNet.objects.filter(team=team).order_by("name")
        self.fields["network"].choices = [("GoodNets", [(f"goodnet-{g.pk}", str(g)) for g in goodnets]),
                                          ("BadNets alone", [(f"badnet-{b.pk}", str(b)) for b in badnets])]  # fmt: skip
        self.fields["sample_dataset"].queryset = Dataset.objects.filter(team=team).order_by("name")
        self.goodnets, self.badnets = goodnets, badnets

    def clean_images(self):
        images = self.cleaned_data["images"]
        if len(images) > 16:
            raise ValidationError("At most 16 images at a time.")
        for image in images:
            check_upload(image, IMAGE_SUFFIXES, settings.MAX_IMAGE_UPLOAD_BYTES, what="PNG or JPEG image")
        return images

    def clean_sample_indices(self):
        text = self.cleaned_data["sample_indices"]
        return parse_values(text, whole, "image number") if text.strip() else ()

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
        return data
