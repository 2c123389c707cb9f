"""The GoodNet: a BadNet B and its repaired network B' answering together, and its standalone bundle.

G(x) = argmax B'(x) when it equals argmax B(x), else N ("this input is poisoned").
"""

import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defenses import data, strip
from defenses.metrics import LabelledSet, percent_equal, predict_probabilities, seed_score


def goodnet_labels(
    bad_probabilities: np.ndarray, repaired_probabilities: np.ndarray, flagged: np.ndarray | None = None
) -> np.ndarray:
    """The repaired network's class where both networks agree, else N (the number of classes); N also where
    `flagged` (a second detector, STRIP: its entropy under the threshold) is true."""
    n_classes = bad_probabilities.shape[1]
    bad, repaired = bad_probabilities.argmax(axis=1), repaired_probabilities.argmax(axis=1)
    poisoned = bad != repaired if flagged is None else (bad != repaired) | np.asarray(flagged, dtype=bool)
    return np.where(poisoned, n_classes, repaired)


def disagreement_scores(bad_probabilities: np.ndarray, repaired_probabilities: np.ndarray) -> np.ndarray:
    """How far the repaired network withdrew its support from the BadNet's answer, p_B(c) - p_R(c) with c the
    BadNet's class: the disagreement rule as a score (the rule answers N when the two classes differ), for
    its ROC curve."""
    chosen = bad_probabilities.argmax(axis=1)
    rows = np.arange(len(chosen))
    return bad_probabilities[rows, chosen] - repaired_probabilities[rows, chosen]


@dataclass(frozen=True)
class GoodNetMetrics:
    ca: float  # an N on a clean image counts as wrong
    asr: dict[str, float]
    detection: dict[str, float]  # share of poisoned inputs answered N
    false_alarm: float  # share of clean inputs answered N
    score: float | None

    def as_dict(self) -> dict:
        return self.__dict__.copy()


class GoodNet:
    def __init__(self, bad_model, repaired_model, divisor: float):
        if bad_model.outputs[0].shape[-1] != repaired_model.outputs[0].shape[-1]:
            raise ValueError("the BadNet and the repaired network have different class counts")
        self.bad, self.repaired, self.divisor = bad_model, repaired_model, divisor
        self.n_classes = int(bad_model.outputs[0].shape[-1])

    def votes(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (
            predict_probabilities(self.bad, pixels, self.divisor),
            predict_probabilities(self.repaired, pixels, self.divisor),
        )

    def labels(self, pixels: np.ndarray) -> np.ndarray:
        return goodnet_labels(*self.votes(pixels))

    def evaluate(self, clean: LabelledSet, poisoned: Mapping[str, LabelledSet]) -> GoodNetMetrics:
        clean_answers = self.labels(clean[0])
        poisoned_answers = {name: (self.labels(p), t) for name, (p, t) in poisoned.items()}
        ca = percent_equal(clean_answers, clean[1])
        asr = {name: percent_equal(answers, t) for name, (answers, t) in poisoned_answers.items()}
        return GoodNetMetrics(
            ca=ca,
            asr=asr,
            detection={name: float(np.mean(a == self.n_classes) * 100) for name, (a, _) in poisoned_answers.items()},
            false_alarm=float(np.mean(clean_answers == self.n_classes) * 100),
            score=seed_score(ca, asr),
        )


FIGURE_IMAGES = 500  # images per test set the detector figures are measured on, at most


def detector_figures(
    goodnet: "GoodNet", detector, clean: LabelledSet, poisoned: Mapping[str, LabelledSet], limit: int = FIGURE_IMAGES
) -> dict:
    """A GoodNet's detectors on test sets (the first `limit` images of each): per rule (the two networks'
    disagreement, STRIP's entropy on the BadNet under its threshold, and either of them, which is the
    GoodNet's answer) the false alarms on clean images and the detection per trigger, in percent; per
    trigger the ROC curve and AUC of the disagreement score and of STRIP's (lower entropy = more
    suspicious)."""
    from defenses.metrics import auc, roc_curve
    from defenses.strip import entropies

    def scored(pixels: np.ndarray) -> dict:
        bad, repaired = goodnet.votes(pixels)
        strip = entropies(goodnet.bad, pixels, goodnet.divisor, detector.overlays)
        return {
            "disagreement": bad.argmax(axis=1) != repaired.argmax(axis=1),
            "STRIP": detector.poisoned(strip),
            "disagreement score": disagreement_scores(bad, repaired),
            "STRIP score": -strip,
        }

    clean_scores = scored(clean[0][:limit])
    sets = {name: scored(pixels[:limit]) for name, (pixels, _) in poisoned.items()}
    rules = {}
    for rule in ("disagreement", "STRIP", "either"):

        def fired(scores: dict, rule: str = rule) -> np.ndarray:
            return scores["disagreement"] | scores["STRIP"] if rule == "either" else scores[rule]

        rules[rule] = {
            "false_alarm": float(np.mean(fired(clean_scores)) * 100),
            "detection": {name: float(np.mean(fired(scores)) * 100) for name, scores in sets.items()},
        }
    roc = {
        name: {
            rule: roc_curve(clean_scores[f"{rule} score"], scores[f"{rule} score"])
            | {"auc": auc(clean_scores[f"{rule} score"], scores[f"{rule} score"])}
            for rule in ("disagreement", "STRIP")
        }
        for name, scores in sets.items()
    }
    images = {"clean": len(clean_scores["STRIP"]), **{name: len(s["STRIP"]) for name, s in sets.items()}}
    return {"rules": rules, "roc": roc, "images": images, "threshold": detector.threshold, "frr": detector.frr}


# eval.py is defenses/bundle_eval.py with its library imports replaced by their source
LIBRARY_START, LIBRARY_END = "# LIBRARY START", "# LIBRARY END"
LIBRARY_IMPORTS = (
    "import warnings\nfrom collections.abc import Callable\nfrom dataclasses import dataclass\n"
    "from typing import BinaryIO\n\n"
)


def eval_script_source() -> str:
    """eval.py for a bundle: defenses/bundle_eval.py (a module of this library, linted and tested in-process)
    with its imports of the library replaced by those functions' own source, so it runs without Prunelab and
    judges an image exactly as the library does (one scaling rule everywhere)."""
    module = (Path(__file__).parent / "bundle_eval.py").read_text()
    head, rest = module.split(LIBRARY_START, 1)
    tail = rest.split(LIBRARY_END, 1)[1].split("\n", 1)[1]
    constants = (
        f"IMAGE_SHAPE = {data.IMAGE_SHAPE}\nMAX_IMAGE_PIXELS = {data.MAX_IMAGE_PIXELS}\n"
        f"IMAGE_FORMATS = {data.IMAGE_FORMATS}\n"
    )
    parts = [data.DataError, data.LoadedImage, data.scale_pixels, data.load_image, goodnet_labels]
    parts += [strip.superimpose, strip.entropy, strip.strip_entropy]
    library = LIBRARY_IMPORTS + constants + "\n\n" + "\n\n".join(inspect.getsource(p) for p in parts)
    return head + "# Prunelab's own functions, copied from the library at export:\n" + library + "\n" + tail


def export_bundle(
    goodnet: GoodNet, out_dir: str | Path, extra: dict | None = None, detector=None, preset: str | None = None
) -> Path:
    """Write the networks, bundle.json, README.txt and eval.py to `out_dir`, and with a STRIP `detector` its
    overlays (strip_overlays.npy) and threshold; return the folder.

    Each network is written for Keras 3 (`.keras`) and for the Keras 2 API (`*_keras2.h5`, full model), and
    with `preset` (the BadNet's architecture preset) as Keras 2 weights too (`*_keras2_weights.h5`) when it
    has that architecture. A network Keras 2 cannot express is left in Keras 3 only, and README.txt says why.
    """
    from defenses.export import ExportRefused, save_keras2_model, save_keras2_weights
    from defenses.finetune import save_atomically

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    networks = {"bad": ("bad_net", goodnet.bad), "repaired": ("repaired_net", goodnet.repaired)}
    for stem, model in networks.values():
        save_atomically(model, out / f"{stem}.keras")
    meta = {
        "divisor": goodnet.divisor,
        "n_classes": goodnet.n_classes,
        "input_shape": list(goodnet.bad.inputs[0].shape[1:]),
        **(extra or {}),
    }
    try:
        for stem, model in networks.values():
            save_keras2_model(model, out / f"{stem}_keras2.h5")
        meta["keras2"] = {role: f"{stem}_keras2.h5" for role, (stem, _) in networks.items()}
    except ExportRefused as refusal:  # eval.py then needs Keras 3; the README says why
        for stem in ("bad_net", "repaired_net"):
            (out / f"{stem}_keras2.h5").unlink(missing_ok=True)
        meta["keras2_refused"] = str(refusal)
    if preset:
        weights = {}
        for role, (stem, model) in networks.items():
            try:
                weights[role] = save_keras2_weights(model, out / f"{stem}_keras2_weights.h5", preset).name
            except ExportRefused:  # e.g. a repaired network uploaded with another architecture
                continue
        if weights:
            meta["keras2_weights"] = {"preset": preset, **weights}
    if detector is not None:
        np.save(out / "strip_overlays.npy", detector.overlays.astype(np.float32), allow_pickle=False)
        meta["strip"] = {"threshold": detector.threshold, "frr": detector.frr, "overlays": len(detector.overlays)}
    (out / "bundle.json").write_text(json.dumps(meta, indent=2))
    (out / "README.txt").write_text(bundle_readme(meta))
    (out / "eval.py").write_text(eval_script_source())
    return out


def bundle_readme(meta: dict) -> str:
    """The bundle's README.txt: what each file is and which Keras loads it."""
    name = meta.get("name")
    lines = [
        f"GoodNet {name!r} exported by Prunelab" if name else "A GoodNet exported by Prunelab",
        "",
        "    python eval.py IMAGE     prints one class in [0, N]; N = "
        f"{meta['n_classes']} means 'this input is poisoned'",
        "",
        "eval.py needs Python 3.11+, numpy and pillow, and Keras 3 (pip install keras tensorflow): it reads the",
        ".keras files. Without Keras 3, or with GOODNET_KERAS=2 set, it reads the Keras 2 files below with the",
        "Keras 2 API: tf_keras (pip install tf_keras), keras 2.x, or TensorFlow 2.x's tf.keras up to TF 2.15.",
        "",
        "Prunelab tests the Keras 2 files by loading them with tf_keras 2.21 and comparing the predictions",
        "with the Keras 3 files'.",
        "",
        "bad_net.keras, repaired_net.keras    the BadNet and its repaired network, Keras 3 (keras.models.load_model)",
    ]
    if "keras2" in meta:
        lines.append(
            "bad_net_keras2.h5, repaired_net_keras2.h5    the same networks as full models in Keras 2's .h5 layout "
            "(Keras 2 load_model; Keras 3 reads them too)"
        )
    else:
        lines.append(f"No Keras 2 files: {meta['keras2_refused']} eval.py needs Keras 3 for this bundle.")
    if "keras2_weights" in meta:
        files = ", ".join(
            meta["keras2_weights"][role] for role in ("bad", "repaired") if role in meta["keras2_weights"]
        )
        lines.append(
            f"{files}    weights only, Keras 2's save_weights layout (CSAW-HackML-2020's *_bd_weights.h5): "
            f"build the {meta['keras2_weights']['preset']} architecture, then model.load_weights(file)"
        )
    lines.append("bundle.json    the input scaling (divide pixels by 'divisor'), the class count, the input shape")
    if "strip" in meta:
        lines.append(
            "strip_overlays.npy    STRIP's clean overlays; eval.py also answers N under bundle.json's threshold"
        )
    return "\n".join(lines) + "\n"
