"""I-BAU, implicit backdoor adversarial unlearning (Zeng, Chen, Park, Mao, Jin and Jia, "Adversarial Unlearning
of Backdoors via Implicit Hypergradient", ICLR 2022): min over the network of the loss under the worst
universal perturbation, the inner maximum solved approximately and the outer gradient taken through it with
the implicit function theorem. Made for few clean images and several targets. Each epoch (the authors' round):

1. Inner: one universal perturbation delta, from zero, one SGD step (lr 10) per batch on
   -CE(f(x + delta), f's own answer on x) + 0.001 ||delta||^2, projected on an L2 ball.
2. Outer, each batch: the loss L of the batch with delta added to a share of its images; its hypergradient
   dL/dtheta + (dPhi/dtheta)^T v, where Phi(delta) = delta - 0.1 grad_delta g is one gradient step of the inner
   problem on the epoch's first batch (g = -CE with true labels + 0.001 ||delta||^2) and v solves
   v = (dPhi/ddelta)^T v + dL/ddelta by K fixed-point iterations (the authors' Neumann series); one Adam step.

Deviations, said on the page: the perturbation lives in pixel fractions (0..1) whatever the BadNet's input
scaling; at least one image of every batch is perturbed (the authors perturb 1 % of a batch of 100, which for
our batches of 32 would be none, and the unlearning would be plain fine-tuning); the L2 ball of the authors'
notebooks (radius 10) is kept; plain Adam at the chosen LR (the authors: Adam, lr 1e-3, 5 rounds); the
defender's data is the clean validation set (the authors: 5000 test images).

Cost per epoch, in passes over the clean set: the inner pass, the outer loss's gradient and, per batch, K
second-order products and one for theta, each about two passes of one batch: 2 + 2 (K + 1).

Jobs: one `i-bau` job per (LR, K, radius, seed) trains to the largest epoch count asked for and stores every
epoch (position = epoch; 0 is the BadNet itself).
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

FIXED_POINT_STEPS = Parameter(
    "ibau_k", "I-BAU: fixed-point iterations K", int, 5, 1, 20, axis=False, help="terms of the Neumann series"
)
RADIUS = Parameter(
    "ibau_radius",
    "I-BAU: perturbation radius",
    float,
    10.0,
    0.0,
    100.0,
    low_open=True,
    axis=False,
    help="L2 length of the universal perturbation, in pixel fractions",
    search=(2.0, 20.0),
    log=True,
)
INNER_LR = 10.0  # the authors' SGD step on the perturbation
INNER_STEP = 0.1  # Phi's gradient step, the authors' GradientDescent(loss_inner, 0.1)
NORM_WEIGHT = 0.001  # the authors' 0.001 ||delta||^2
PERTURBED_SHARE = 0.01  # of each batch, the authors' share; at least one image


@dataclass(frozen=True)
class IBAUConfig:
    lr: float
    epochs: int
    ibau_k: int
    ibau_radius: float
    seed: int = 0


def project_l2(delta, radius: float):
    """delta scaled down to the L2 ball of `radius` (unchanged inside it)."""
    import tensorflow as tf

    return delta * tf.minimum(1.0, radius / (tf.norm(delta) + 1e-12))


class UnlearningStep:
    """The shared loop's step for I-BAU: `start_epoch` solves the inner problem for the epoch's universal
    perturbation, each call is one outer step with the implicit hypergradient."""

    def __init__(self, model, optimizer, k: int, radius: float, divisor: float, image_shape):
        import tensorflow as tf

        self.model, self.optimizer, self.k, self.radius = model, optimizer, int(k), float(radius)
        self.scale = 255.0 / divisor  # pixel fractions -> the network's input units
        self.delta = tf.Variable(tf.zeros((1, *image_shape)), trainable=False)
        self.first = None  # the epoch's first batch: where g, the inner problem, is evaluated
        self.outer = tf.function(self._outer, reduce_retracing=True)
        self.inner = tf.function(self._inner, reduce_retracing=True)

    def _inner(self, x):
        import tensorflow as tf

        answers = tf.argmax(self.model(x, training=False), 1)
        with tf.GradientTape() as tape:
            tape.watch(self.delta)
            out = self.model(x + self.delta * self.scale, training=False)
            loss = -tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(answers, out))
            loss += NORM_WEIGHT * tf.reduce_sum(tf.square(self.delta))
        self.delta.assign(project_l2(self.delta - INNER_LR * tape.gradient(loss, self.delta), self.radius))

    def start_epoch(self, batches) -> None:
        """A new universal perturbation from zero, one step per batch of the epoch (the authors' inner loop)."""
        self.delta.assign(self.delta * 0.0)
        self.first = None
        for x, y in batches:
            self.first = self.first or (x, y)
            self.inner(x)

    def inner_gradient(self, delta, x, y):
        """grad_delta g(delta, theta) on the first batch, g = -CE(f(x + delta), y) + 0.001 ||delta||^2."""
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(delta)
            out = self.model(x + delta * self.scale, training=False)
            g = -tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, out))
            g += NORM_WEIGHT * tf.reduce_sum(tf.square(delta))
        return tape.gradient(g, delta)

    def _outer(self, x, y, seed, first_x, first_y):
        import tensorflow as tf

        from defenses.finetune import correct_answers

        weights = self.model.trainable_variables
        delta = tf.identity(self.delta)
        count = tf.shape(x)[0]
        chosen = tf.random.stateless_uniform((count,), seed) < PERTURBED_SHARE
        chosen = tf.tensor_scatter_nd_update(
            chosen, [[tf.random.stateless_uniform((), seed, 0, count, tf.int32)]], [True]
        )
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(delta)
            stamped = tf.where(tf.reshape(chosen, (-1, 1, 1, 1)), x + delta * self.scale, x)
            out = self.model(stamped, training=True)
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, out))
        grad_delta, grad_theta = tape.gradient(loss, delta), tape.gradient(loss, weights)
        del tape
        v = tf.zeros_like(delta)
        for _ in range(self.k):  # v <- (dPhi/ddelta)^T v + dL/ddelta = v - 0.1 H v + dL/ddelta
            with tf.GradientTape() as tape:
                tape.watch(delta)
                dot = tf.reduce_sum(self.inner_gradient(delta, first_x, first_y) * v)
            v = v - INNER_STEP * tape.gradient(dot, delta) + grad_delta
        with tf.GradientTape() as tape:  # (dPhi/dtheta)^T v = -0.1 grad_theta <grad_delta g, v>
            dot = tf.reduce_sum(self.inner_gradient(delta, first_x, first_y) * v)
        cross = tape.gradient(dot, weights)
        hyper = [g if c is None else g - INNER_STEP * c for g, c in zip(grad_theta, cross, strict=True)]
        self.optimizer.apply_gradients(zip(hyper, weights, strict=True))
        return loss, correct_answers(out, y)

    def __call__(self, x, y, seed):
        return self.outer(x, y, seed, *self.first)


def ibau_step(k: int, radius: float, divisor: float):
    def make_step(model, optimizer):
        return UnlearningStep(model, optimizer, k, radius, divisor, tuple(model.inputs[0].shape[1:]))

    return make_step


def run_ibau(loaded, config: dict, report_point, should_stop=None, artifact_dir=None):
    """I-BAU in the shared loop from the BadNet; reports the BadNet at position 0 and every epoch; saves the
    network; a second delivery resumes after its last checkpointed epoch."""
    from defenses.finetune import seed_everything
    from defenses.runner import fresh_copy

    job = IBAUConfig(**config)
    seed_everything(int(job.seed))
    settings = resumable_settings(float(job.lr), int(job.epochs), int(job.seed), artifact_dir)
    step = ibau_step(int(job.ibau_k), float(job.ibau_radius), loaded.divisor)
    repaired = fresh_copy(loaded.bad)
    return train_and_report(loaded, repaired, settings, report_point, should_stop, artifact_dir, make_step=step)


def describe(config: dict) -> str:
    return (
        f"I-BAU: {config['epochs']} rounds at LR {config['lr']:g}, K {config['ibau_k']}, radius "
        f"{config['ibau_radius']:g} (seed {config.get('seed', 0)})"
    )


def epoch_units(config: dict) -> int:
    """The inner pass, the outer gradient and K + 1 second-order products a batch, in passes over the set."""
    return int(config["epochs"]) * (2 + 2 * (int(config["ibau_k"]) + 1))


IBAU_JOB = epoch_job("i-bau", run_ibau, describe, "unlearning round (0: the BadNet)", units=epoch_units)
IBAU = register(
    Method(
        name="i-bau",
        title="I-BAU",
        paper="Zeng, Chen, Park, Mao, Jin and Jia, Adversarial Unlearning of Backdoors via Implicit Hypergradient, "
        "ICLR 2022",
        summary="unlearn the worst universal perturbation, with the gradient taken through the inner problem",
        parameters=(LEARNING_RATES, EPOCHS, FIXED_POINT_STEPS, RADIUS, SEED),
        columns=lr_epoch_columns("unlearning rounds", "{} rounds", "Rounds"),
        plan=by_learning_rate("i-bau", FIXED_POINT_STEPS, RADIUS),
        charts=LR_EPOCH_CHARTS,
        jobs=(IBAU_JOB,),
        sweep={"learning_rates": [0.001], "epochs": [5]},
        deviations="Perturbation in pixel fractions; at least one image of a batch perturbed; the notebooks' L2 "
        "ball of radius 10; plain Adam; the clean validation set is the defender's data.",
    )
)
