"""One planned job run end to end: load the BadNet and the datasets once, then run the job's kind (each defense
module says how, defenses.methods) and hand every result point to a callback (the CLI prints it, a worker
stores it)."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from defenses.data import DatasetLimits, inspect_dataset, load_dataset
from defenses.metrics import LabelledSet, evaluate, percent_equal, percent_unequal, predict_labels, seed_score
from defenses.modelcheck import Limits
from defenses.models import ModelReport, load_model
from defenses.pruning import activation_profile

ReportPoint = Callable[[int, dict], None]  # (position, metrics): epoch, threshold index or channels pruned


@dataclass(frozen=True)
class Inputs:
    model: Path
    arch: str | None
    divisor: float
    valid: Path
    test: Path
    poisoned: dict[str, Path] = field(default_factory=dict)
    model_limits: Limits = Limits()
    dataset_limits: DatasetLimits = DatasetLimits()


@dataclass
class Loaded:
    bad: object
    report: ModelReport
    divisor: float
    valid: LabelledSet
    clean: LabelledSet
    poisoned: dict[str, LabelledSet]
    profiles: dict[tuple[str, ...], dict] = field(default_factory=dict)  # the BadNet's, per layer choice
    before: dict | None = None
    bad_answers: dict | None = None  # the BadNet's labels on the test sets, for GoodNet rates

    def measure(self, model) -> dict:
        """A repaired network's point: CA, ASR per trigger and the seed's score on the test sets, validation
        accuracy (what selections read), and its GoodNet's rates against the BadNet: false alarms (clean test
        images answered N) and detection per trigger (poisoned test images answered N). One prediction per
        set; the BadNet's own answers are computed once."""
        if self.bad_answers is None:
            self.bad_answers = self.answers(self.bad)
        mine = self.answers(model)
        clean = percent_equal(mine["clean"], self.clean[1])
        asr = {name: percent_equal(mine[name], labels) for name, (_, labels) in self.poisoned.items()}
        detection = {name: percent_unequal(mine[name], self.bad_answers[name]) for name in self.poisoned}
        valid = percent_equal(predict_labels(model, self.valid[0], self.divisor), self.valid[1])
        goodnet = {"false_alarm": percent_unequal(mine["clean"], self.bad_answers["clean"]), "detection": detection}
        return {"ca": clean, "asr": asr, "score": seed_score(clean, asr), "valid_acc": valid, "goodnet": goodnet}

    def answers(self, model) -> dict:
        sets = {"clean": self.clean[0]} | {name: pixels for name, (pixels, _) in self.poisoned.items()}
        return {name: predict_labels(model, pixels, self.divisor) for name, pixels in sets.items()}

    def baseline(self) -> dict:
        """The BadNet's own CA, ASR, score and validation accuracy (before any defense), computed once. The
        validation accuracy is what the clean-accuracy floor of a selection is measured from."""
        if self.before is None:
            valid_acc = percent_equal(predict_labels(self.bad, self.valid[0], self.divisor), self.valid[1])
            metrics = evaluate(self.bad, self.divisor, self.clean, self.poisoned).as_dict()
            self.before = metrics | {"valid_acc": valid_acc}
        return self.before

    def profile(self, layers: list[str]) -> dict:
        """The BadNet's activation profile on the validation set, computed once per layer choice."""
        key = tuple(layers)
        if key not in self.profiles:
            self.profiles[key] = activation_profile(self.bad, self.valid[0], self.divisor, layers)
        return self.profiles[key]


def load_inputs(inputs: Inputs) -> Loaded:
    """The verified BadNet and its datasets, each checked against the model's input shape and classes."""
    bad, report = load_model(inputs.model, inputs.arch, inputs.model_limits)

    def read(path: Path) -> LabelledSet:  # every job scales its sets batch by batch: whole-number pixels as uint8
        info = inspect_dataset(path, report.input_shape, report.n_classes, inputs.dataset_limits)
        return load_dataset(info, compact=True)

    return Loaded(
        bad=bad,
        report=report,
        divisor=inputs.divisor,
        valid=read(inputs.valid),
        clean=read(inputs.test),
        poisoned={name: read(path) for name, path in inputs.poisoned.items()},
    )


def fresh_copy(model):
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def curve_point_dict(point) -> dict:
    from defenses.metrics import seed_score

    return {
        "threshold": point.threshold,
        "pruned": point.pruned,
        "fraction": point.fraction,
        "valid_acc": point.valid_acc,
        "ca": point.ca,
        "asr": point.asr,
        "score": seed_score(point.ca, point.asr) if point.ca is not None else None,
    }


def run_job(kind: str, config: dict, loaded: Loaded, report_point: ReportPoint, should_stop=None, artifact_dir=None):
    """Run a planned job of any kind, through the registry of defenses (defenses.methods)."""
    from defenses.methods import job_kind

    return job_kind(kind).run(loaded, config, report_point, should_stop, artifact_dir)
