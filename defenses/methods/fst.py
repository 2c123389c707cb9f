"""FST, feature shift tuning (Min, Zhang, Wen, Chen, Ma and Gong, "Towards Stable Backdoor Purification through
Feature Shift Tuning", NeurIPS 2023): re-initialise the classifier head, then fine-tune the whole network on
clean data with a penalty alpha x <W, W0> on the inner product of the head's kernel W with the original head's
W0, and W projected back to W0's Frobenius norm after every step. The penalty pushes the head away from the
backdoored one, so the features under it must shift too, which breaks triggers whose features are entangled
with clean ones, where plain fine-tuning keeps them.

Deviations, said on the page: Adam (the authors: SGD with momentum 0.9 and a cosine schedule, lr 0.01); the
penalty is divided by the number of classes over 10 (alpha as the authors set it for CIFAR-10's 10 classes
gives 1283 classes a penalty a hundred times stronger against the cross-entropy); no data augmentation; the
defender's data is the clean validation set (the authors: 2-5 % of the training set).

Jobs: one `fst` job per (LR, alpha, seed) trains to the largest epoch count asked for and stores every epoch
(position = epoch; 0 is the network with its new head, not yet trained).
"""

from dataclasses import dataclass

import numpy as np

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

ALPHA = Parameter(
    "fst_alpha",
    "FST: penalty alpha",
    float,
    0.2,
    0.0,
    100.0,
    axis=False,
    help="weight of the inner product of the new head with the original one (per 10 classes)",
    search=(0.02, 2.0),
    log=True,
)
REFERENCE_CLASSES = 10  # the authors' alpha is set for CIFAR-10
DECAY = 0.9  # per epoch, in place of the authors' cosine schedule (which depends on the run's total)


@dataclass(frozen=True)
class FSTConfig:
    lr: float
    epochs: int
    fst_alpha: float
    seed: int = 0


class KeepNorm:
    """Weight constraint: the kernel scaled back to a fixed Frobenius norm after every optimizer step."""

    def __init__(self, norm: float):
        self.norm = float(norm)

    def __call__(self, weight):
        import tensorflow as tf

        return weight * (self.norm / (tf.norm(weight) + 1e-12))


def head_layer(model):
    """The classifier head: the last Dense layer (DeepID's `output`)."""
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    if not dense:
        raise ValueError("FST needs a network whose classifier is a Dense layer")
    return dense[-1]


def reinitialise_head(model, seed: int) -> np.ndarray:
    """Draw the head's kernel and bias anew from U(-s, s), s = 1 / sqrt(inputs) (the authors' draw), pin the
    kernel to the original's norm, and return the original kernel W0."""
    head = head_layer(model)
    original = np.asarray(head.kernel)
    rng = np.random.default_rng([seed, 0xF57])
    bound = 1.0 / np.sqrt(original.shape[0])
    fresh = rng.uniform(-bound, bound, original.shape).astype("float32")
    norm = float(np.linalg.norm(original))
    head.kernel.assign(fresh * (norm / np.linalg.norm(fresh)))
    if head.use_bias:
        head.bias.assign(rng.uniform(-bound, bound, head.bias.shape).astype("float32"))
    head.kernel.constraint = KeepNorm(norm)
    return original


def shift_penalty(kernel, original, alpha: float, classes: int):
    """alpha x <W, W0>, divided by classes / 10 (so alpha means what it means for 10 classes)."""
    import tensorflow as tf

    return alpha * REFERENCE_CLASSES / classes * tf.reduce_sum(kernel * original)


def fst_step(original: np.ndarray, alpha: float):
    """The shared loop's step for FST: cross-entropy plus the shift penalty on the head's kernel."""
    import keras
    import tensorflow as tf

    from defenses.finetune import correct_answers

    def make_step(model, optimizer):
        loss_fn = keras.losses.SparseCategoricalCrossentropy()
        kernel, w0 = head_layer(model).kernel, tf.constant(original)
        classes = int(original.shape[-1])
        variables = model.trainable_variables

        @tf.function(reduce_retracing=True)
        def step(x, y, seed):
            with tf.GradientTape() as tape:
                out = model(x, training=True)
                loss = loss_fn(y, out) + shift_penalty(kernel, w0, alpha, classes)
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            return loss, correct_answers(out, y)

        return step

    return make_step


def run_fst(loaded, config: dict, report_point, should_stop=None, artifact_dir=None):
    """A new head, then fine-tuning with the shift penalty in the shared loop; reports position 0 (the new
    head, untrained) and every epoch; saves the network."""
    from defenses.finetune import seed_everything
    from defenses.runner import fresh_copy

    job = FSTConfig(**config)
    seed_everything(int(job.seed))
    repaired = fresh_copy(loaded.bad)
    original = reinitialise_head(repaired, int(job.seed))
    settings = resumable_settings(float(job.lr), int(job.epochs), int(job.seed), artifact_dir)
    settings.decay = DECAY
    step = fst_step(original, float(job.fst_alpha))
    return train_and_report(loaded, repaired, settings, report_point, should_stop, artifact_dir, make_step=step)


def describe(config: dict) -> str:
    return (
        f"FST: new head, {config['epochs']} epochs at LR {config['lr']:g} with shift penalty alpha "
        f"{config['fst_alpha']:g} (seed {config.get('seed', 0)})"
    )


FST_JOB = epoch_job("fst", run_fst, describe, "fine-tuning epoch (0: the new head, untrained)")
FST = register(
    Method(
        name="fst",
        title="FST",
        paper="Min, Zhang, Wen, Chen, Ma and Gong, Towards Stable Backdoor Purification through Feature Shift "
        "Tuning, NeurIPS 2023",
        summary="a new classifier head, then fine-tuning that keeps it away from the backdoored head",
        parameters=(LEARNING_RATES, EPOCHS, ALPHA, SEED),
        columns=lr_epoch_columns(),
        plan=by_learning_rate("fst", ALPHA),
        charts=LR_EPOCH_CHARTS,
        jobs=(FST_JOB,),
        sweep={"learning_rates": [0.001, 0.005], "epochs": [20]},
        deviations="Adam (the authors: SGD with momentum and a cosine schedule); the penalty divided by the "
        "number of classes over 10; no augmentation; the clean validation set is the defender's data.",
    )
)
