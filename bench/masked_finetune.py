"""The shared training loop (defenses.finetune.fine_tune: a compiled step a batch, tf.data batches, a checkpoint
file) against Keras' own `fit` on the same data, and masked fine-tuning against unmasked: the loop should cost
what `fit` costs, and the pruning masks (weight constraints applied after every step) next to nothing.

    .venv/bin/python -m bench.masked_finetune [--images 4000 --rounds 3]

Alternates the three kinds of epoch (so machine noise hits each) and prints the median epoch times and their
ratios; also checks the pruned channels are still zero at the end.
"""

import argparse
import statistics
import time

import numpy as np

from bench.common import jittered_crops, real_badnet
from defenses.finetune import FineTuneSettings, fine_tune
from defenses.pruning import activation_profile, apply_masks, threshold_masks


def epoch_seconds(model, data) -> float:
    settings = FineTuneSettings(learning_rate=1e-3, epochs=1)
    start = time.perf_counter()
    fine_tune(model, data, 255.0, settings)
    return time.perf_counter() - start


def keras_fit_seconds(model, data) -> float:
    """The naive way: compile and `fit` one epoch on one scaled copy of the set, Keras shuffling it."""
    import keras

    start = time.perf_counter()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(data[0] / np.float32(255.0), data[1], batch_size=32, epochs=1, verbose=0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = jittered_crops(args.images)
    plain, masked, keras_model = real_badnet(), real_badnet(), real_badnet()
    masks = threshold_masks(activation_profile(masked, data[0], 255.0), 1.0)
    apply_masks(masked, masks)
    epoch_seconds(plain, data), epoch_seconds(masked, data), keras_fit_seconds(keras_model, data)  # warm-up
    times = {"keras fit": [], "shared loop": [], "masked loop": []}
    for _ in range(args.rounds):
        times["keras fit"].append(keras_fit_seconds(keras_model, data))
        times["shared loop"].append(epoch_seconds(plain, data))
        times["masked loop"].append(epoch_seconds(masked, data))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"{name:<12} median epoch {value:.2f}s over {args.rounds} rounds ({args.images} images, batch 32)")
    print(f"shared loop / keras fit = {medians['shared loop'] / medians['keras fit']:.3f}")
    print(f"masked / plain = {medians['masked loop'] / medians['shared loop']:.3f}")
    still_zero = all(np.all(np.asarray(masked.get_layer(n).kernel)[..., ~keep] == 0) for n, keep in masks.items())
    print(f"pruned channels still zero after {args.rounds + 1} epochs: {still_zero}")


if __name__ == "__main__":
    main()
