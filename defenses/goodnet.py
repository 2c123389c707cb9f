"""The GoodNet: a BadNet B and its repaired network B' answering together, and its standalone bundle.

G(x) = argmax B'(x) when it equals argmax B(x), else N ("this input is poisoned").
"""

import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defenses import data
from defenses.metrics import LabelledSet, percent_equal, predict_probabilities, seed_score


def goodnet_labels(bad_probabilities: np.ndarray, repaired_probabilities: np.ndarray) -> np.ndarray:
    """The repaired network's class where both networks agree, else N (the number of classes)."""
    n_classes = bad_probabilities.shape[1]
    bad, repaired = bad_probabilities.argmax(axis=1), repaired_probabilities.argmax(axis=1)
    return np.where(bad == repaired, repaired, n_classes)


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


_EVAL_HEADER = '''"""Standalone GoodNet evaluator exported by Prunelab. Needs Python 3.11+, numpy, pillow and keras 3.

Usage: python eval.py IMAGE   -> prints one class in [0, N]; N means "this input is poisoned".
An image that cannot be read (missing, not a PNG or JPEG, truncated) is one line on stderr and exit code 2.
"""

import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

HERE = Path(__file__).resolve().parent
'''

_EVAL_MAIN = """

def refuse(image_path: str, reason: str) -> int:
    # one line on stderr naming the file and the reason, exit code 2 (a usage error), never a traceback
    print(f"eval.py: {image_path}: {' '.join(reason.split())}", file=sys.stderr)
    return 2


def main(image_path: str) -> int:
    bundle = json.loads((HERE / "bundle.json").read_text())
    height, width = bundle["input_shape"][:2]
    if not Path(image_path).is_file():
        return refuse(image_path, "no such file")
    try:  # the image is read before the networks, so a wrong path or a text file is answered at once
        image = load_image(image_path, (height, width))
    except DataError as refusal:
        return refuse(image_path, str(refusal))
    import keras

    bad = keras.models.load_model(HERE / "bad_net.keras", safe_mode=True, compile=False)
    repaired = keras.models.load_model(HERE / "repaired_net.keras", safe_mode=True, compile=False)
    pixels = scale_pixels(image.pixels[None], bundle["divisor"])
    answer = goodnet_labels(np.asarray(bad.predict_on_batch(pixels)), np.asarray(repaired.predict_on_batch(pixels)))
    print(int(answer[0]))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python eval.py IMAGE")
    sys.exit(main(sys.argv[1]))
"""


def eval_script_source() -> str:
    """eval.py for a bundle, assembled from this library's own functions (one scaling rule everywhere)."""
    constants = (
        f"IMAGE_SHAPE = {data.IMAGE_SHAPE}\nMAX_IMAGE_PIXELS = {data.MAX_IMAGE_PIXELS}\n"
        f"IMAGE_FORMATS = {data.IMAGE_FORMATS}\n"
    )
    parts = [data.DataError, data.LoadedImage, data.scale_pixels, data.load_image, goodnet_labels]
    return _EVAL_HEADER + constants + "\n\n" + "\n\n".join(inspect.getsource(p) for p in parts) + _EVAL_MAIN


def export_bundle(goodnet: GoodNet, out_dir: str | Path, extra: dict | None = None) -> Path:
    """Write the networks (.keras), bundle.json and eval.py to `out_dir`; return the folder."""
    from defenses.finetune import save_atomically

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_atomically(goodnet.bad, out / "bad_net.keras")
    save_atomically(goodnet.repaired, out / "repaired_net.keras")
    meta = {
        "divisor": goodnet.divisor,
        "n_classes": goodnet.n_classes,
        "input_shape": list(goodnet.bad.inputs[0].shape[1:]),
        **(extra or {}),
    }
    (out / "bundle.json").write_text(json.dumps(meta, indent=2))
    (out / "eval.py").write_text(eval_script_source())
    return out
