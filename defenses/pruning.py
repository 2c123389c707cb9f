"""Activation profiles, the seed's threshold rule, incremental pruning (Liu et al. 2018) and pruning masks.

A mask maps a Conv2D layer's name to a boolean array over its channels: True keeps the channel. A pruned
channel has its kernel slice and bias set to zero, and a constraint keeps them zero through fine-tuning.
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from defenses.data import scale_pixels
from defenses.metrics import EVAL_BATCH, LabelledSet, percent_equal

Masks = dict[str, np.ndarray]
CACHE_BUDGET_BYTES = 1 * 2**30  # activations kept per dataset for prune-only curves; beyond it, recompute


def conv_layer_names(model) -> list[str]:
    """Conv2D layers in the order the model computes them."""
    return [layer.name for layer in model.layers if type(layer).__name__ == "Conv2D"]


def activation_profile(
    model, pixels: np.ndarray, divisor: float, layers: list[str] | None = None, batch: int = EVAL_BATCH
) -> dict[str, np.ndarray]:
    """Mean post-activation value of every channel of each Conv2D layer over a (clean validation) set,
    averaged over images and spatial positions, computed in one batched pass."""
    import keras

    names = layers or conv_layer_names(model)
    extractor = keras.Model(model.inputs, [model.get_layer(name).output for name in names])
    sums = [np.zeros(model.get_layer(name).filters, dtype=np.float64) for name in names]
    for start in range(0, len(pixels), batch):
        outputs = extractor.predict_on_batch(scale_pixels(pixels[start : start + batch], divisor))
        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
        for total, output in zip(sums, outputs, strict=True):
            total += np.asarray(output, dtype=np.float64).mean(axis=(1, 2)).sum(axis=0)
    return {name: total / len(pixels) for name, total in zip(names, sums, strict=True)}


def threshold_masks(profile: Mapping[str, np.ndarray], threshold: float, layers: list[str] | None = None) -> Masks:
    """The seed's rule: in each chosen layer prune channel c when a_c < T * mean(a). T = 0 prunes nothing."""
    if threshold < 0:
        raise ValueError(f"the pruning threshold must be >= 0, got {threshold}")
    masks = {}
    for name in layers or list(profile):
        means = np.asarray(profile[name])
        masks[name] = np.ones(len(means), bool) if threshold == 0 else means >= threshold * means.mean()
    return masks


def pruned_counts(masks: Mapping[str, np.ndarray]) -> dict[str, int]:
    return {name: int((~keep).sum()) for name, keep in masks.items()}


class KeepMask:
    """Weight constraint that multiplies a kernel or bias by its channel mask after every optimizer step,
    so pruned channels stay exactly zero whatever the gradients say."""

    def __init__(self, keep: np.ndarray):
        self.keep = keep.astype("float32")

    def __call__(self, weight):
        return weight * self.keep


def apply_masks(model, masks: Mapping[str, np.ndarray]) -> None:
    """Zero the pruned channels' kernel slices and biases in place, and pin them at zero for training."""
    for name, keep in masks.items():
        layer = model.get_layer(name)
        if len(keep) != layer.filters:
            raise ValueError(f"mask for {name} has {len(keep)} channels; the layer has {layer.filters}")
        layer.kernel.assign(np.asarray(layer.kernel) * keep.astype("float32"))
        layer.kernel.constraint = KeepMask(keep)
        if layer.use_bias:
            layer.bias.assign(np.asarray(layer.bias) * keep.astype("float32"))
            layer.bias.constraint = KeepMask(keep)


def downstream_side_inputs(model, layer_name: str) -> list[str]:
    """Layers outside `layer_name`'s descendants whose outputs feed one of them (the rest of the cut)."""
    from defenses.modelcheck import inbound_layer_names

    parents = {entry["config"]["name"]: inbound_layer_names(entry) for entry in model.get_config()["layers"]}
    descendants, frontier = set(), {layer_name}
    while frontier:
        frontier = {child for child, ins in parents.items() if set(ins) & frontier} - descendants
        descendants |= frontier
    return sorted({p for d in descendants for p in parents[d]} - descendants - {layer_name})


class MaskedPredictor:
    """Labels of a model under pruning masks, without re-running what the masks cannot change.

    The activations at the first pruned layer (and the side inputs its descendants read) are computed once
    per dataset; each mask set then runs only the layers after that cut. This is valid because a pruned
    channel of a ReLU or linear conv layer outputs exactly zero, so zeroing cached outputs equals zeroing
    the kernel. When the cut is bigger than the input image, or the cache would exceed CACHE_BUDGET_BYTES,
    the full (masked) network runs instead.
    """

    def __init__(self, model, divisor: float, first_layer: str, batch: int = EVAL_BATCH):
        import keras

        self.divisor, self.batch, self.first_layer = divisor, batch, first_layer
        self.model = keras.models.clone_model(model)
        self.model.set_weights(model.get_weights())
        self.original = {
            name: [np.asarray(w) for w in self.model.get_layer(name).get_weights()]
            for name in conv_layer_names(self.model)
        }
        self.touched: list[str] = []
        cut = [first_layer, *downstream_side_inputs(self.model, first_layer)]
        cut_tensors = [self.model.get_layer(name).output for name in cut]
        self.head = keras.Model(self.model.inputs, cut_tensors)
        self.tail = keras.Model(cut_tensors, self.model.outputs)
        activation = getattr(self.model.get_layer(first_layer).activation, "__name__", "")
        self.cacheable = activation in {"relu", "linear"}
        self.cache: dict[int, list[np.ndarray]] = {}

    def _cached(self, pixels: np.ndarray) -> list[np.ndarray] | None:
        key = id(pixels)  # the caller keeps its arrays alive for the predictor's life
        if key not in self.cache:
            per_image = sum(int(np.prod(t.shape[1:])) for t in self.head.outputs) * 4
            input_size = int(np.prod(self.model.inputs[0].shape[1:])) * 4
            # Early conv layers output more bytes than the image itself: reading such a cache back costs as
            # much as recomputing it, so only cuts no larger than the input are cached.
            if not self.cacheable or per_image > input_size or per_image * len(pixels) > CACHE_BUDGET_BYTES:
                return None
            parts = [
                self.head.predict_on_batch(scale_pixels(pixels[i : i + self.batch], self.divisor))
                for i in range(0, len(pixels), self.batch)
            ]
            parts = [p if isinstance(p, list | tuple) else [p] for p in parts]
            self.cache[key] = [np.concatenate([np.asarray(p[j]) for p in parts]) for j in range(len(parts[0]))]
        return self.cache[key]

    def _set_masks(self, masks: Mapping[str, np.ndarray], skip: str | None) -> None:
        """Mask the clone's weights; only layers a mask touched are ever changed, so only they are reset."""
        for name in self.touched:
            self.model.get_layer(name).set_weights(self.original[name])
        self.touched = [name for name in masks if name != skip]
        for name in self.touched:
            keep = masks[name].astype("float32")
            self.model.get_layer(name).set_weights([w * keep for w in self.original[name]])

    def labels(self, masks: Mapping[str, np.ndarray], pixels: np.ndarray) -> np.ndarray:
        cached = self._cached(pixels)
        if cached is None:
            self._set_masks(masks, skip=None)
            return np.concatenate(
                [
                    np.asarray(
                        self.model.predict_on_batch(scale_pixels(pixels[i : i + self.batch], self.divisor))
                    ).argmax(axis=1)
                    for i in range(0, len(pixels), self.batch)
                ]
            )
        self._set_masks(masks, skip=self.first_layer)
        keep = masks.get(self.first_layer, np.ones(cached[0].shape[-1], bool)).astype("float32")
        out = []
        for i in range(0, len(pixels), self.batch * 8):  # the tail is small: bigger batches, fewer calls
            inputs = [cached[0][i : i + self.batch * 8] * keep] + [c[i : i + self.batch * 8] for c in cached[1:]]
            out.append(np.asarray(self.tail.predict_on_batch(inputs if len(inputs) > 1 else inputs[0])).argmax(axis=1))
        return np.concatenate(out)


@dataclass(frozen=True)
class CurvePoint:
    """One point of a prune-only curve: how much was pruned and what it did (percent)."""

    threshold: float | None  # None for incremental steps
    pruned: dict[str, int]
    fraction: float  # pruned channels / channels, over the pruned layers
    valid_acc: float
    ca: float | None
    asr: dict[str, float]


def _point(predictor, masks, threshold, valid, clean, poisoned) -> CurvePoint:
    counts = pruned_counts(masks)
    total = sum(len(keep) for keep in masks.values())
    return CurvePoint(
        threshold=threshold,
        pruned=counts,
        fraction=sum(counts.values()) / total if total else 0.0,
        valid_acc=percent_equal(predictor.labels(masks, valid[0]), valid[1]),
        ca=percent_equal(predictor.labels(masks, clean[0]), clean[1]) if clean else None,
        asr={name: percent_equal(predictor.labels(masks, p), t) for name, (p, t) in poisoned.items()},
    )


def threshold_curve(
    model,
    divisor: float,
    profile: Mapping[str, np.ndarray],
    thresholds: list[float],
    valid: LabelledSet,
    clean: LabelledSet | None = None,
    poisoned: Mapping[str, LabelledSet] | None = None,
    layers: list[str] | None = None,
) -> list[CurvePoint]:
    """Prune-only CA and ASR for each threshold, from cached activations; thresholds that give the same
    masks are evaluated once."""
    layers = layers or conv_layer_names(model)
    order = conv_layer_names(model)
    predictor = MaskedPredictor(model, divisor, first_layer=min(layers, key=order.index))
    seen: dict[bytes, CurvePoint] = {}
    points = []
    for threshold in thresholds:
        masks = threshold_masks(profile, threshold, layers)
        key = b"".join(masks[name].tobytes() for name in layers)
        if key not in seen:
            seen[key] = _point(predictor, masks, threshold, valid, clean, poisoned or {})
        points.append(dataclasses.replace(seen[key], threshold=threshold))
    return points


@dataclass(frozen=True)
class IncrementalResult:
    layer: str
    order: list[int]  # channels in the order they were pruned (ascending mean activation)
    steps: list[CurvePoint]  # steps[k]: k channels pruned
    stop: int  # number of channels pruned at the stop
    masks: Masks  # masks at the stop


def incremental_prune(
    model,
    divisor: float,
    profile: Mapping[str, np.ndarray],
    valid: LabelledSet,
    max_drop: float = 4.0,
    layer: str | None = None,
    clean: LabelledSet | None = None,
    poisoned: Mapping[str, LabelledSet] | None = None,
    full_curve: bool = True,
) -> IncrementalResult:
    """Liu et al.'s pruning defense: prune the layer's channels in increasing order of mean activation,
    one at a time, and stop at the first step whose *validation* accuracy is more than `max_drop` points
    below the unpruned model's. The test sets (`clean`, `poisoned`) are only reported, never consulted.
    With `full_curve` every channel is pruned to draw the whole curve; the stop is the same either way.
    """
    layer = layer or conv_layer_names(model)[-1]
    means = np.asarray(profile[layer])
    order = [int(c) for c in np.argsort(means, kind="stable")]
    predictor = MaskedPredictor(model, divisor, first_layer=layer)
    keep = np.ones(len(means), bool)
    steps = [_point(predictor, {layer: keep.copy()}, None, valid, clean, poisoned or {})]
    baseline, stop = steps[0].valid_acc, None
    for count, channel in enumerate(order, start=1):
        keep[channel] = False
        steps.append(_point(predictor, {layer: keep.copy()}, None, valid, clean, poisoned or {}))
        if stop is None and baseline - steps[-1].valid_acc > max_drop:
            stop = count
            if not full_curve:
                break
    stop = stop if stop is not None else len(order)
    final = np.ones(len(means), bool)
    final[order[:stop]] = False
    return IncrementalResult(layer=layer, order=order, steps=steps, stop=stop, masks={layer: final})
