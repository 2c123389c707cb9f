"""FT-SAM (Zhu, Wei, Shen, Fan and Wu, "Enhancing Fine-Tuning Based Backdoor Defense with Sharpness-Aware
Minimization", ICCV 2023): fine-tune on clean data with adaptive sharpness-aware minimization. Each step first
climbs to the worst weights near the current ones, w + e with e = rho * w^2 * g / ||w * g|| (ASAM's
element-wise scaling: large weights, which backdoor neurons tend to have, move most), takes the gradient
there, comes back and lets the base optimizer step with it; the loss is cross-entropy with label smoothing
0.1. Usable after the threshold pruning of Fine-Pruning (T > 0); pruned channels stay zero (their weights are
zero, so their perturbation is too, and the masks' constraints hold through every step).

Deviations, said on the page: the base optimizer is Adam, as in every Prunelab fine-tuning (the paper and
BackdoorBench use SGD with momentum 0.9, weight decay 5e-4 and a cosine schedule, lr 0.01, 100 epochs), and
rho is constant (BackdoorBench schedules it between rho_min and rho_max, both 2 by default). The defender's
data is the clean validation set (the paper: 5 % of the training set).

Jobs: one `ft-sam` job per (T, LR, rho, layers, seed) trains to the largest epoch count asked for and stores
every epoch (position = epoch; 0 is pruned, not yet trained), like fine-pruning's.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defenses.methods import Column, JobKind, Method, Parameter, Versus, register, values
from defenses.methods.fineprune import EPOCHS, LEARNING_RATES, PRUNED_LAYERS, SEED, THRESHOLDS, layers_text
from defenses.planner import Job, Plan

RHO = Parameter(
    "rho",
    "SAM radius rho",
    float,
    2.0,
    0.0,
    10.0,
    axis=False,
    help="how far each step looks for the worst nearby weights (ASAM, scaled by each weight's size)",
)
LABEL_SMOOTHING = 0.1
BATCH = 32


@dataclass(frozen=True)
class FTSAMConfig:
    threshold: float
    lr: float
    epochs: int
    rho: float
    layers: list
    seed: int = 0


def asam_perturbation(weights, grads, rho: float) -> list:
    """ASAM's climb for each weight tensor: e = rho * w^2 * g / ||w * g|| (the norm over every tensor at once),
    so that ||e / w|| = rho wherever w is not 0, and a weight at 0 (a pruned channel's) does not move."""
    import tensorflow as tf

    scaled = tf.linalg.global_norm([w * g for w, g in zip(weights, grads, strict=True)])
    return [rho / (scaled + 1e-12) * tf.square(w) * g for w, g in zip(weights, grads, strict=True)]


def sam_fine_tune(model, train, divisor: float, lr: float, epochs: int, rho: float, on_epoch=None, should_stop=None):
    """Train `model` in place with ASAM around Adam for `epochs` epochs on `train` (pixels 0..255, labels);
    `on_epoch(epoch, loss, train_acc, seconds)` after each. Masks applied with pruning.apply_masks stay
    applied (Keras' optimizer applies the weights' constraints after every step)."""
    import keras
    import tensorflow as tf

    from defenses.data import scale_pixels
    from defenses.finetune import Cancelled

    inputs = scale_pixels(train[0], divisor)
    n_classes = int(model.outputs[0].shape[-1])
    targets = keras.utils.to_categorical(np.asarray(train[1]), n_classes).astype("float32")
    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=LABEL_SMOOTHING)
    optimizer = keras.optimizers.Adam(learning_rate=lr)
    weights = model.trainable_variables

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        climbs = asam_perturbation(weights, tape.gradient(loss, weights), rho)
        for w, e in zip(weights, climbs, strict=True):
            w.assign_add(e)
        with tf.GradientTape() as tape:
            sharp = model(x, training=True)
            sharp_loss = loss_fn(y, sharp)
        sharp_grads = tape.gradient(sharp_loss, weights)
        for w, e in zip(weights, climbs, strict=True):
            w.assign_sub(e)
        optimizer.apply_gradients(zip(sharp_grads, weights, strict=True))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(sharp, 1), tf.argmax(y, 1)), tf.float32))
        return sharp_loss, correct

    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        order = np.random.permutation(len(inputs))  # seeded by seed_everything, as Keras' own shuffling
        total, right = 0.0, 0.0
        for batch, start in enumerate(range(0, len(order), BATCH)):
            index = order[start : start + BATCH]
            loss, correct = step(tf.constant(inputs[index]), tf.constant(targets[index]))
            total += float(loss) * len(index)
            right += float(correct)
            if should_stop is not None and batch % 20 == 0 and should_stop():
                raise Cancelled(f"cancelled during epoch {epoch}")
        if on_epoch:
            on_epoch(epoch, total / len(order), 100.0 * right / len(order), time.perf_counter() - started)
    return model


def run_ftsam(loaded, config: dict, report_point, should_stop=None, artifact_dir=None):
    """Threshold pruning (T = 0: none), then FT-SAM; reports position 0 and every epoch; saves the network."""
    from defenses.finetune import save_atomically, seed_everything
    from defenses.pruning import apply_masks, pruned_counts, threshold_masks
    from defenses.runner import fresh_copy

    job = FTSAMConfig(**config)
    seed_everything(int(job.seed))
    layers = list(job.layers or loaded.report.conv_layers)
    repaired = fresh_copy(loaded.bad)
    masks = threshold_masks(loaded.profile(layers), float(job.threshold), layers)
    apply_masks(repaired, masks)
    pruned = pruned_counts(masks)

    def measured() -> dict:
        return loaded.measure(repaired) | {"pruned": pruned}

    report_point(0, measured() | {"epoch": 0, "before": loaded.baseline()})

    def on_epoch(epoch: int, loss: float, train_acc: float, seconds: float) -> None:
        report_point(epoch, measured() | {"epoch": epoch, "loss": loss, "train_acc": train_acc, "seconds": seconds})

    sam_fine_tune(
        repaired, loaded.valid, loaded.divisor, float(job.lr), int(job.epochs), float(job.rho), on_epoch, should_stop
    )
    if artifact_dir:
        save_atomically(repaired, Path(artifact_dir) / "repaired_net.keras")
    return repaired


def describe(config: dict) -> str:
    pruning = (
        f"prune T {config['threshold']:g} on {layers_text(config.get('layers'))}, then " if config["threshold"] else ""
    )
    return (
        f"{pruning}FT-SAM {config['epochs']} epochs at LR {config['lr']:g}, rho {config['rho']:g} "
        f"(seed {config.get('seed', 0)})"
    )


def plan_ftsam(space: dict) -> Plan:
    """One job per (T, LR) trained to the largest epoch count; every epoch value is one of its positions."""
    rho = float(values(space, RHO)[0])
    layers, seed = list(space.get("layers") or []), int(space.get("seed", 0))
    longest: dict[tuple, int] = {}
    points = sorted(
        {
            (t, lr, e)
            for t in values(space, THRESHOLDS)
            for lr in values(space, LEARNING_RATES)
            for e in values(space, EPOCHS)
        }
    )
    for t, lr, e in points:
        longest[(t, lr)] = max(longest.get((t, lr), 0), e)
    jobs = [
        Job("ft-sam", {"threshold": t, "lr": lr, "epochs": e, "rho": rho, "layers": layers, "seed": seed})
        for (t, lr), e in sorted(longest.items())
    ]
    index = {(job.config["threshold"], job.config["lr"]): number for number, job in enumerate(jobs)}
    return Plan(jobs, {(t, lr, e): (index[(t, lr)], e) for t, lr, e in points})


FTSAM_JOB = JobKind(
    "ft-sam",
    run_ftsam,
    positions=lambda config, report: int(config["epochs"]) + 1,
    describe=describe,
    training_epochs=lambda config: 2 * int(config["epochs"]),  # two forward and backward passes a step
    repairs=True,
    epoch_prefix=True,
    x=("epoch", "fine-tuning epoch (0: pruned, not yet trained)"),
)
FTSAM = register(
    Method(
        name="ft-sam",
        title="FT-SAM",
        paper="Zhu, Wei, Shen, Fan and Wu, Enhancing Fine-Tuning Based Backdoor Defense with Sharpness-Aware "
        "Minimization, ICCV 2023",
        summary="fine-tuning with adaptive sharpness-aware minimization (optionally after pruning)",
        parameters=(THRESHOLDS, LEARNING_RATES, EPOCHS, RHO, PRUNED_LAYERS, SEED),
        columns=(
            Column("threshold", "pruning threshold T", "T {}", heading="T"),
            Column("lr", "learning rate", "LR {:g}", log=True, heading="LR"),
            Column("epochs", "fine-tuning epochs", "{} ep", heading="Epochs"),
        ),
        plan=plan_ftsam,
        charts=(Versus("epochs"), Versus("lr"), Versus("threshold")),
        jobs=(FTSAM_JOB,),
        defaults={"thresholds": (0.0,)},  # FT-SAM alone; a T > 0 prunes first
        sweep={"thresholds": [0.0], "learning_rates": [0.001], "epochs": [10]},
        deviations="Adam as the base optimizer (the paper: SGD with momentum, weight decay and a cosine "
        "schedule) and a constant rho; the clean validation set is the defender's data.",
    )
)
