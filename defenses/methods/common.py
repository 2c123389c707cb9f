"""What several defenses share: the parameters that mean one thing everywhere (T, LR, epochs, layers, seed),
planning one training job per learning rate, and `train_and_report`, the one way a training defense reports
its network before training and after every epoch of the shared loop (defenses.finetune), then saves it;
and the planner, job kind and columns of the defenses that train one job per learning rate. This module
registers no defense."""

from pathlib import Path

from defenses.finetune import CHECKPOINT, FineTuneSettings, checkpoint_epoch, cross_entropy_step
from defenses.jobs import Job, Plan
from defenses.methods import LAYERS, Column, JobKind, Parameter, Versus, values

THRESHOLDS = Parameter(
    "thresholds",
    "Thresholds T",
    float,
    (1.0,),
    0.0,
    2.0,
    help="values or a range start:stop:step; T times the layer's mean activation",
    noun="threshold",
    search=(0.0, 1.5),
)
LEARNING_RATES = Parameter(
    "learning_rates",
    "Learning rates",
    float,
    (0.001,),
    0.0,
    1.0,
    low_open=True,
    noun="learning rate",
    search=(1e-4, 1e-2),
    log=True,
)
EPOCHS = Parameter("epochs", "Epochs", int, (10,), 0, 500, noun="epoch count")
PRUNED_LAYERS = Parameter(
    "layers", "Layers", LAYERS, (), axis=False, help="conv layers to prune, comma separated; empty: all"
)
SEED = Parameter("seed", "Seed", int, 0, 0, 2**32 - 1, axis=False)


def layers_text(layers) -> str:
    return ", ".join(layers or []) or "every conv layer"


def plan_per_learning_rate(kind: str, space: dict, fixed: dict) -> Plan:
    """One `kind` job per learning rate of `space`, trained to its largest epoch count, so every epoch value
    is one of its positions; `fixed` is the rest of each job's config."""
    points = sorted({(lr, e) for lr in values(space, LEARNING_RATES) for e in values(space, EPOCHS)})
    longest: dict[float, int] = {}
    for lr, e in points:
        longest[lr] = max(longest.get(lr, 0), e)
    jobs = [Job(kind, {"lr": lr, "epochs": e, **fixed}) for lr, e in sorted(longest.items())]
    index = {job.config["lr"]: number for number, job in enumerate(jobs)}
    return Plan(jobs, {(lr, e): (index[lr], e) for lr, e in points})


def resumable_settings(lr: float, epochs: int, seed: int, artifact_dir, name: str = CHECKPOINT) -> FineTuneSettings:
    """Training settings whose checkpoint lives in the run's folder (none without a folder)."""
    checkpoint = Path(artifact_dir) / name if artifact_dir else None
    return FineTuneSettings(learning_rate=lr, epochs=epochs, seed=seed, checkpoint=checkpoint)


def train_and_report(
    loaded,
    network,
    settings: FineTuneSettings,
    report_point,
    should_stop=None,
    artifact_dir=None,
    train=None,
    make_step=cross_entropy_step,
    state=(),
    every_point: dict | None = None,
    first_point: dict | None = None,
):
    """The body of every training defense's job: report position 0 (the network before training, with the
    BadNet's own figures and `first_point`) unless this run's checkpoint says it did so on an earlier delivery,
    train `network` in place with the shared loop on `train` (default: the repair's part of the clean
    validation set) one `make_step` a batch, report every epoch (its record and its measurement on the test
    sets and the held-out images), and save the network to artifact_dir/repaired_net.keras. `every_point` is
    added to every point (the pruned channels)."""
    from defenses.finetune import fine_tune, save_atomically

    every = every_point or {}
    if not checkpoint_epoch(settings.checkpoint):
        first = {"epoch": 0, "before": loaded.baseline()} | (first_point or {})
        report_point(0, loaded.measure(network) | every | first)

    def on_epoch(record) -> None:
        report_point(record.epoch, record.as_dict() | loaded.measure(network) | every)

    if settings.epochs:
        data = loaded.valid if train is None else train
        fine_tune(network, data, loaded.divisor, settings, make_step, state, on_epoch=on_epoch, should_stop=should_stop)
    if artifact_dir:
        save_atomically(network, Path(artifact_dir) / "repaired_net.keras")
    return network


def by_learning_rate(kind: str, *fixed: Parameter):
    """The planner of a defense that trains one `kind` job per learning rate (NAD, unlearning, FST, SAU, I-BAU):
    each of `fixed` takes its one value in the space (its type's), and the space's seed."""

    def plan(space: dict) -> Plan:
        own = {p.name: p.kind(values(space, p)[0]) for p in fixed}
        return plan_per_learning_rate(kind, space, own | {"seed": int(space.get("seed", 0))})

    return plan


def epoch_job(name: str, run, describe, x_label: str, units=None) -> JobKind:
    """A job kind that trains epoch by epoch in the shared loop and stores every epoch (position = epoch; 0 is
    the network before training; `x_label` names them on the run's page), serving every shorter request
    (epoch_prefix); its cost is `units` (default: one unit an epoch)."""
    return JobKind(
        name,
        run,
        positions=lambda config, report: int(config["epochs"]) + 1,
        describe=describe,
        training_epochs=units or (lambda config: int(config["epochs"])),
        repairs=True,
        epoch_prefix=True,
        x=("epoch", x_label),
    )


def lr_epoch_columns(epochs: str = "fine-tuning epochs", short: str = "{} ep", heading: str = "Epochs") -> tuple:
    """The columns of a defense planned by learning rate: LR (log axis) and its epochs, as it names them."""
    return (
        Column("lr", "learning rate", "LR {:g}", log=True, heading="LR"),
        Column("epochs", epochs, short, heading=heading),
    )


LR_EPOCH_CHARTS = (Versus("epochs"), Versus("lr"))
