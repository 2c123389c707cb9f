"""The training loop every training defense shares: fine-tuning, FT-SAM, NAD, Neural Cleanse unlearning, SAU,
FST and I-BAU each plug a step (their loss, their perturbation) into `fine_tune`; none writes its own loop.

A run can be killed at any moment (an out-of-memory kill, a power cut) and be delivered again. So training
is a loop of epochs whose image order depends only on (seed, epoch), whose random draws inside a step depend
only on (seed, epoch, batch), and after every epoch the weights, the optimizer's state and the defense's own
state go to one checkpoint file: a second delivery restores it and trains the remaining epochs, and ends where
an uninterrupted run would have ended, to the last digit on the same machine.
"""

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defenses.metrics import LabelledSet, Metrics

TRAIN_BATCH = 32
CHECKPOINT = "checkpoint.npz"  # in a run's folder: the last completed epoch's weights and optimizer state
CHECKPOINTS = "checkpoint*.npz"  # every checkpoint a run may keep (NAD's teacher has its own): a done run drops them
STOP_CHECK_BATCHES = 20  # how often the cancel flag is read (a database query on a worker)

# step(x, y, seed) -> (mean loss, correct answers) for one batch of scaled pixels x and labels y; `seed` is a
# (2,) int32 tensor unique to (run seed, epoch, batch), for defenses whose step draws random numbers
# (tf.random.stateless_*), so that a resumed epoch draws what the uninterrupted one drew.
Step = Callable
MakeStep = Callable  # make_step(model, optimizer) -> Step, built once per run (its tf.function traced once)
# A step may also have `start_epoch(batches)`: called with the epoch's batches before the epoch trains (I-BAU
# solves its inner problem there); it must depend only on the model and the batches, so resuming repeats it.


def seed_everything(seed: int) -> None:
    """Make one run reproducible on one machine: Python, NumPy and TensorFlow seeds, deterministic ops."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


@dataclass(frozen=True)
class EpochRecord:
    """One trained epoch: the mean training loss and accuracy over its batches, the seconds it took and the
    epoch this delivery of the run started after (0: from the start)."""

    epoch: int
    loss: float
    train_acc: float
    metrics: Metrics | None
    seconds: float
    resumed_from: int = 0

    def as_dict(self) -> dict:
        row = {"epoch": self.epoch, "loss": self.loss, "train_acc": self.train_acc, "seconds": self.seconds}
        row |= {"resumed_from": self.resumed_from} if self.resumed_from else {}
        return row | (self.metrics.as_dict() if self.metrics else {})


@dataclass
class FineTuneSettings:
    learning_rate: float
    epochs: int
    batch_size: int = TRAIN_BATCH
    seed: int = 0  # with the epoch number, it fixes each epoch's image order and every draw of a step
    decay: float = 1.0  # epoch e trains at learning_rate x decay^(e - 1): a function of e alone, so resumable
    checkpoint: Path | None = None  # resume from this file when it exists; rewrite it after every epoch


class Cancelled(Exception):
    """Raised when `should_stop` asked training to end; the epochs finished so far are kept."""


def save_atomically(model, path: Path) -> None:
    """Write to a temporary name, then rename: a crash never leaves a half-written model behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    model.save(partial)
    os.replace(partial, path)


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the training images in `epoch`: a function of (seed, epoch) alone, so a resumed run
    shuffles its remaining epochs exactly as an uninterrupted one would have."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def save_checkpoint(model, optimizer, path: Path, epoch: int, state: Sequence = ()) -> None:
    """The model's weights, its optimizer's state and the defense's own `state` variables after `epoch`, in
    one file written atomically (one file per run, overwritten: disk stays bounded by one copy)."""
    arrays = {f"weight_{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    arrays |= {f"optimizer_{i}": np.asarray(v) for i, v in enumerate(optimizer.variables)}
    arrays |= {f"state_{i}": np.asarray(v) for i, v in enumerate(state)}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial.npz")
    with open(partial, "wb") as handle:
        np.savez(handle, epoch=np.int64(epoch), **arrays)
    os.replace(partial, path)


def checkpoint_epoch(path: Path | None) -> int:
    """The last completed epoch a checkpoint holds; 0 when there is none."""
    if path is None or not Path(path).exists():
        return 0
    with np.load(path, allow_pickle=False) as stored:
        return int(stored["epoch"])


def restore_checkpoint(model, optimizer, path: Path, state: Sequence = ()) -> int:
    """Load a checkpoint's weights, optimizer state and `state` variables (the optimizer built for the model's
    trainable variables); returns its epoch."""
    with np.load(path, allow_pickle=False) as stored:
        weights = [stored[f"weight_{i}"] for i in range(len(model.get_weights()))]
        saved = [stored[f"optimizer_{i}"] for i in range(len(optimizer.variables))]
        own = [stored[f"state_{i}"] for i in range(len(state))]
        epoch = int(stored["epoch"])
    model.set_weights(weights)
    for variable, value in zip([*optimizer.variables, *state], [*saved, *own], strict=True):
        variable.assign(value)
    return epoch


def epoch_batches(images, labels, order: np.ndarray, batch_size: int, divisor: float):
    """One epoch's batches in `order` as a tf.data pipeline over the set held once as tensors, each batch
    gathered and scaled on its own (no shuffled or scaled copy of the whole set: a CSAW validation set is
    358 MB as float32, 90 MB as the uint8 it is stored as). The division is IEEE float32, as
    `data.scale_pixels`, so the numbers are the same."""
    import tensorflow as tf

    def gather(rows):
        return tf.cast(tf.gather(images, rows), tf.float32) / np.float32(divisor), tf.gather(labels, rows)

    return tf.data.Dataset.from_tensor_slices(order).batch(batch_size).map(gather).prefetch(2)


def cross_entropy_step(model, optimizer, label_smoothing: float = 0.0) -> Step:
    """Plain fine-tuning: one optimizer step on the batch's cross-entropy (label smoothing optional)."""
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    classes = int(model.outputs[0].shape[-1])

    @tf.function(reduce_retracing=True)
    def step(x, y, seed):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = loss_fn(tf.one_hot(y, classes), out)
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss, correct_answers(out, y)

    return step


def correct_answers(probabilities, labels):
    """How many of a batch's answers equal its labels (a float32 scalar tensor)."""
    import tensorflow as tf

    predicted = tf.argmax(probabilities, axis=1, output_type=tf.int32)
    return tf.reduce_sum(tf.cast(tf.equal(predicted, tf.cast(labels, tf.int32)), tf.float32))


def fine_tune(
    model,
    train: LabelledSet,
    divisor: float,
    settings: FineTuneSettings,
    make_step: MakeStep = cross_entropy_step,
    state: Sequence = (),
    evaluate_epoch: Callable[[object], Metrics] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[EpochRecord]:
    """Train `model` in place with Adam at `settings.learning_rate` on `train` to `settings.epochs` epochs,
    one `make_step(model, optimizer)` step a batch, and return one record per epoch trained by this call.

    With `settings.checkpoint`, training starts after the checkpoint's epoch when the file exists, and the
    file (weights, Adam's state and the defense's own `state` variables) is rewritten after every epoch,
    after `on_epoch`, so a stored point is never ahead of its checkpoint. Masks applied with
    `pruning.apply_masks` stay applied (Keras' optimizer applies the weights' constraints after every step).
    `evaluate_epoch(model)` measures each epoch (reported, never used to choose); `on_epoch` receives each
    record as it is made (progress, storage); `should_stop` is checked between batches and raises Cancelled.
    """
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(learning_rate=settings.learning_rate)
    optimizer.build(model.trainable_variables)
    step = make_step(model, optimizer)
    images, labels = tf.constant(train[0]), tf.constant(np.asarray(train[1]).astype(np.int32))
    start = 0
    if checkpoint_epoch(settings.checkpoint):
        start = restore_checkpoint(model, optimizer, settings.checkpoint, state)
    records: list[EpochRecord] = []
    for epoch in range(start + 1, settings.epochs + 1):
        started = time.perf_counter()
        optimizer.learning_rate.assign(settings.learning_rate * settings.decay ** (epoch - 1))
        order = epoch_order(len(train[1]), settings.seed, epoch)
        total_loss, correct = 0.0, 0.0
        batches = epoch_batches(images, labels, order, settings.batch_size, divisor)
        if hasattr(step, "start_epoch"):
            step.start_epoch(batches)
        for batch, (x, y) in enumerate(batches):
            seed = tf.constant([settings.seed % 2**31, epoch * 100_000 + batch], dtype=tf.int32)
            loss, right = step(x, y, seed)
            total_loss, correct = total_loss + float(loss) * int(y.shape[0]), correct + float(right)
            if should_stop is not None and batch % STOP_CHECK_BATCHES == 0 and should_stop():
                raise Cancelled(f"cancelled during epoch {epoch}")
        record = EpochRecord(
            epoch=epoch,
            loss=total_loss / len(order),
            train_acc=100.0 * correct / len(order),
            metrics=evaluate_epoch(model) if evaluate_epoch else None,
            seconds=time.perf_counter() - started,
            resumed_from=start,
        )
        records.append(record)
        if on_epoch:
            on_epoch(record)
        if settings.checkpoint:
            save_checkpoint(model, optimizer, settings.checkpoint, epoch, state)
    return records
