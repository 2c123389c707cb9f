"""Masked fine-tuning against a plain Keras `fit` on the same data: the pruning masks are weight
constraints applied inside the compiled train step, so they should cost next to nothing.

    .venv/bin/python -m bench.masked_finetune [--images 4000 --rounds 3]

Alternates plain and masked epochs (so machine noise hits both) and prints the median epoch times and their
ratio; also checks the pruned channels are still zero at the end.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = jittered_crops(args.images)
    plain, masked = real_badnet(), real_badnet()
    masks = threshold_masks(activation_profile(masked, data[0], 255.0), 1.0)
    apply_masks(masked, masks)
    epoch_seconds(plain, data), epoch_seconds(masked, data)  # warm-up: compile both train steps
    times = {"plain fit": [], "masked fit": []}
    for _ in range(args.rounds):
        times["plain fit"].append(epoch_seconds(plain, data))
        times["masked fit"].append(epoch_seconds(masked, data))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"{name:<12} median epoch {value:.2f}s over {args.rounds} rounds ({args.images} images, batch 32)")
    print(f"masked / plain = {medians['masked fit'] / medians['plain fit']:.3f}")
    still_zero = all(np.all(np.asarray(masked.get_layer(n).kernel)[..., ~keep] == 0) for n, keep in masks.items())
    print(f"pruned channels still zero after {args.rounds + 1} epochs: {still_zero}")


if __name__ == "__main__":
    main()
