"""SAU, shared adversarial unlearning (Wei, Zhang, Zhang, Li and Wu, "Shared Adversarial Unlearning: Backdoor
Mitigation by Unlearning Shared Adversarial Examples", NeurIPS 2023). Needs neither the trigger nor the target,
so it takes several backdoors at once. Each batch of clean images:

1. PGD finds a perturbation per image that fools the network being repaired and a frozen copy of the BadNet
   alike (the authors' loss: beta_1 x the negative cross-entropy of the images not yet fooled by each network,
   plus beta_2 x the Jensen-Shannon divergence of the two networks' answers on the images where they do not
   yet agree on a wrong class), from the corner of the box, steps of the budget's size.
2. The network is trained on the clean cross-entropy plus the shared adversarial loss: for the perturbed
   images the BadNet sends to a class that is neither the true one nor its answer on the clean image (a
   "potential poison"), -log(1 - p(that class)), summed and divided by the batch size.

A backdoor is a perturbation the BadNet obeys; unlearning what both networks obey removes the backdoor's hold
on the repaired network while the clean loss keeps its accuracy.

Deviations, said on the page: Adam without amsgrad (the authors: Adam with amsgrad, lr 1e-4, 100 rounds); the
budget is in pixel fractions (0..1) whatever the BadNet's input scaling; an L2 budget per image can be chosen
instead of L-infinity (a lipstick is a large local change, far from the box's corners); the defender's data is
the clean validation set (the authors: 5 % of the training set).

Cost: each epoch runs PGD's steps on two networks and the training step on two batches, counted as
3 + 2 x steps passes over the clean set in the fine-tuning-epoch units of the leaderboard.

Jobs: one `sau` job per (LR, budget, L2 or not, steps, seed) trains to the largest epoch count asked for and stores
every epoch (position = epoch; 0 is the BadNet itself).
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

BUDGET = Parameter(
    "sau_eps",
    "SAU: perturbation budget",
    float,
    0.2,
    0.0,
    50.0,
    low_open=True,
    axis=False,
    help="per image, in pixel fractions: the largest change of one pixel (L-infinity) or the L2 length",
    search=(0.05, 0.5),
    log=True,
)
L2 = Parameter(
    "sau_l2",
    "SAU: L2 budget (1) instead of L-infinity (0)",
    int,
    0,
    0,
    1,
    axis=False,
    help="0: every pixel changes by at most the budget; 1: the whole change has at most the budget's length",
)
STEPS = Parameter("sau_steps", "SAU: PGD steps", int, 5, 1, 20, axis=False, help="perturbation steps per batch")
BETA_ADVERSARIAL, BETA_SHARED = 0.01, 1.0  # the authors' beta_1, beta_2 of the PGD loss
SHARED_WEIGHT = 1.0  # the authors' lambda_3 (lambda_1 = 1 on the clean loss; lambda_2 = 0)


@dataclass(frozen=True)
class SAUConfig:
    lr: float
    epochs: int
    sau_eps: float
    sau_l2: int
    sau_steps: int
    seed: int = 0


def project(delta, budget: float, l2: int):
    """The nearest perturbation within the budget: clipped per pixel (L-infinity) or scaled per image (L2)."""
    import tensorflow as tf

    if not l2:
        return tf.clip_by_value(delta, -budget, budget)
    length = tf.norm(tf.reshape(delta, (tf.shape(delta)[0], -1)), axis=1)
    return delta * tf.reshape(tf.minimum(1.0, budget / (length + 1e-12)), (-1, 1, 1, 1))


def ascent_direction(gradient, l2: int):
    """PGD's step direction: the gradient's sign (L-infinity) or the gradient scaled to unit length per image."""
    import tensorflow as tf

    if not l2:
        return tf.sign(gradient)
    length = tf.norm(tf.reshape(gradient, (tf.shape(gradient)[0], -1)), axis=1)
    return gradient / tf.reshape(length + 1e-12, (-1, 1, 1, 1))


def js_divergence(p, q):
    """Jensen-Shannon divergence of two batches of distributions, one value per row (probabilities clamped at
    1e-8, as the authors do)."""
    import tensorflow as tf

    p, q = tf.maximum(p, 1e-8), tf.maximum(q, 1e-8)
    middle = (p + q) / 2
    return 0.5 * tf.reduce_sum(p * tf.math.log(p / middle), 1) + 0.5 * tf.reduce_sum(q * tf.math.log(q / middle), 1)


def shared_unlearning_loss(probabilities, bad_perturbed, bad_clean, labels):
    """The authors' L_shared: for the rows where the BadNet's answer on the perturbed image is neither the true
    label nor its answer on the clean image, -log(1 - p(that answer)), summed and divided by the batch size."""
    import tensorflow as tf

    answer = tf.argmax(bad_perturbed, 1, output_type=tf.int32)
    labels = tf.cast(labels, tf.int32)
    poison = tf.logical_and(tf.not_equal(answer, labels), tf.not_equal(answer, tf.argmax(bad_clean, 1, tf.int32)))
    p = tf.gather(probabilities, answer, batch_dims=1)
    terms = -tf.math.log(1.0 + 1e-6 - tf.minimum(p, 0.999))
    return tf.reduce_sum(tf.where(poison, terms, 0.0)) / tf.cast(tf.shape(labels)[0], tf.float32)


def shared_perturbation(model, bad, x, y, budget: float, l2: int, steps: int):
    """PGD towards perturbations both networks obey (the authors' Shared_PGD, step size = budget), in the
    networks' input units (the caller converts the budget)."""
    import tensorflow as tf

    ce = tf.keras.losses.sparse_categorical_crossentropy
    n = tf.cast(tf.shape(y)[0], tf.float32)
    mine_clean = tf.argmax(model(x, training=False), 1)
    bad_clean = tf.argmax(bad(x, training=False), 1)
    delta = project(tf.ones_like(x) * budget, budget, l2)  # "max" start: the box's corner
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(delta)
            mine, theirs = model(x + delta, training=False), bad(x + delta, training=False)
            my_answer, their_answer = tf.argmax(mine, 1), tf.argmax(theirs, 1)
            fooled, fooled_bad = tf.not_equal(my_answer, mine_clean), tf.not_equal(their_answer, bad_clean)
            shared = tf.logical_and(tf.logical_and(fooled, fooled_bad), tf.equal(my_answer, their_answer))
            adversarial = tf.reduce_sum(tf.where(fooled, 0.0, ce(y, mine))) + tf.reduce_sum(
                tf.where(fooled_bad, 0.0, ce(y, theirs))
            )
            disagreement = tf.reduce_sum(tf.where(shared, 0.0, js_divergence(mine, theirs)))
            loss = -BETA_ADVERSARIAL * adversarial / (2 * n) + BETA_SHARED * disagreement / n
        step = ascent_direction(tape.gradient(loss, delta), l2)
        delta = project(delta - budget * step, budget, l2)
    return tf.stop_gradient(delta)


def sau_step(bad, budget: float, l2: int, steps: int, divisor: float):
    """The shared loop's step for SAU: PGD for the batch's shared perturbations, then one Adam step on the
    clean cross-entropy plus the shared unlearning loss."""
    import tensorflow as tf

    from defenses.finetune import correct_answers

    scaled = budget * 255.0 / divisor  # the budget in the networks' input units

    def make_step(model, optimizer):
        ce = tf.keras.losses.SparseCategoricalCrossentropy()
        variables = model.trainable_variables

        @tf.function(reduce_retracing=True)
        def step(x, y, seed):
            delta = shared_perturbation(model, bad, x, y, scaled, l2, steps)
            bad_clean, bad_perturbed = bad(x, training=False), bad(x + delta, training=False)
            with tf.GradientTape() as tape:
                out, perturbed = model(x, training=False), model(x + delta, training=False)  # as the authors: eval mode
                shared = shared_unlearning_loss(perturbed, bad_perturbed, bad_clean, y)
                loss = ce(y, out) + SHARED_WEIGHT * shared
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            return loss, correct_answers(out, y)

        return step

    return make_step


def run_sau(loaded, config: dict, report_point, should_stop=None, artifact_dir=None):
    """SAU in the shared loop from the BadNet; reports the BadNet at position 0 and every epoch; saves the
    network; a second delivery resumes after its last checkpointed epoch."""
    from defenses.finetune import seed_everything
    from defenses.runner import fresh_copy

    job = SAUConfig(**config)
    seed_everything(int(job.seed))
    settings = resumable_settings(float(job.lr), int(job.epochs), int(job.seed), artifact_dir)
    step = sau_step(loaded.bad, float(job.sau_eps), int(job.sau_l2), int(job.sau_steps), loaded.divisor)
    repaired = fresh_copy(loaded.bad)
    return train_and_report(loaded, repaired, settings, report_point, should_stop, artifact_dir, make_step=step)


def describe(config: dict) -> str:
    norm = "L2" if int(config["sau_l2"]) else "L-infinity"
    return (
        f"SAU: {config['epochs']} epochs at LR {config['lr']:g}, {config['sau_steps']}-step PGD within "
        f"{norm} {config['sau_eps']:g} (seed {config.get('seed', 0)})"
    )


def epoch_units(config: dict) -> int:
    """PGD's steps on two networks and the training step, in passes over the clean set."""
    return int(config["epochs"]) * (3 + 2 * int(config["sau_steps"]))


SAU_JOB = epoch_job("sau", run_sau, describe, "unlearning epoch (0: the BadNet)", units=epoch_units)
SAU = register(
    Method(
        name="sau",
        title="SAU",
        paper="Wei, Zhang, Zhang, Li and Wu, Shared Adversarial Unlearning: Backdoor Mitigation by Unlearning "
        "Shared Adversarial Examples, NeurIPS 2023",
        summary="unlearn the perturbations that fool the repaired network and the BadNet alike",
        parameters=(LEARNING_RATES, EPOCHS, BUDGET, L2, STEPS, SEED),
        columns=lr_epoch_columns("unlearning epochs"),
        plan=by_learning_rate("sau", BUDGET, L2, STEPS),
        charts=LR_EPOCH_CHARTS,
        jobs=(SAU_JOB,),
        sweep={"learning_rates": [0.001], "epochs": [6], "sau_steps": 3},
        deviations="Adam without amsgrad; the budget in pixel fractions whatever the input scaling; an L2 "
        "budget as well as L-infinity; the clean validation set is the defender's data.",
    )
)
