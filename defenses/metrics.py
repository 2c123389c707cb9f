"""Clean accuracy (CA), attack success rate (ASR) and the seed report's score, all in percent."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from defenses.data import scale_pixels

EVAL_BATCH = 256
LabelledSet = tuple[np.ndarray, np.ndarray]  # (pixels NHWC 0..255, float32 or whole numbers as uint8; labels)


@dataclass(frozen=True)
class Metrics:
    ca: float
    asr: dict[str, float]
    score: float | None

    def as_dict(self) -> dict:
        return {"ca": self.ca, "asr": dict(self.asr), "score": self.score}


def predict_probabilities(model, pixels: np.ndarray, divisor: float, batch: int = EVAL_BATCH) -> np.ndarray:
    """Class probabilities for 0..255 pixels, in batches."""
    if len(pixels) == 0:
        return np.zeros((0, int(model.outputs[0].shape[-1])), dtype=np.float32)
    chunks = [
        model.predict_on_batch(scale_pixels(pixels[i : i + batch], divisor)) for i in range(0, len(pixels), batch)
    ]
    return np.concatenate([np.asarray(chunk) for chunk in chunks])


def predict_labels(model, pixels: np.ndarray, divisor: float, batch: int = EVAL_BATCH) -> np.ndarray:
    return predict_probabilities(model, pixels, divisor, batch).argmax(axis=1)


def percent_equal(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Share of predictions equal to the labels, in percent: CA on a clean set, ASR on a poisoned set
    (whose labels are the attacker's targets)."""
    if len(labels) == 0:
        raise ValueError("cannot compute a rate on an empty set")
    return float(np.mean(predicted == labels) * 100.0)


def percent_unequal(first: np.ndarray, second: np.ndarray) -> float:
    """Share of positions where two labellings differ, in percent: where a GoodNet answers N ('poisoned')."""
    return float(np.mean(first != second) * 100.0)


def seed_score(ca: float, asr: Mapping[str, float]) -> float | None:
    """The seed report's score: (CA + (100 - ASR)) / 2, with the mean ASR over triggers; None without any
    poisoned set."""
    if not asr:
        return None
    return (ca + (100.0 - float(np.mean(list(asr.values()))))) / 2.0


def metrics_from(predict: Callable[[np.ndarray], np.ndarray], clean: LabelledSet, poisoned: Mapping[str, LabelledSet]):
    """Metrics for any labelling function of pixels (a model, a pruned model, a GoodNet)."""
    ca = percent_equal(predict(clean[0]), clean[1])
    asr = {name: percent_equal(predict(pixels), labels) for name, (pixels, labels) in poisoned.items()}
    return Metrics(ca=ca, asr=asr, score=seed_score(ca, asr))


def evaluate(model, divisor: float, clean: LabelledSet, poisoned: Mapping[str, LabelledSet]) -> Metrics:
    """CA on the clean test set, ASR on each poisoned set and the score of a Keras classifier."""
    return metrics_from(lambda pixels: predict_labels(model, pixels, divisor), clean, poisoned)


def guess_divisor(model, clean: LabelledSet, sample: int = 512) -> dict[float, float]:
    """Accuracy on a clean sample with inputs divided by 255 and with raw pixels: a model scored with the
    wrong scaling is far worse, which lets an upload form warn the user."""
    pixels, labels = clean[0][:sample], clean[1][:sample]
    return {divisor: percent_equal(predict_labels(model, pixels, divisor), labels) for divisor in (255.0, 1.0)}


def roc_curve(clean_scores: np.ndarray, poisoned_scores: np.ndarray, points: int = 101) -> dict[str, list[float]]:
    """A detector's ROC curve from its scores (higher = more suspicious) on clean and on poisoned inputs:
    false-alarm and detection rates in percent, at up to `points` thresholds spread over the scores'
    quantiles, from "flag everything" to "flag nothing"."""
    clean, poisoned = np.asarray(clean_scores, dtype=np.float64), np.asarray(poisoned_scores, dtype=np.float64)
    every = np.concatenate([clean, poisoned])
    cuts = np.unique(np.quantile(every, np.linspace(0.0, 1.0, points), method="lower"))  # scores themselves
    curve = [(100.0, 100.0)]
    for cut in [*cuts, np.inf]:
        point = (float(np.mean(clean >= cut) * 100), float(np.mean(poisoned >= cut) * 100))
        if point != curve[-1]:
            curve.append(point)
    return {"false_alarm": [fa for fa, _ in curve], "detection": [d for _, d in curve]}


def auc(clean_scores: np.ndarray, poisoned_scores: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a poisoned input scores above a clean one (ties count one
    half), by the Mann-Whitney U statistic, exact and free of any threshold grid."""
    clean, poisoned = np.asarray(clean_scores, dtype=np.float64), np.asarray(poisoned_scores, dtype=np.float64)
    _, inverse, counts = np.unique(np.concatenate([clean, poisoned]), return_inverse=True, return_counts=True)
    before = np.cumsum(counts) - counts  # scores below each distinct value
    ranks = (before + (counts + 1) / 2.0)[inverse]  # tied scores share their mean rank
    u = ranks[len(clean) :].sum() - len(poisoned) * (len(poisoned) + 1) / 2
    return float(u / (len(clean) * len(poisoned)))
