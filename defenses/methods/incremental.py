"""Incremental pruning (Liu, Dolan-Gavitt and Garg, "Fine-Pruning: Defending Against Backdooring Attacks on Deep
Neural Networks", RAID 2018, their pruning defense): the last conv layer's channels are pruned one at a time in
increasing order of mean activation on clean validation data, until validation accuracy has dropped by more
than X points. One job stores every step (position = channels pruned) and marks where the rule stopped; the
result is its curve, not a grid.
"""

from dataclasses import dataclass

from defenses.jobs import Job, Plan
from defenses.methods import LAYERS, Column, JobKind, Method, Parameter, Steps, register, values

LAYER = Parameter("layers", "Layers", LAYERS, (), axis=False, help="conv layers to prune, comma separated; empty: all")
MAX_DROP = Parameter(
    "max_drop",
    "Incremental: max accuracy drop",
    float,
    4.0,
    0.1,
    100.0,
    axis=False,
    help="points of validation accuracy the pruning may lose before it stops",
)


@dataclass(frozen=True)
class IncrementalConfig:
    layer: str | None
    max_drop: float


def run_incremental(loaded, config: dict, report_point, should_stop=None, artifact_dir=None) -> int:
    """Every step of the curve; returns where the validation rule stopped."""
    from defenses.pruning import incremental_prune
    from defenses.runner import curve_point_dict

    job = IncrementalConfig(**config)
    profile = loaded.profile(list(loaded.report.conv_layers))
    result = incremental_prune(
        loaded.bad,
        loaded.divisor,
        profile,
        loaded.selection_set,  # the stop rule reads held-out images
        float(job.max_drop),
        job.layer,
        loaded.clean,
        loaded.poisoned,
    )
    for position, step in enumerate(result.steps):
        report_point(position, curve_point_dict(step) | {"stop": position == result.stop})
    return result.stop


def positions(config: dict, report: dict) -> int:
    channels = dict(zip(report["conv_layers"], report["conv_channels"], strict=True))
    return channels[config.get("layer") or report["conv_layers"][-1]] + 1


def describe(config: dict) -> str:
    layer = config.get("layer") or "the last conv layer"
    return f"incremental pruning of {layer}, stop at a validation drop over {config['max_drop']:g} points"


def plan_incremental(space: dict) -> Plan:
    layers = tuple(space.get("layers") or ())
    job = Job("incremental", {"layer": layers[-1] if layers else None, "max_drop": float(values(space, MAX_DROP)[0])})
    return Plan([job], {(0.0, 0.0, 0): (0, 0)})


INCREMENTAL_JOB = JobKind(
    "incremental",
    run_incremental,
    positions=positions,
    describe=describe,
    x=("fraction", "fraction of channels pruned"),
)
INCREMENTAL = register(
    Method(
        name="incremental",
        title="Incremental pruning",
        paper="Liu, Dolan-Gavitt and Garg, Fine-Pruning, RAID 2018 (their pruning defense)",
        summary="prune the last conv layer's channels one by one until validation accuracy drops X points",
        parameters=(LAYER, MAX_DROP),
        columns=(
            Column("threshold", "pruning threshold T", "T {}", heading="T"),
            Column("lr", "learning rate", "LR {:g}", log=True, heading="LR"),
            Column("epochs", "fine-tuning epochs", "{} ep", heading="Epochs"),
        ),
        plan=plan_incremental,
        charts=(
            Steps(
                "fraction", "fraction of channels pruned", "Incremental pruning of the last conv layer", "incremental"
            ),
        ),
        jobs=(INCREMENTAL_JOB,),
        sweep={"max_drop": 4.0},
        steps=True,
    )
)
