"""One planned job run end to end: load the BadNet and the datasets, prune, fine-tune, measure, and hand
every result point to a callback (the CLI prints it, a worker stores it)."""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from defenses.data import DatasetLimits, inspect_dataset, load_dataset
from defenses.finetune import FineTuneSettings, fine_tune, save_atomically, seed_everything
from defenses.metrics import LabelledSet, evaluate, percent_equal, predict_labels
from defenses.modelcheck import Limits
from defenses.models import ModelReport, load_model
from defenses.pruning import (
    activation_profile,
    apply_masks,
    incremental_prune,
    pruned_counts,
    threshold_curve,
    threshold_masks,
)

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

    def read(path: Path) -> LabelledSet:
        return load_dataset(inspect_dataset(path, report.input_shape, report.n_classes, inputs.dataset_limits))

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


def run_finetune(loaded: Loaded, config: dict, report_point: ReportPoint, should_stop=None, artifact_dir=None):
    """Threshold pruning then fine-tuning; reports position 0 (pruned, not trained) and every epoch.
    Returns the repaired model; saves it to artifact_dir/repaired_net.keras when given."""
    seed_everything(int(config.get("seed", 0)))
    layers = list(config.get("layers") or loaded.report.conv_layers)
    repaired = fresh_copy(loaded.bad)
    masks = threshold_masks(loaded.profile(layers), float(config["threshold"]), layers)
    apply_masks(repaired, masks)
    pruned = pruned_counts(masks)

    def valid_acc() -> float:  # every point carries it: selections are made on validation data only
        return percent_equal(predict_labels(repaired, loaded.valid[0], loaded.divisor), loaded.valid[1])

    metrics = evaluate(repaired, loaded.divisor, loaded.clean, loaded.poisoned).as_dict()
    report_point(0, metrics | {"valid_acc": valid_acc(), "pruned": pruned, "epoch": 0, "before": loaded.baseline()})
    settings = FineTuneSettings(learning_rate=float(config["lr"]), epochs=int(config["epochs"]))
    if settings.epochs:
        fine_tune(
            repaired,
            loaded.valid,
            loaded.divisor,
            settings,
            evaluate_epoch=lambda model: evaluate(model, loaded.divisor, loaded.clean, loaded.poisoned),
            on_epoch=lambda record: report_point(
                record.epoch, record.as_dict() | {"pruned": pruned, "valid_acc": valid_acc()}
            ),
            should_stop=should_stop,
        )
    if artifact_dir:
        save_atomically(repaired, Path(artifact_dir) / "repaired_net.keras")
    return repaired


def run_prune_curve(loaded: Loaded, config: dict, report_point: ReportPoint) -> None:
    """Prune-only CA and ASR for each threshold, from cached activations (no training)."""
    layers = list(config.get("layers") or loaded.report.conv_layers)
    profile, thresholds = loaded.profile(layers), list(config["thresholds"])
    points = threshold_curve(
        loaded.bad, loaded.divisor, profile, thresholds, loaded.valid, loaded.clean, loaded.poisoned, layers
    )
    for position, point in enumerate(points):
        report_point(position, curve_point_dict(point) | ({"before": loaded.baseline()} if position == 0 else {}))


def run_incremental(loaded: Loaded, config: dict, report_point: ReportPoint) -> int:
    """Liu et al.'s incremental pruning; reports every step and returns where the validation rule stopped."""
    profile = loaded.profile(list(loaded.report.conv_layers))
    result = incremental_prune(
        loaded.bad,
        loaded.divisor,
        profile,
        loaded.valid,
        float(config["max_drop"]),
        config.get("layer"),
        loaded.clean,
        loaded.poisoned,
    )
    for position, step in enumerate(result.steps):
        report_point(position, curve_point_dict(step) | {"stop": position == result.stop})
    return result.stop


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
    """Run a planner Job of any kind (see defenses.planner)."""
    if kind == "finetune":
        return run_finetune(loaded, config, report_point, should_stop, artifact_dir)
    if kind == "prune-curve":
        return run_prune_curve(loaded, config, report_point)
    if kind == "incremental":
        return run_incremental(loaded, config, report_point)
    raise ValueError(f"unknown job kind {kind!r}")
