"""Fine-Pruning (Liu, Dolan-Gavitt and Garg, "Fine-Pruning: Defending Against Backdooring Attacks on Deep
Neural Networks", RAID 2018), with the seed report's threshold rule: in each pruned conv layer, a channel whose
mean activation on clean validation data is below T times the layer's mean is pruned, then the network is
fine-tuned on the clean validation set. Fine-tune only is T = 0; prune only is 0 epochs.

Deviation from the paper, said on the page: the paper prunes the last conv layer in increasing order of
activation until validation accuracy drops (that is `incremental`); the seed report's threshold rule prunes
every conv layer at once.

Jobs: one `finetune` job per (T, LR, layers, seed) trains to the largest epoch count asked for and stores every
epoch (position = epoch; 0 is pruned, not yet trained), so it serves every epoch value; every epochs = 0 point
comes from one `prune-curve` job on cached activations (position = index of T), without training.
"""

from dataclasses import dataclass

from defenses.jobs import Plan
from defenses.methods import Baseline, Column, Grid, JobKind, Method, Versus, register, values
from defenses.methods.common import (
    EPOCHS,
    LEARNING_RATES,
    PRUNED_LAYERS,
    SEED,
    THRESHOLDS,
    layers_text,
    resumable_settings,
    train_and_report,
)
from defenses.planner import ParameterSpace, plan

COLUMNS = (
    Column("threshold", "pruning threshold T", "T {}", heading="T"),
    Column("lr", "learning rate", "LR {:g}", log=True, heading="LR"),
    Column("epochs", "fine-tuning epochs", "{} ep", heading="Epochs"),
)
CHARTS = (
    Versus("threshold"),
    Versus("lr"),
    Versus("epochs"),
    Grid("lr", "threshold"),
    Baseline(
        "threshold", 0.0, "Fine-tuning with and without pruning", "pruning-vs-none", "fine-tune only", "fine-prune T {}"
    ),
)


@dataclass(frozen=True)
class FineTuneConfig:
    threshold: float
    lr: float
    epochs: int
    layers: list
    seed: int = 0


@dataclass(frozen=True)
class PruneCurveConfig:
    thresholds: list
    layers: list


def run_finetune(loaded, config: dict, report_point, should_stop=None, artifact_dir=None):
    """Threshold pruning then fine-tuning; reports position 0 (pruned, not trained) and every epoch.
    Returns the repaired model; saves it to artifact_dir/repaired_net.keras when given. With artifact_dir, a
    second delivery of the run continues after its last checkpointed epoch (defenses.finetune)."""
    from defenses.finetune import seed_everything
    from defenses.pruning import apply_masks, pruned_counts, threshold_masks
    from defenses.runner import fresh_copy

    job = FineTuneConfig(**config)
    seed_everything(int(job.seed))
    layers = list(job.layers or loaded.report.conv_layers)
    repaired = fresh_copy(loaded.bad)
    masks = threshold_masks(loaded.profile(layers), float(job.threshold), layers)
    apply_masks(repaired, masks)
    settings = resumable_settings(float(job.lr), int(job.epochs), int(job.seed), artifact_dir)
    pruned = {"pruned": pruned_counts(masks)}  # on every point: selections and pages read it
    return train_and_report(loaded, repaired, settings, report_point, should_stop, artifact_dir, every_point=pruned)


def run_prune_curve(loaded, config: dict, report_point, should_stop=None, artifact_dir=None) -> None:
    """Prune-only CA and ASR for each threshold, from cached activations (no training)."""
    from defenses.pruning import threshold_curve
    from defenses.runner import curve_point_dict

    job = PruneCurveConfig(**config)
    layers = list(job.layers or loaded.report.conv_layers)
    profile, thresholds = loaded.profile(layers), list(job.thresholds)
    held_out = loaded.selection_set  # the curve's validation accuracy: for selection alone
    points = threshold_curve(
        loaded.bad, loaded.divisor, profile, thresholds, held_out, loaded.clean, loaded.poisoned, layers
    )
    for position, point in enumerate(points):
        report_point(position, curve_point_dict(point) | ({"before": loaded.baseline()} if position == 0 else {}))


def describe_finetune(config: dict) -> str:
    pruning = f"prune T {config['threshold']:g} on {layers_text(config.get('layers'))}" if config["threshold"] else ""
    training = f"fine-tune {config['epochs']} epochs at LR {config['lr']:g} (seed {config.get('seed', 0)})"
    return f"{pruning}, then {training}" if pruning else f"no pruning, then {training}"


def describe_prune_curve(config: dict) -> str:
    thresholds = config.get("thresholds") or []
    shown = ", ".join(f"{t:g}" for t in thresholds[:8]) + (", ..." if len(thresholds) > 8 else "")
    plural = "s" if len(thresholds) != 1 else ""
    return f"prune only, {len(thresholds)} threshold{plural} ({shown}) on {layers_text(config.get('layers'))}"


FINETUNE = JobKind(
    "finetune",
    run_finetune,
    positions=lambda config, report: int(config["epochs"]) + 1,
    describe=describe_finetune,
    training_epochs=lambda config: int(config.get("epochs", 0)),
    repairs=True,
    epoch_prefix=True,
    x=("epoch", "fine-tuning epoch (0: pruned, not yet trained)"),
)
PRUNE_CURVE = JobKind(
    "prune-curve",
    run_prune_curve,
    positions=lambda config, report: len(config["thresholds"]),
    describe=describe_prune_curve,
    x=("threshold", "pruning threshold T"),
)


def parameter_space(space: dict) -> ParameterSpace:
    """The planner's space for one of the three variants (the defense fixes T, or epochs and LR)."""
    return ParameterSpace(
        defense=space.get("defense", "fine-prune"),
        thresholds=values(space, THRESHOLDS),
        learning_rates=values(space, LEARNING_RATES),
        epochs=values(space, EPOCHS),
        layers=tuple(space.get("layers") or ()),
        seed=int(space.get("seed", 0)),
    )


def plan_variant(space: dict) -> Plan:
    return plan(parameter_space(space))


THRESHOLD_RULE = (
    "Threshold rule of the seed report (every conv layer at T times its mean activation), not the paper's "
    "incremental pruning of the last layer (that is the 'incremental' defense)."
)


def variant(name: str, title: str, summary: str, parameters: tuple, sweep: dict) -> Method:
    """A registered defense of this module; one that prunes says how its pruning departs from the paper."""
    return register(
        Method(
            name=name,
            title=title,
            paper="Liu, Dolan-Gavitt and Garg, Fine-Pruning, RAID 2018",
            summary=summary,
            parameters=parameters,
            columns=COLUMNS,
            plan=plan_variant,
            charts=CHARTS,
            jobs=(FINETUNE, PRUNE_CURVE),
            sweep=sweep,
            deviations=THRESHOLD_RULE if THRESHOLDS in parameters else "",
        )
    )


FINE_PRUNE = variant(
    "fine-prune",
    "Fine-pruning",
    "threshold pruning, then fine-tuning on the clean validation set",
    (THRESHOLDS, LEARNING_RATES, EPOCHS, PRUNED_LAYERS, SEED),
    {"thresholds": [0.8, 1.0, 1.2], "learning_rates": [0.001], "epochs": [10]},
)
FINE_TUNE = variant(
    "fine-tune",
    "Fine-tuning only",
    "fine-tuning on the clean validation set, no pruning (T = 0)",
    (LEARNING_RATES, EPOCHS, SEED),
    {"learning_rates": [0.001, 0.002], "epochs": [10]},
)
PRUNE_ONLY = variant(
    "prune-only",
    "Pruning only",
    "threshold pruning without training (0 epochs)",
    (THRESHOLDS, PRUNED_LAYERS),
    {"thresholds": [round(0.2 * step, 1) for step in range(11)]},
)
