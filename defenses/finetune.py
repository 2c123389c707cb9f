"""Fine-tuning a (pruned) network on the defender's clean validation set, with metrics after every epoch.

A run can be killed at any moment (an out-of-memory kill, a power cut) and be delivered again. So training
is a loop of epochs whose image order depends only on (seed, epoch), and after every epoch the weights and
the optimizer's state go to one checkpoint file: a second delivery restores it and trains the remaining
epochs, and ends where an uninterrupted run would have ended, to the last digit on the same machine.
"""

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defenses.metrics import LabelledSet, Metrics

TRAIN_BATCH = 32
CHECKPOINT = "checkpoint.npz"  # in a run's folder: the last completed epoch's weights and optimizer state


def seed_everything(seed: int) -> None:
    """Make one run reproducible on one machine: Python, NumPy and TensorFlow seeds, deterministic ops."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    loss: float
    train_acc: float
    metrics: Metrics | None
    seconds: float
    resumed_from: int = 0  # the epoch this delivery of the run started after (0: from the start)

    def as_dict(self) -> dict:
        row = {"epoch": self.epoch, "loss": self.loss, "train_acc": self.train_acc, "seconds": self.seconds}
        row |= {"resumed_from": self.resumed_from} if self.resumed_from else {}
        return row | (self.metrics.as_dict() if self.metrics else {})


@dataclass
class FineTuneSettings:
    learning_rate: float
    epochs: int
    batch_size: int = TRAIN_BATCH
    seed: int = 0  # with the epoch number, it fixes each epoch's image order
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


def save_checkpoint(model, path: Path, epoch: int) -> None:
    """The model's weights and its optimizer's state after `epoch`, in one file written atomically (one file
    per run, overwritten: disk stays bounded by one copy)."""
    arrays = {f"weight_{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    arrays |= {f"optimizer_{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)}
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


def restore_checkpoint(model, path: Path) -> int:
    """Load a checkpoint's weights and optimizer state into a compiled `model`; returns its epoch."""
    with np.load(path, allow_pickle=False) as stored:
        weights = [stored[f"weight_{i}"] for i in range(len(model.get_weights()))]
        model.optimizer.build(model.trainable_variables)
        state = [stored[f"optimizer_{i}"] for i in range(len(model.optimizer.variables))]
        epoch = int(stored["epoch"])
    model.set_weights(weights)
    for variable, value in zip(model.optimizer.variables, state, strict=True):
        variable.assign(value)
    return epoch


def epoch_batches(images, labels, order: np.ndarray, batch_size: int, divisor: float):
    """One epoch's batches in `order` as a tf.data pipeline over the set held once as tensors, each batch
    gathered and scaled on its own (no shuffled or scaled copy of the whole set: a CSAW validation set is
    358 MB as float32, 90 MB as the uint8 it is stored as). Fit them with shuffle=False: Keras would otherwise
    shuffle with Python's global random state, which a resumed run does not share with an uninterrupted one.
    The division is IEEE float32, as `data.scale_pixels`, so the numbers are the same."""
    import tensorflow as tf

    def gather(rows):
        return tf.cast(tf.gather(images, rows), tf.float32) / np.float32(divisor), tf.gather(labels, rows)

    return tf.data.Dataset.from_tensor_slices(order).batch(batch_size).map(gather).prefetch(2)


def fine_tune(
    model,
    train: LabelledSet,
    divisor: float,
    settings: FineTuneSettings,
    evaluate_epoch: Callable[[object], Metrics] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[EpochRecord]:
    """Train `model` in place with Adam on `train` to `settings.epochs` epochs and return one record per epoch
    trained by this call. With `settings.checkpoint`, training starts after the checkpoint's epoch when the
    file exists, and the file is rewritten after every epoch (after `on_epoch`, so a stored point is never
    ahead of its checkpoint). Masks applied with `pruning.apply_masks` stay applied. `evaluate_epoch(model)`
    measures each epoch (CA/ASR on the test sets: reported, never used to choose); `on_epoch` receives each
    record as it is made (progress, storage); `should_stop` is checked between batches and raises Cancelled.
    """
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    import tensorflow as tf

    images, labels = tf.constant(train[0]), tf.constant(np.asarray(train[1]))
    start = restore_checkpoint(model, settings.checkpoint) if checkpoint_epoch(settings.checkpoint) else 0
    records: list[EpochRecord] = []

    class StopCheck(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if should_stop is not None and batch % 20 == 0 and should_stop():
                raise Cancelled(f"cancelled during epoch {len(records) + start + 1}")

    for epoch in range(start + 1, settings.epochs + 1):
        started = time.perf_counter()
        order = epoch_order(len(train[1]), settings.seed, epoch)
        batches = epoch_batches(images, labels, order, settings.batch_size, divisor)
        logs = model.fit(batches, epochs=1, shuffle=False, callbacks=[StopCheck()], verbose=0).history
        record = EpochRecord(
            epoch=epoch,
            loss=float(logs["loss"][-1]),
            train_acc=float(logs["accuracy"][-1]) * 100.0,
            metrics=evaluate_epoch(model) if evaluate_epoch else None,
            seconds=time.perf_counter() - started,
            resumed_from=start,
        )
        records.append(record)
        if on_epoch:
            on_epoch(record)
        if settings.checkpoint:
            save_checkpoint(model, settings.checkpoint, epoch)
    return records
