"""One planned job run end to end: load the BadNet and the datasets once, split the clean validation set into
the part a repair may use and the held-out part selection reads, then run the job's kind (each defense module
says how, defenses.methods) and hand every result point to a callback (the CLI prints it, a worker stores it).
"""

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from defenses.data import DatasetLimits, holdout_split, inspect_dataset, load_dataset
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
    """A job's BadNet and sets in memory. `valid` is what a repair may use (profiles, fine-tuning, masks,
    trigger inversion); `held_out` is what selection and the clean-accuracy floor read. Before `split` they
    are the same set: the way runs were measured before held-out selection (their "validation" accuracy is
    training accuracy)."""

    bad: object
    report: ModelReport
    divisor: float
    valid: LabelledSet
    clean: LabelledSet
    poisoned: dict[str, LabelledSet]
    held_out: LabelledSet | None = None  # None: the whole of `valid` (not split)
    holdout: dict | None = None  # {"share", "seed", "images", "of"} once split
    profiles: dict[tuple[str, ...], dict] = field(default_factory=dict)  # the BadNet's, per layer choice
    before: dict | None = None
    bad_answers: dict | None = None  # the BadNet's labels on the test sets, for GoodNet rates
    splits: dict = field(default_factory=dict)  # (share, seed) -> Loaded, made once
    memos: dict = field(default_factory=dict)  # what `remember` computed once for this data, by its key
    # where a job says what it is doing between its points (a Neural Cleanse scan's labels done), in words:
    # a worker shows it on the run's page; None where nobody listens
    on_stage: Callable[[str], None] | None = None

    def split(self, share: float, seed: int) -> "Loaded":
        """This job's data with the clean validation set split once (data.holdout_split): `valid` is the repair's
        part, `held_out` the rest. The test sets and the BadNet's answers on them are shared, not copied."""
        if self.holdout is not None:
            raise ValueError("the clean validation set is split already")
        if (share, seed) not in self.splits:
            self.bad_answers = self.bad_answers or self.answers(self.bad)
            pixels, labels = self.valid
            repair, held = holdout_split(labels, share, seed)
            self.splits[(share, seed)] = replace(
                self,
                valid=(pixels[repair], labels[repair]),
                held_out=(pixels[held], labels[held]),
                holdout={"share": share, "seed": seed, "images": len(held), "of": len(labels)},
                profiles={},
                before=None,
                splits={},
                memos={},
            )
        return self.splits[(share, seed)]

    @property
    def selection_set(self) -> LabelledSet:
        """The clean images a selection reads: the held-out part, or the whole set when not split."""
        return self.valid if self.held_out is None else self.held_out

    def measure(self, model) -> dict:
        """A repaired network's point: CA, ASR per trigger and the seed's score on the test sets, validation
        accuracy on the held-out images (what selections read), and its GoodNet's rates against the BadNet:
        false alarms (clean test images answered N) and detection per trigger (poisoned test images answered
        N). One prediction per set; the BadNet's own answers are computed once."""
        if self.bad_answers is None:
            self.bad_answers = self.answers(self.bad)
        mine = self.answers(model)
        clean = percent_equal(mine["clean"], self.clean[1])
        asr = {name: percent_equal(mine[name], labels) for name, (_, labels) in self.poisoned.items()}
        detection = {name: percent_unequal(mine[name], self.bad_answers[name]) for name in self.poisoned}
        valid = self.valid_accuracy(model)
        goodnet = {"false_alarm": percent_unequal(mine["clean"], self.bad_answers["clean"]), "detection": detection}
        return {"ca": clean, "asr": asr, "score": seed_score(clean, asr), "valid_acc": valid, "goodnet": goodnet}

    def valid_accuracy(self, model) -> float:
        """Clean accuracy on the selection's images (held-out once split)."""
        pixels, labels = self.selection_set
        return percent_equal(predict_labels(model, pixels, self.divisor), labels)

    def answers(self, model) -> dict:
        sets = {"clean": self.clean[0]} | {name: pixels for name, (pixels, _) in self.poisoned.items()}
        return {name: predict_labels(model, pixels, self.divisor) for name, pixels in sets.items()}

    def baseline(self) -> dict:
        """The BadNet's own CA, ASR, score and validation accuracy (before any defense), computed once. The
        validation accuracy (on the held-out images once split) is what the clean-accuracy floor of a
        selection is measured from; `holdout` says how many images it read."""
        if self.before is None:
            metrics = evaluate(self.bad, self.divisor, self.clean, self.poisoned).as_dict()
            self.before = metrics | {"valid_acc": self.valid_accuracy(self.bad)}
            if self.holdout is not None:
                self.before["holdout"] = dict(self.holdout)
        return self.before

    def remember(self, key: tuple, compute):
        """compute() once per key for this data (a Neural Cleanse scan that several jobs in one process
        share: a search's trials, a leaderboard's runs)."""
        if key not in self.memos:
            self.memos[key] = compute()
        return self.memos[key]

    def profile(self, layers: list[str]) -> dict:
        """The BadNet's activation profile on the repair's part of the validation set, once per layer choice."""
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


def run_job(
    kind: str,
    config: dict,
    loaded: Loaded,
    report_point: ReportPoint,
    should_stop=None,
    artifact_dir=None,
    on_stage: Callable[[str], None] | None = None,
):
    """Run a planned job of any kind, through the registry of defenses (defenses.methods). A config's
    `holdout` ({"share", "seed"}, added by the planner: defenses.methods.plan_space) splits the clean
    validation set first, so the job's kind sees only the repair's part as `loaded.valid`. `on_stage` hears
    what the job says it is doing between points (Loaded.on_stage)."""
    from defenses.methods import job_kind

    own = {name: value for name, value in config.items() if name != "holdout"}
    if "holdout" in config:
        loaded = loaded.split(float(config["holdout"]["share"]), int(config["holdout"]["seed"]))
    if on_stage is not None:  # a shallow copy: the caches (memos, profiles) stay shared
        loaded = replace(loaded, on_stage=on_stage)
    return job_kind(kind).run(loaded, own, report_point, should_stop, artifact_dir)
