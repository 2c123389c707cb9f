"""STRIP (Gao, Xu, Wang, Chen, Ranasinghe and Nepal, "STRIP: A Defence Against Trojan Attacks on Deep Neural
Networks", ACSAC 2019): superimpose an input on N clean images and look at the entropy of the network's
answers. A clean input blended with other faces gives varied answers (high entropy); a triggered input keeps
answering the attacker's target whatever it is blended with (low entropy). The input's entropy is the mean,
over the N blends, of -sum_i p_i log2 p_i; it is judged poisoned when that mean is under a threshold set on
clean validation images at a chosen false-rejection rate (the rate's quantile of their entropies).

As the authors' code, a blend is the saturating sum of the two images' pixels (cv2.addWeighted(x, 1, o, 1, 0)
on 8-bit images: x + o clipped to 255). The overlays are drawn from the clean validation set and the
threshold is calibrated on other validation images, never on the overlays themselves.

The functions `superimpose`, `entropy` and `strip_entropy` use numpy alone: the GoodNet bundle's eval.py
carries their source, so it judges an image exactly as the dashboard does.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

OVERLAYS = 100  # N blends per input (the paper's)
CALIBRATION = 500  # clean validation images the threshold is set on, at most
DEFAULT_FRR = 1.0  # percent of clean inputs rejected


def superimpose(image: np.ndarray, overlays: np.ndarray) -> np.ndarray:
    """The image (h, w, c; pixels 0..255) blended with each overlay (n, h, w, c): x + o, clipped to 255."""
    return np.minimum(image[None].astype(np.float32) + overlays.astype(np.float32), 255.0)


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits of each row of class probabilities (0 log 0 = 0)."""
    p = np.clip(probabilities.astype(np.float64), 0.0, 1.0)
    logs = np.log2(p, out=np.zeros_like(p), where=p > 0)
    return -np.sum(p * logs, axis=1)


def strip_entropy(predict: Callable[[np.ndarray], np.ndarray], image: np.ndarray, overlays: np.ndarray) -> float:
    """STRIP's entropy of one image: the mean entropy of `predict` (pixels 0..255 -> class probabilities) over
    the image blended with every overlay."""
    return float(np.mean(entropy(predict(superimpose(image, overlays)))))


@dataclass
class StripDetector:
    """Overlays, the threshold and the false-rejection rate it was set at: what a GoodNet needs to judge."""

    overlays: np.ndarray  # (n, h, w, c), pixels 0..255
    threshold: float  # an entropy under it is poisoned
    frr: float  # percent of clean calibration images under the threshold, as asked

    def poisoned(self, entropies: np.ndarray) -> np.ndarray:
        return np.asarray(entropies) < self.threshold


def entropies(model, pixels: np.ndarray, divisor: float, overlays: np.ndarray, chunk: int = 16) -> np.ndarray:
    """STRIP's entropy of every image of `pixels` (n, h, w, c; 0..255) under `model`, as `strip_entropy`
    computes it, with the blends of `chunk` images in one prediction."""
    from defenses.metrics import predict_probabilities

    found = []
    for start in range(0, len(pixels), chunk):
        images = pixels[start : start + chunk]
        blends = np.concatenate([superimpose(image, overlays) for image in images])
        bits = entropy(predict_probabilities(model, blends, divisor)).reshape(len(images), len(overlays))
        found.append(bits.mean(axis=1))
    return np.concatenate(found) if found else np.zeros(0)


def threshold_at(clean_entropies: np.ndarray, frr: float) -> float:
    """The entropy under which `frr` percent of clean inputs fall (the threshold for that false-rejection
    rate): their `frr / 100` quantile."""
    return float(np.quantile(np.asarray(clean_entropies, dtype=np.float64), frr / 100.0))


def fit_strip(
    model, valid: np.ndarray, divisor: float, frr: float = DEFAULT_FRR, n: int = OVERLAYS, seed: int = 0
) -> tuple[StripDetector, np.ndarray]:
    """A STRIP detector for `model`: `n` overlays drawn from the clean validation pixels, the threshold set on
    up to CALIBRATION other validation images at `frr` percent. Returns it and the calibration entropies."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(valid))
    if len(order) < n + 20:
        raise ValueError(f"STRIP needs at least {n + 20} clean validation images ({n} overlays and 20 to calibrate)")
    overlays = valid[order[:n]]
    calibration = valid[order[n : n + CALIBRATION]]
    clean = entropies(model, calibration, divisor, overlays)
    return StripDetector(overlays.astype(np.float32), threshold_at(clean, frr), frr), clean
