"""NAD (Li, Lyu, Koren, Lyu, Li and Ma, "Neural Attention Distillation: Erasing Backdoor Triggers from Deep
Neural Networks", ICLR 2021): a teacher, the BadNet fine-tuned on the clean data for a few epochs, guides the
BadNet's own fine-tuning (the student) through attention maps: at each of the last three conv layers the map
A = sum over channels of |a|^p (p = 2), per image, divided by its L2 norm over the positions; the student's
loss is cross-entropy plus beta_k times the mean squared difference of its maps and the teacher's, with beta
for the top layers and beta / 2 for the lowest of the three (the authors' code: 500, 1000, 1000).

Deviations, said on the page: Adam for both teacher and student, as in every Prunelab fine-tuning (the paper:
SGD with momentum 0.9, lr 0.1 decayed, weight decay 1e-4); the clean validation set is the defender's data
(the paper: 5 % of the training set); networks with fewer than three conv layers use all they have.

Jobs: one `nad` job per (LR, teacher epochs, beta, seed) trains the teacher once and the student to the
largest epoch count asked for, and stores every student epoch (position = epoch; 0 is the BadNet itself).
"""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defenses.methods import Column, JobKind, Method, Parameter, Versus, register, values
from defenses.methods.fineprune import EPOCHS, LEARNING_RATES, SEED, plan_per_learning_rate
from defenses.planner import Plan

TEACHER_EPOCHS = Parameter(
    "teacher_epochs",
    "NAD: teacher epochs",
    int,
    10,
    1,
    200,
    axis=False,
    help="epochs of plain fine-tuning that make the teacher",
)
BETA = Parameter(
    "beta",
    "NAD: attention weight beta",
    float,
    1000.0,
    0.0,
    100000.0,
    axis=False,
    help="weight of the attention loss at the top two layers (half of it at the third)",
)
POWER = 2.0
BATCH = 32


@dataclass(frozen=True)
class NADConfig:
    lr: float
    epochs: int
    teacher_epochs: int
    beta: float
    seed: int = 0


def attention(features):
    """Per image, the sum over channels of |a|^p, flattened and divided by its L2 norm (the authors' code)."""
    import tensorflow as tf

    maps = tf.reduce_sum(tf.pow(tf.abs(features), POWER), axis=-1)  # channels-last
    maps = tf.reshape(maps, (tf.shape(maps)[0], -1))
    return maps / (tf.norm(maps, axis=1, keepdims=True) + 1e-6)


def attention_layers(model, conv_layers: list[str]) -> tuple[list[str], list[float]]:
    """The last three conv layers (fewer when the network has fewer) and their weights: beta / 2 for the lowest
    of three, beta for the others (as a fraction of beta)."""
    chosen = list(conv_layers[-3:])
    return chosen, ([0.5] + [1.0] * (len(chosen) - 1)) if len(chosen) == 3 else [1.0] * len(chosen)


def distil(
    student,
    teacher,
    train,
    divisor: float,
    layers: list[str],
    weights: list[float],
    lr: float,
    epochs: int,
    beta: float,
    on_epoch=None,
    should_stop=None,
):
    """Train `student` in place: cross-entropy plus beta x weight_k x MSE(attention maps) against `teacher`
    at `layers`, with Adam; `on_epoch(epoch, loss, train_acc, seconds)` after each epoch."""
    import keras
    import tensorflow as tf

    from defenses.data import scale_pixels
    from defenses.finetune import Cancelled

    def with_features(model):
        return keras.Model(model.inputs, [model.outputs[0], *[model.get_layer(n).output for n in layers]])

    student_view, teacher_view = with_features(student), with_features(teacher)
    inputs, labels = scale_pixels(train[0], divisor), np.asarray(train[1])
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    optimizer = keras.optimizers.Adam(learning_rate=lr)
    variables = student.trainable_variables

    @tf.function
    def step(x, y):
        taught = teacher_view(x, training=False)[1:]
        with tf.GradientTape() as tape:
            out, *features = student_view(x, training=True)
            loss = loss_fn(y, out)
            for weight, mine, theirs in zip(weights, features, taught, strict=True):
                loss += beta * weight * tf.reduce_mean(tf.square(attention(mine) - attention(theirs)))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(out, 1, output_type=tf.int64), y), tf.float32))
        return loss, correct

    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        order = np.random.permutation(len(inputs))  # seeded by seed_everything
        total, right = 0.0, 0.0
        for batch, start in enumerate(range(0, len(order), BATCH)):
            index = order[start : start + BATCH]
            loss, correct = step(tf.constant(inputs[index]), tf.constant(labels[index], dtype=tf.int64))
            total, right = total + float(loss) * len(index), right + float(correct)
            if should_stop is not None and batch % 20 == 0 and should_stop():
                raise Cancelled(f"cancelled during epoch {epoch}")
        if on_epoch:
            on_epoch(epoch, total / len(order), 100.0 * right / len(order), time.perf_counter() - started)


def run_nad(loaded, config: dict, report_point, should_stop=None, artifact_dir=None):
    """The teacher (plain fine-tuning), then the student's distillation; reports the BadNet at position 0
    and every student epoch; saves the student."""
    from defenses.finetune import FineTuneSettings, fine_tune, save_atomically, seed_everything
    from defenses.runner import fresh_copy

    job = NADConfig(**config)
    seed_everything(int(job.seed))
    teacher = fresh_copy(loaded.bad)
    fine_tune(
        teacher,
        loaded.valid,
        loaded.divisor,
        FineTuneSettings(float(job.lr), int(job.teacher_epochs), seed=int(job.seed)),
        should_stop=should_stop,
    )
    student = fresh_copy(loaded.bad)
    layers, weights = attention_layers(student, list(loaded.report.conv_layers))

    def measured() -> dict:
        return loaded.measure(student)

    report_point(0, measured() | {"epoch": 0, "before": loaded.baseline()})

    def on_epoch(epoch: int, loss: float, train_acc: float, seconds: float) -> None:
        report_point(epoch, measured() | {"epoch": epoch, "loss": loss, "train_acc": train_acc, "seconds": seconds})

    distil(
        student,
        teacher,
        loaded.valid,
        loaded.divisor,
        layers,
        weights,
        float(job.lr),
        int(job.epochs),
        float(job.beta),
        on_epoch,
        should_stop,
    )
    if artifact_dir:
        save_atomically(student, Path(artifact_dir) / "repaired_net.keras")
    return student


def describe(config: dict) -> str:
    return (
        f"NAD: teacher {config['teacher_epochs']} epochs, then {config['epochs']} epochs of attention "
        f"distillation (beta {config['beta']:g}) at LR {config['lr']:g} (seed {config.get('seed', 0)})"
    )


def plan_nad(space: dict) -> Plan:
    """One job per LR, trained to the largest epoch count; every epoch value is one of its positions."""
    fixed = {
        "teacher_epochs": int(values(space, TEACHER_EPOCHS)[0]),
        "beta": float(values(space, BETA)[0]),
        "seed": int(space.get("seed", 0)),
    }
    return plan_per_learning_rate("nad", space, fixed)


NAD_JOB = JobKind(
    "nad",
    run_nad,
    positions=lambda config, report: int(config["epochs"]) + 1,
    describe=describe,
    training_epochs=lambda config: int(config["teacher_epochs"]) + 2 * int(config["epochs"]),  # the teacher's pass too
    repairs=True,
    epoch_prefix=True,
    x=("epoch", "distillation epoch (0: the BadNet)"),
)
NAD = register(
    Method(
        name="nad",
        title="NAD",
        paper="Li, Lyu, Koren, Lyu, Li and Ma, Neural Attention Distillation, ICLR 2021",
        summary="fine-tuning guided by a fine-tuned teacher's attention maps",
        parameters=(LEARNING_RATES, EPOCHS, TEACHER_EPOCHS, BETA, SEED),
        columns=(
            Column("lr", "learning rate", "LR {:g}", log=True, heading="LR"),
            Column("epochs", "distillation epochs", "{} ep", heading="Epochs"),
        ),
        plan=plan_nad,
        charts=(Versus("epochs"), Versus("lr")),
        jobs=(NAD_JOB,),
        sweep={"learning_rates": [0.001, 0.002], "epochs": [10], "teacher_epochs": 5},
        deviations="Adam for teacher and student (the paper: SGD with momentum and a decayed lr); the clean "
        "validation set is the defender's data; the last three conv layers carry the attention loss.",
    )
)
