"""Fine-tuning a (pruned) network on the defender's clean validation set, with metrics after every epoch."""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from defenses.data import scale_pixels
from defenses.metrics import LabelledSet, Metrics

TRAIN_BATCH = 32


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

    def as_dict(self) -> dict:
        row = {"epoch": self.epoch, "loss": self.loss, "train_acc": self.train_acc, "seconds": self.seconds}
        return row | (self.metrics.as_dict() if self.metrics else {})


@dataclass
class FineTuneSettings:
    learning_rate: float
    epochs: int
    batch_size: int = TRAIN_BATCH
    checkpoint_epochs: set[int] = field(default_factory=set)
    checkpoint_dir: Path | None = None


class Cancelled(Exception):
    """Raised when `should_stop` asked training to end; the epochs finished so far are kept."""


def save_atomically(model, path: Path) -> None:
    """Write to a temporary name, then rename: a crash never leaves a half-written model behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    model.save(partial)
    os.replace(partial, path)


def fine_tune(
    model,
    train: LabelledSet,
    divisor: float,
    settings: FineTuneSettings,
    evaluate_epoch: Callable[[object], Metrics] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[EpochRecord]:
    """Train `model` in place with Adam on `train` for `settings.epochs` epochs and return one record per
    epoch. Masks applied with `pruning.apply_masks` stay applied. `evaluate_epoch(model)` measures each
    epoch (CA/ASR on the test sets: reported, never used to choose); `on_epoch` receives each record as it
    is made (progress, storage); `should_stop` is checked between batches and raises Cancelled.
    """
    import time

    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    inputs, labels = scale_pixels(train[0], divisor), np.asarray(train[1])
    records: list[EpochRecord] = []

    class Recorder(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if should_stop is not None and batch % 20 == 0 and should_stop():
                raise Cancelled(f"cancelled during epoch {len(records) + 1}")

        def on_epoch_end(self, epoch, logs=None):
            number = epoch + 1
            if number in settings.checkpoint_epochs and settings.checkpoint_dir:
                save_atomically(self.model, settings.checkpoint_dir / f"epoch-{number:03d}.keras")
            record = EpochRecord(
                epoch=number,
                loss=float(logs["loss"]),
                train_acc=float(logs["accuracy"]) * 100.0,
                metrics=evaluate_epoch(self.model) if evaluate_epoch else None,
                seconds=time.perf_counter() - self.started,
            )
            records.append(record)
            if on_epoch:
                on_epoch(record)

    model.fit(
        inputs,
        labels,
        batch_size=settings.batch_size,
        epochs=settings.epochs,
        shuffle=True,
        callbacks=[Recorder()],
        verbose=0,
    )
    return records
