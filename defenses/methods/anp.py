"""ANP (Wu and Wang, "Adversarial Neuron Pruning Purifies Backdoored Deep Models", NeurIPS 2021): neurons that
a small adversarial perturbation turns into the backdoor are the ones to prune. Every channel c of every conv
layer gets a mask m_c in [0, 1] (starting at 1) and two perturbations, delta_c on its weights and xi_c on its
bias, in [-eps, eps]. Each step on a batch of clean data: delta and xi start uniform in [-eps, eps] and take
`steps` signed gradient-ascent steps on the loss; then the masks take one SGD step (momentum 0.9) on
alpha * L(masks) + (1 - alpha) * L(masks + delta, 1 + xi) and are clipped to [0, 1]. After the last step,
channels whose mask is at most a threshold tau are pruned (kernel slice and bias zero); a sweep over tau
gives the curve the honest selection chooses from, as T does for Fine-Pruning.

Deviations, said on the page: the paper perturbs the neurons of BatchNorm layers (their scale and shift);
DeepID has none, so here a channel's perturbation multiplies its conv kernel slice (the scale) and its bias
(the shift) directly, which is what BatchNorm's would do to the same channel; the perturbations are clipped to
[-eps, eps] after each step, as the paper's constraint says (the authors' code does not clip); the default
budget is 0.2, not the paper's 0.4, which is a budget on BatchNorm's normalised scale (on DeepID's raw kernels
0.4 drove half the masks to zero and the clean accuracy under 60 %); the clean validation set is the
defender's data (the paper: 1 % of the training set).

Jobs: one `anp` job per (eps, alpha, steps, iterations, mask lr, seed) learns the masks once and stores one
point per tau (position = index of tau), and the pruned network of each.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defenses.jobs import Job, Plan
from defenses.methods import Column, JobKind, Method, Parameter, Versus, register, values
from defenses.methods.common import SEED

TAUS = Parameter(
    "mask_thresholds",
    "ANP: mask thresholds tau",
    float,
    (0.1, 0.2, 0.3, 0.4, 0.5),
    0.0,
    1.0,
    help="prune the channels whose learnt mask is at most tau; values or a range",
    noun="mask threshold",
)
EPS = Parameter(
    "anp_eps",
    "ANP: perturbation budget eps",
    float,
    0.2,
    0.0,
    1.0,
    axis=False,
    help="how far the adversarial perturbation may scale a channel",
)
ALPHA = Parameter(
    "anp_alpha",
    "ANP: trade-off alpha",
    float,
    0.2,
    0.0,
    1.0,
    axis=False,
    help="weight of the unperturbed loss against the perturbed one",
)
ITERATIONS = Parameter(
    "anp_iterations",
    "ANP: mask steps",
    int,
    2000,
    1,
    20000,
    axis=False,
    help="batches of 128 clean images the masks learn from",
)
MASK_LR = 0.2
STEPS = 1  # gradient-ascent steps of the perturbation per batch (the paper's default)
BATCH = 128


@dataclass(frozen=True)
class ANPConfig:
    mask_thresholds: list
    anp_eps: float
    anp_alpha: float
    anp_iterations: int
    seed: int = 0


def learn_masks(
    model, train, divisor: float, conv_layers: list[str], eps: float, alpha: float, iterations: int, should_stop=None
) -> dict[str, np.ndarray]:
    """The learnt mask of every channel of `conv_layers`, {layer: values in [0, 1]}. The model's weights are
    never changed: masks and perturbations scale their values inside each step."""
    import keras
    import tensorflow as tf

    from defenses.data import scale_pixels
    from defenses.finetune import Cancelled

    layers = [model.get_layer(name) for name in conv_layers]
    masks = [tf.Variable(tf.ones(layer.filters)) for layer in layers]
    deltas = [tf.Variable(tf.zeros(layer.filters)) for layer in layers]
    xis = [tf.Variable(tf.zeros(layer.filters)) for layer in layers]
    # where each perturbed layer's kernel and bias sit among the model's trainable variables
    slots = {id(layer.kernel): ("kernel", number) for number, layer in enumerate(layers)}
    slots |= {id(layer.bias): ("bias", number) for number, layer in enumerate(layers) if layer.use_bias}
    trainable, fixed = model.trainable_variables, model.non_trainable_variables
    inputs, labels = scale_pixels(train[0], divisor), np.asarray(train[1])
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    optimizer = keras.optimizers.SGD(learning_rate=MASK_LR, momentum=0.9)

    def loss_at(x, y, perturbed: bool):
        """The loss of the network whose channels are scaled by the masks (and perturbations): the model is
        called with those weights as values (Keras' stateless call), so gradients reach masks and noise."""
        values = []
        for variable in trainable:
            role, number = slots.get(id(variable), (None, None))
            if role == "kernel":  # the last axis of a Conv2D kernel is its output channel
                values.append(variable * (masks[number] + deltas[number] if perturbed else masks[number]))
            elif role == "bias":
                values.append(variable * (1.0 + xis[number]) if perturbed else variable)
            else:
                values.append(variable)
        outputs, _ = model.stateless_call(values, [v.value for v in fixed], x, training=False)
        return loss_fn(y, outputs)

    @tf.function
    def step(x, y):
        if eps > 0:
            for delta, xi in zip(deltas, xis, strict=True):
                delta.assign(tf.random.uniform(delta.shape, -eps, eps))
                xi.assign(tf.random.uniform(xi.shape, -eps, eps))
            for _ in range(STEPS):
                with tf.GradientTape() as tape:
                    loss = loss_at(x, y, perturbed=True)
                grads = tape.gradient(loss, deltas + xis)
                for variable, grad in zip(deltas + xis, grads, strict=True):  # ascent, clipped to the budget
                    variable.assign(tf.clip_by_value(variable + (eps / STEPS) * tf.sign(grad), -eps, eps))
        with tf.GradientTape() as tape:
            natural = loss_at(x, y, perturbed=False)
            robust = loss_at(x, y, perturbed=True) if eps > 0 else 0.0
            loss = alpha * natural + (1 - alpha) * robust
        optimizer.apply_gradients(zip(tape.gradient(loss, masks), masks, strict=True))
        for mask in masks:
            mask.assign(tf.clip_by_value(mask, 0.0, 1.0))

    for iteration in range(iterations):
        index = np.random.randint(0, len(inputs), BATCH)  # sampled with replacement, as the authors' sampler
        step(tf.constant(inputs[index]), tf.constant(labels[index]))
        if should_stop is not None and iteration % 50 == 0 and should_stop():
            raise Cancelled(f"cancelled at mask step {iteration}")
    return {name: mask.numpy() for name, mask in zip(conv_layers, masks, strict=True)}


def run_anp(loaded, config: dict, report_point, should_stop=None, artifact_dir=None) -> None:
    """Learn the masks, then for each tau prune the channels at or under it and measure; saves the masks and
    every tau's network (network_at-position files)."""
    import json

    from defenses.finetune import save_atomically, seed_everything
    from defenses.pruning import apply_masks, pruned_counts
    from defenses.runner import fresh_copy

    job = ANPConfig(**config)
    seed_everything(int(job.seed))
    conv = list(loaded.report.conv_layers)
    learnt = learn_masks(
        loaded.bad,
        loaded.valid,
        loaded.divisor,
        conv,
        float(job.anp_eps),
        float(job.anp_alpha),
        int(job.anp_iterations),
        should_stop,
    )
    if artifact_dir:
        Path(artifact_dir).mkdir(parents=True, exist_ok=True)
        (Path(artifact_dir) / "anp_masks.json").write_text(json.dumps({k: v.tolist() for k, v in learnt.items()}))
    for position, tau in enumerate(job.mask_thresholds):
        keep = {layer: values > tau for layer, values in learnt.items()}
        pruned_net = fresh_copy(loaded.bad)
        apply_masks(pruned_net, keep)
        extra = {"before": loaded.baseline()} if position == 0 else {}
        report_point(
            position, loaded.measure(pruned_net) | {"mask_threshold": tau, "pruned": pruned_counts(keep)} | extra
        )
        if artifact_dir:
            save_atomically(pruned_net, Path(artifact_dir) / network_file(config, position))


def network_file(config: dict, position: int) -> str:
    return f"repaired_net-{position}.keras"


def describe(config: dict) -> str:
    taus = ", ".join(f"{t:g}" for t in config["mask_thresholds"])
    return (
        f"ANP masks from {config['anp_iterations']} steps (eps {config['anp_eps']:g}, alpha "
        f"{config['anp_alpha']:g}), pruned at tau {taus} (seed {config.get('seed', 0)})"
    )


def plan_anp(space: dict) -> Plan:
    """One mask-learning job serves every tau (position = index of tau)."""
    taus = sorted(set(values(space, TAUS)))
    config = {
        "mask_thresholds": taus,
        "anp_eps": float(values(space, EPS)[0]),
        "anp_alpha": float(values(space, ALPHA)[0]),
        "anp_iterations": int(values(space, ITERATIONS)[0]),
        "seed": int(space.get("seed", 0)),
    }
    return Plan([Job("anp", config)], {(tau,): (0, position) for position, tau in enumerate(taus)})


ANP_JOB = JobKind(
    "anp",
    run_anp,
    positions=lambda config, report: len(config["mask_thresholds"]),
    describe=describe,
    # each step passes a batch of 128 three times (perturbation, natural and perturbed loss)
    epoch_units=lambda config, n: 3 * BATCH * int(config["anp_iterations"]) / max(n, 1),
    repairs=True,
    x=("mask_threshold", "mask threshold tau"),
    network_file=network_file,
)
ANP = register(
    Method(
        name="anp",
        title="ANP",
        paper="Wu and Wang, Adversarial Neuron Pruning Purifies Backdoored Deep Models, NeurIPS 2021",
        summary="prune the channels whose learnt mask an adversarial neuron perturbation drives down",
        parameters=(TAUS, EPS, ALPHA, ITERATIONS, SEED),
        columns=(Column("mask_threshold", "mask threshold tau", "tau {}", heading="tau"),),
        plan=plan_anp,
        charts=(Versus("mask_threshold"),),
        jobs=(ANP_JOB,),
        sweep={"mask_thresholds": [0.1, 0.2, 0.3, 0.5], "anp_iterations": 500},
        deviations="No BatchNorm in DeepID: a channel's perturbation scales its conv kernel slice and bias; "
        "perturbations clipped to [-eps, eps]; the clean validation set is the defender's data.",
    )
)
