"""Prune-only curves: ours (activations cached at the pruned layer, only the layers after it re-run, equal
mask sets evaluated once) against the naive way (prune a copy and re-predict the whole network per step).

    .venv/bin/python -m bench.prune_curve [--images 4000]

Prints seconds and each figure as a multiple of one forward pass over the same images, measured in one run,
and checks that both ways give the same accuracies.
"""

import argparse

import numpy as np

from bench.common import jittered_crops, real_badnet, timed
from defenses.metrics import percent_equal, predict_labels
from defenses.pruning import activation_profile, apply_masks, incremental_prune, threshold_curve, threshold_masks

THRESHOLDS = [round(t / 10, 1) for t in range(21)]


def naive_accuracy(model, masks, pixels, labels):
    import keras

    pruned = keras.models.clone_model(model)
    pruned.set_weights(model.get_weights())
    apply_masks(pruned, masks)
    return percent_equal(predict_labels(pruned, pixels, 255.0), labels)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=4000)
    args = parser.parse_args()
    model = real_badnet()
    pixels, labels = jittered_crops(args.images)
    valid = (pixels, labels)
    predict_labels(model, pixels[:512], 255.0)  # warm-up: graph tracing is not part of any figure
    t: dict[str, float] = {}
    with timed(t, "one forward pass"):
        predict_labels(model, pixels, 255.0)
    profile = activation_profile(model, pixels, 255.0)
    last = "conv_4"

    with timed(t, "threshold curve, last conv layer: ours"):
        ours = threshold_curve(model, 255.0, profile, THRESHOLDS, valid, layers=[last])
    with timed(t, "threshold curve, last conv layer: naive"):
        naive = [naive_accuracy(model, threshold_masks(profile, th, [last]), pixels, labels) for th in THRESHOLDS]
    same_threshold = np.allclose([p.valid_acc for p in ours], naive)

    with timed(t, "threshold curve, all conv layers: ours"):
        ours_all = threshold_curve(model, 255.0, profile, THRESHOLDS, valid)
    with timed(t, "threshold curve, all conv layers: naive"):
        naive_all = [naive_accuracy(model, threshold_masks(profile, th), pixels, labels) for th in THRESHOLDS]
    same_all = np.allclose([p.valid_acc for p in ours_all], naive_all)

    with timed(t, f"incremental, every channel of {last}: ours"):
        result = incremental_prune(model, 255.0, profile, valid, max_drop=4.0, layer=last)
    with timed(t, f"incremental, every channel of {last}: naive"):
        naive_steps = []
        keep = np.ones(len(profile[last]), bool)
        naive_steps.append(naive_accuracy(model, {last: keep.copy()}, pixels, labels))
        for channel in result.order:
            keep[channel] = False
            naive_steps.append(naive_accuracy(model, {last: keep.copy()}, pixels, labels))
    same_incremental = np.allclose([s.valid_acc for s in result.steps], naive_steps)

    forward = t["one forward pass"]
    print(f"{args.images} images; one forward pass {forward:.2f}s\n")
    print(f"{'figure':<48}{'seconds':>9}{'x forward':>11}")
    for name, seconds in t.items():
        print(f"{name:<48}{seconds:>9.2f}{seconds / forward:>11.1f}")
    print()
    for kind in (
        "threshold curve, last conv layer",
        "threshold curve, all conv layers",
        f"incremental, every channel of {last}",
    ):
        print(f"{kind}: ours is {t[kind + ': naive'] / t[kind + ': ours']:.1f}x faster than naive")
    print(
        f"\nsame accuracies as naive: thresholds {same_threshold}, all layers {same_all}, incremental "
        f"{same_incremental}"
    )


if __name__ == "__main__":
    main()
