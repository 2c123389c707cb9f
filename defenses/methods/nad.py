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

from dataclasses import dataclass

from defenses.methods import Method, Parameter, register
from defenses.methods.common import (
    EPOCHS,
    LEARNING_RATES,
    LR_EPOCH_CHARTS,
    SEED,
    by_learning_rate,
    epoch_job,
    lr_epoch_columns,
    resumable_settings,
    train_and_report,
)

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
    search=(100.0, 10000.0),
    log=True,
)
POWER = 2.0
TEACHER_CHECKPOINT = "checkpoint-teacher.npz"  # the teacher's own, beside the student's checkpoint.npz


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


def distillation_step(teacher, layers: list[str], weights: list[float], beta: float):
    """The shared loop's step for NAD's student (defenses.finetune.fine_tune): cross-entropy plus
    beta x weight_k x MSE(attention maps) against `teacher` at `layers`."""
    import keras
    import tensorflow as tf

    from defenses.finetune import correct_answers

    def with_features(model):
        return keras.Model(model.inputs, [model.outputs[0], *[model.get_layer(n).output for n in layers]])

    def make_step(student, optimizer):
        student_view, teacher_view = with_features(student), with_features(teacher)
        loss_fn = keras.losses.SparseCategoricalCrossentropy()
        variables = student.trainable_variables

        @tf.function(reduce_retracing=True)
        def step(x, y, seed):
            taught = teacher_view(x, training=False)[1:]
            with tf.GradientTape() as tape:
                out, *features = student_view(x, training=True)
                loss = loss_fn(y, out)
                for weight, mine, theirs in zip(weights, features, taught, strict=True):
                    loss += beta * weight * tf.reduce_mean(tf.square(attention(mine) - attention(theirs)))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            return loss, correct_answers(out, y)

        return step

    return make_step


def run_nad(loaded, config: dict, report_point, should_stop=None, artifact_dir=None):
    """The teacher (plain fine-tuning), then the student's distillation, both in the shared loop with a
    checkpoint each; reports the BadNet at position 0 and every student epoch; saves the student. A second
    delivery restores the finished teacher from its checkpoint instead of training it again."""
    from defenses.finetune import fine_tune, seed_everything
    from defenses.runner import fresh_copy

    job = NADConfig(**config)
    seed_everything(int(job.seed))
    teacher = fresh_copy(loaded.bad)
    lr, seed = float(job.lr), int(job.seed)
    schooling = resumable_settings(lr, int(job.teacher_epochs), seed, artifact_dir, TEACHER_CHECKPOINT)
    fine_tune(teacher, loaded.valid, loaded.divisor, schooling, should_stop=should_stop)
    student = fresh_copy(loaded.bad)
    layers, weights = attention_layers(student, list(loaded.report.conv_layers))
    settings = resumable_settings(lr, int(job.epochs), seed, artifact_dir)
    step = distillation_step(teacher, layers, weights, float(job.beta))
    return train_and_report(loaded, student, settings, report_point, should_stop, artifact_dir, make_step=step)


def describe(config: dict) -> str:
    return (
        f"NAD: teacher {config['teacher_epochs']} epochs, then {config['epochs']} epochs of attention "
        f"distillation (beta {config['beta']:g}) at LR {config['lr']:g} (seed {config.get('seed', 0)})"
    )


def epoch_units(config: dict) -> int:
    """The teacher's epochs, then two passes a student epoch (the student's and the teacher's maps)."""
    return int(config["teacher_epochs"]) + 2 * int(config["epochs"])


NAD_JOB = epoch_job("nad", run_nad, describe, "distillation epoch (0: the BadNet)", units=epoch_units)
NAD = register(
    Method(
        name="nad",
        title="NAD",
        paper="Li, Lyu, Koren, Lyu, Li and Ma, Neural Attention Distillation, ICLR 2021",
        summary="fine-tuning guided by a fine-tuned teacher's attention maps",
        parameters=(LEARNING_RATES, EPOCHS, TEACHER_EPOCHS, BETA, SEED),
        columns=lr_epoch_columns("distillation epochs"),
        plan=by_learning_rate("nad", TEACHER_EPOCHS, BETA),
        charts=LR_EPOCH_CHARTS,
        jobs=(NAD_JOB,),
        sweep={"learning_rates": [0.001, 0.002], "epochs": [10], "teacher_epochs": 5},
        deviations="Adam for teacher and student (the paper: SGD with momentum and a decayed lr); the clean "
        "validation set is the defender's data; the last three conv layers carry the attention loss.",
    )
)
