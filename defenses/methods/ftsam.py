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

from dataclasses import dataclass

from defenses.jobs import Job, Plan
from defenses.methods import Column, JobKind, Method, Parameter, Versus, register, values
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

RHO = Parameter(
    "rho",
    "SAM radius rho",
    float,
    2.0,
    0.0,
    10.0,
    axis=False,
    help="how far each step looks for the worst nearby weights (ASAM, scaled by each weight's size)",
    search=(0.5, 5.0),
    log=True,
)
LABEL_SMOOTHING = 0.1


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


def asam_step(rho: float):
    """The shared loop's step for FT-SAM (defenses.finetune.fine_tune): climb to w + e (asam_perturbation),
    take the gradient of the label-smoothed loss there, come back and let Adam step with it."""
    import keras
    import tensorflow as tf

    from defenses.finetune import correct_answers

    def make_step(model, optimizer):
        loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=LABEL_SMOOTHING)
        classes = int(model.outputs[0].shape[-1])
        weights = model.trainable_variables

        @tf.function(reduce_retracing=True)
        def step(x, y, seed):
            targets = tf.one_hot(y, classes)
            with tf.GradientTape() as tape:
                loss = loss_fn(targets, model(x, training=True))
            climbs = asam_perturbation(weights, tape.gradient(loss, weights), rho)
            for w, e in zip(weights, climbs, strict=True):
                w.assign_add(e)
            with tf.GradientTape() as tape:
                sharp = model(x, training=True)
                sharp_loss = loss_fn(targets, sharp)
            sharp_grads = tape.gradient(sharp_loss, weights)
            for w, e in zip(weights, climbs, strict=True):
                w.assign_sub(e)
            optimizer.apply_gradients(zip(sharp_grads, weights, strict=True))
            return sharp_loss, correct_answers(sharp, y)

        return step

    return make_step


def run_ftsam(loaded, config: dict, report_point, should_stop=None, artifact_dir=None):
    """Threshold pruning (T = 0: none), then FT-SAM in the shared loop; reports position 0 and every epoch;
    saves the network; a second delivery resumes after its last checkpointed epoch."""
    from defenses.finetune import seed_everything
    from defenses.pruning import apply_masks, pruned_counts, threshold_masks
    from defenses.runner import fresh_copy

    job = FTSAMConfig(**config)
    seed_everything(int(job.seed))
    layers = list(job.layers or loaded.report.conv_layers)
    repaired = fresh_copy(loaded.bad)
    masks = threshold_masks(loaded.profile(layers), float(job.threshold), layers)
    apply_masks(repaired, masks)
    settings = resumable_settings(float(job.lr), int(job.epochs), int(job.seed), artifact_dir)
    pruned = {"pruned": pruned_counts(masks)}
    step = asam_step(float(job.rho))
    return train_and_report(
        loaded, repaired, settings, report_point, should_stop, artifact_dir, make_step=step, every_point=pruned
    )


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
