"""Neural Cleanse (Wang, Yao, Shan, Li, Viswanath, Zheng and Zhao, "Neural Cleanse: Identifying and Mitigating
Backdoor Attacks in Neural Networks", IEEE S&P 2019): for every label, the smallest trigger that sends clean
images to it. A stamped image is (1 - m) * x + m * p with a mask m (one value per pixel position, in [0, 1])
and a pattern p (pixels); the optimisation minimises cross-entropy to the label plus cost * |m|_1, with the
cost raised while the trigger works on 99 % of a batch and lowered while it does not, and keeps the smallest
mask that worked. A label an attacker targets needs a far smaller mask than the others: its anomaly index,
|L1 - median| / (1.4826 * MAD) over every label's mask norm, is above 2 on the small side.

Deviation, said on the page: labels are flagged by the index of log L1, not of L1 (the paper's index is
kept and shown beside it). Mask norms are positive and skewed: on the synthetic faces of the tiny preset the
clean labels' norms run from 37 to 349 (1000 steps each), so the patch target's 5.9, twenty times under the
median of 120, has a raw-L1 index of only 1.7; its log-L1 index is far above 2.

Batched: labels are optimised together, a group of them on one batch of clean images per step (one forward
pass of labels x images), so 1283 labels cost 1283 / group steps' worth of passes per step, not 1283 runs.
With more labels than `prescreen_above`, every label first gets a short run (`prescreen_steps`); then the
`prescreen_keep` labels whose masks came out smallest, and as many others drawn at random, get the full run.
A fully run label's anomaly index is measured against the random ones' full-run norms (the same budget, so
the median and MAD are not pulled down by the chosen small ones); the others keep the index of their short
run among every label's short run. A pre-screened scan can miss a target that the short run did not rank
among the smallest; the page says when a scan was pre-screened.

Deviation: a fixed number of steps per label with the cost adjusted every `window` steps (the authors' code:
epochs over the data with patience counters); the mask and pattern are tanh-parameterised as theirs.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from defenses.data import scale_pixels

MAD_CONSISTENCY = 1.4826  # makes the MAD of normal data estimate its standard deviation
ANOMALY_THRESHOLD = 2.0


@dataclass(frozen=True)
class ScanSettings:
    steps: int = 300  # optimisation steps per label
    batch: int = 24  # clean images per label and step
    group: int = 32  # labels optimised together
    lr: float = 0.1
    init_cost: float = 1e-3
    success: float = 99.0  # percent of a batch a reversed trigger must send to its label
    window: int = 10  # steps between cost adjustments
    prescreen_above: int = 200  # more labels than this: a short run first for every label
    prescreen_steps: int = 40
    prescreen_keep: int = 40  # labels with the smallest short-run masks get the full run, and as many at random
    seed: int = 0


@dataclass
class ReversedTrigger:
    label: int
    mask: np.ndarray  # (h, w), values in [0, 1]
    pattern: np.ndarray  # (h, w, c), pixels 0..255
    norm: float  # |m|_1
    success: float  # percent of the clean images that the stamped trigger sends to `label`
    steps: int  # how long it was optimised (the full run, or the pre-screen's)


@dataclass
class Scan:
    triggers: dict[int, ReversedTrigger]
    anomaly: dict[int, float] = field(default_factory=dict)  # label -> index of log L1 (small side positive)
    paper_anomaly: dict[int, float] = field(default_factory=dict)  # label -> the paper's index, of raw L1
    flagged: list[int] = field(default_factory=list)  # labels whose index is above ANOMALY_THRESHOLD
    prescreened: bool = False
    seconds: float = 0.0


def scan_image_passes(n_classes: int, settings: ScanSettings = ScanSettings()) -> int:
    """Images a scan of `n_classes` labels passes forward and backward (each step of each label's reversal
    takes a batch): what it costs beside training, for budgets. An upper bound: a label may stop early."""
    if n_classes <= settings.prescreen_above:
        return n_classes * settings.steps * settings.batch
    full = min(n_classes, 2 * settings.prescreen_keep)  # the smallest labels and as many at random
    return (n_classes * settings.prescreen_steps + full * settings.steps) * settings.batch


def stamp(pixels: np.ndarray, mask: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Images (n, h, w, c) with a trigger stamped: (1 - m) x + m p, pixels 0..255."""
    weight = mask[..., None] if mask.ndim == 2 else mask
    return ((1.0 - weight) * pixels + weight * pattern).astype(np.float32)


def anomaly_indices(norms: dict[int, float], reference: list[float] | None = None, log: bool = True) -> dict:
    """Each label's anomaly index, (median - v) / (1.4826 * MAD) of the values v, with the median and MAD
    taken over `reference` (default: every norm of `norms`): positive for a mask smaller than the median
    (what a target's is). With `log` (Prunelab's default) v is log L1; without, the paper's raw L1."""

    def value(norm: float) -> float:
        return float(np.log(max(norm, 1e-6))) if log else float(norm)

    values = np.array([value(v) for v in (norms.values() if reference is None else reference)], dtype=np.float64)
    median = float(np.median(values))
    mad = MAD_CONSISTENCY * float(np.median(np.abs(values - median)))
    return {label: (median - value(norm)) / mad if mad > 0 else 0.0 for label, norm in norms.items()}


def flagged_labels(anomaly: dict[int, float], threshold: float = ANOMALY_THRESHOLD) -> list[int]:
    """The labels whose index is above `threshold` (2 in the paper), most anomalous first."""
    return sorted((label for label, index in anomaly.items() if index > threshold), key=lambda k: -anomaly[k])


def reverse_triggers(
    model,
    clean: np.ndarray,
    divisor: float,
    labels: list[int],
    settings: ScanSettings,
    steps: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[int, ReversedTrigger]:
    """The reversed trigger of every label of `labels` on `clean` images (n, h, w, c; 0..255), optimised
    `steps` (default: settings.steps) steps in groups of `settings.group` labels; `on_progress(done, of)`
    hears before the first group (0 done: the page can say it started) and after each group."""
    steps = settings.steps if steps is None else steps
    found: dict[int, ReversedTrigger] = {}
    for start in range(0, len(labels), settings.group):
        if on_progress is not None:
            on_progress(len(found), len(labels))
        group = labels[start : start + settings.group]
        found |= _reverse_group(model, clean, divisor, group, settings, steps, should_stop)
    if on_progress is not None:
        on_progress(len(found), len(labels))
    return found


def _reverse_group(model, clean, divisor, labels, settings, steps, should_stop):
    import keras
    import tensorflow as tf

    from defenses.finetune import Cancelled

    k, (h, w, c) = len(labels), clean.shape[1:]
    rng = np.random.default_rng(settings.seed + labels[0])
    mask_raw = tf.Variable(tf.zeros((k, h, w, 1)))  # tanh(0) / 2 + 0.5: every mask starts at one half
    pattern_raw = tf.Variable(tf.zeros((k, h, w, c)))
    targets = tf.constant(np.repeat(np.array(labels), settings.batch))
    costs = np.full(k, settings.init_cost, dtype=np.float32)
    optimizer = keras.optimizers.Adam(learning_rate=settings.lr, beta_1=0.5, beta_2=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction="none")
    scale = np.float32(255.0 / divisor)  # the pattern in the network's input units

    def current():
        mask = tf.tanh(mask_raw) / 2.0 + 0.5
        pattern = (tf.tanh(pattern_raw) / 2.0 + 0.5) * scale
        return mask, pattern

    @tf.function
    def step(x, cost):
        with tf.GradientTape() as tape:
            mask, pattern = current()
            stamped = (1.0 - mask[:, None]) * x[None] + (mask * pattern)[:, None]  # (k, b, h, w, c)
            outputs = model(tf.reshape(stamped, (-1, h, w, c)), training=False)
            per_image = tf.reshape(loss_fn(targets, outputs), (k, -1))
            norms = tf.reduce_sum(mask, axis=[1, 2, 3])
            loss = tf.reduce_sum(tf.reduce_mean(per_image, axis=1) + cost * norms)
        variables = [mask_raw, pattern_raw]
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        hits = tf.equal(tf.argmax(outputs, axis=1), tf.cast(targets, tf.int64))
        return tf.reduce_mean(tf.reshape(tf.cast(hits, tf.float32), (k, -1)), axis=1) * 100.0, norms

    best_norm = np.full(k, np.inf)
    best_mask, best_pattern = np.zeros((k, h, w)), np.zeros((k, h, w, c))
    window_success = np.zeros(k)
    inputs = scale_pixels(clean, divisor)
    for number in range(1, steps + 1):
        batch = inputs[rng.integers(0, len(inputs), settings.batch)]
        success, norms = step(tf.constant(batch), tf.constant(costs))
        success, norms = success.numpy(), norms.numpy()
        window_success += success
        better = (success >= settings.success) & (norms < best_norm)
        if better.any():
            mask, pattern = current()
            best_norm[better] = norms[better]
            best_mask[better] = mask.numpy()[better, ..., 0]
            best_pattern[better] = pattern.numpy()[better] * divisor  # back to pixels 0..255
        if number % settings.window == 0:  # the paper's cost schedule: up while it works, down while not
            working = window_success / settings.window >= settings.success
            costs = np.where(working, costs * 1.5, costs / 1.5**1.5).astype(np.float32)
            window_success[:] = 0
            if should_stop is not None and should_stop():
                raise Cancelled(f"cancelled at step {number} of the trigger scan")
    mask, pattern = current()
    never = ~np.isfinite(best_norm)  # no step reached the success rate: keep the last, said by its success
    best_mask[never] = mask.numpy()[never, ..., 0]
    best_pattern[never] = pattern.numpy()[never] * divisor
    result = {}
    for index, label in enumerate(labels):
        stamped = stamp(clean, best_mask[index], best_pattern[index])
        predicted = np.argmax(model.predict(scale_pixels(stamped, divisor), verbose=0, batch_size=256), axis=1)
        result[label] = ReversedTrigger(
            label=label,
            mask=best_mask[index].astype(np.float32),
            pattern=best_pattern[index].astype(np.float32),
            norm=float(best_mask[index].sum()),
            success=float(np.mean(predicted == label) * 100.0),
            steps=steps,
        )
    return result


def ranked_rows(result: Scan) -> list[dict]:
    """Every label's figures, most anomalous first: mask L1, anomaly index (of log L1), the paper's index (of
    raw L1), the reversed trigger's success rate, its steps and whether it is flagged (pages and CLI alike)."""
    ranked = sorted(result.triggers, key=lambda label: -result.anomaly[label])
    return [
        {
            "label": label,
            "l1": round(result.triggers[label].norm, 2),
            "anomaly": round(result.anomaly[label], 2),
            "paper_anomaly": round(result.paper_anomaly[label], 2),
            "success": round(result.triggers[label].success, 1),
            "steps": result.triggers[label].steps,
            "flagged": label in result.flagged,
        }
        for label in ranked
    ]


def smallest_labels(result: Scan, count: int) -> list[int]:
    """The `count` labels whose reversed triggers have the smallest masks (the likeliest targets to look at)."""
    return sorted(result.triggers, key=lambda label: result.triggers[label].norm)[:count]


def scan(
    model,
    clean: np.ndarray,
    divisor: float,
    n_classes: int,
    settings: ScanSettings = ScanSettings(),
    should_stop: Callable[[], bool] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> Scan:
    """Neural Cleanse's scan of a BadNet on clean images: every label's reversed trigger, anomaly index and
    the flagged labels (pre-screened when there are more than `settings.prescreen_above` labels). `on_stage`
    hears how far it is, in words ("Neural Cleanse scan: 64 of 100 labels")."""
    import time

    def progress(phase: str):
        if on_stage is None:
            return None
        return lambda done, of: on_stage(f"Neural Cleanse scan{phase}: {done} of {of} labels")

    started = time.perf_counter()
    labels = list(range(n_classes))
    prescreened = n_classes > settings.prescreen_above
    if not prescreened:
        triggers = reverse_triggers(model, clean, divisor, labels, settings, None, should_stop, progress(""))
        reference = None
    else:
        short_steps = settings.prescreen_steps
        short = reverse_triggers(
            model, clean, divisor, labels, settings, short_steps, should_stop, progress(", short runs")
        )
        smallest = sorted(labels, key=lambda label: short[label].norm)[: settings.prescreen_keep]
        others = [label for label in labels if label not in set(smallest)]
        picked = np.random.default_rng(settings.seed).choice(others, min(len(others), len(smallest)), replace=False)
        sample = sorted(int(label) for label in picked)
        full_labels = sorted(smallest) + sample
        full = reverse_triggers(
            model, clean, divisor, full_labels, settings, None, should_stop, progress(", full runs")
        )
        reference = [full[label].norm for label in sample]
        triggers = short | full

    def indices(log: bool) -> dict[int, float]:
        """Each label's index; with a pre-screen, fully run labels against the random ones' full-run norms
        and the others against every label's short run."""
        norms = {label: trigger.norm for label, trigger in triggers.items()}
        if reference is None:
            return anomaly_indices(norms, log=log)
        found = anomaly_indices({label: short[label].norm for label in labels}, log=log)
        return found | anomaly_indices({label: norms[label] for label in full}, reference, log=log)

    anomaly = indices(log=True)
    seconds = time.perf_counter() - started
    return Scan(triggers, anomaly, indices(log=False), flagged_labels(anomaly), prescreened, seconds)
