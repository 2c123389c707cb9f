"""Standalone GoodNet evaluator exported by Prunelab. Needs Python 3.11+, numpy, pillow and Keras:
Keras 3 reads the .keras files; without Keras 3 (or with GOODNET_KERAS=2) the Keras 2 API (tf_keras, keras 2.x,
or TensorFlow 2.x's own tf.keras up to 2.15) reads the *_keras2.h5 files. README.txt says which files are here.

Usage: python eval.py IMAGE   -> prints one class in [0, N]; N means "this input is poisoned" (the two networks
disagree, or, in a bundle with STRIP, the entropy of the BadNet over blends with clean images is under the
threshold in bundle.json).
       python eval.py IMAGE IMAGE ... | FOLDER ...   -> one line per image, "path<TAB>class" (a folder's PNG and
JPEG files in name order).
An image that cannot be read (missing, not a PNG or JPEG, truncated) is one line on stderr and exit code 2; the
other images are still answered.
"""

import importlib
import json
import os
import sys
from pathlib import Path

import numpy as np

# LIBRARY START: in the bundle's eval.py these imports are replaced by the functions' own source
# (defenses.goodnet.eval_script_source), so that eval.py needs nothing of Prunelab and judges as it does.
from defenses.data import DataError, load_image, scale_pixels
from defenses.goodnet import goodnet_labels
from defenses.strip import strip_entropy

# LIBRARY END

HERE = Path(__file__).resolve().parent  # in the bundle: the folder with bundle.json and the networks


def load_networks(bundle: dict, folder: Path) -> tuple:
    # Keras 3 reads the .keras files; otherwise the Keras 2 API reads the Keras 2 full-model files
    if os.environ.get("GOODNET_KERAS") != "2":
        try:
            import keras
        except ImportError:
            keras = None
        if keras is not None and int(keras.__version__.split(".")[0]) >= 3:
            return tuple(
                keras.models.load_model(folder / f"{name}.keras", safe_mode=True, compile=False)
                for name in ("bad_net", "repaired_net")
            )
    files = bundle.get("keras2")
    if not files:
        sys.exit(f"eval.py: this bundle has no Keras 2 files ({bundle.get('keras2_refused')}); install Keras 3.")
    keras2 = keras2_api()
    return tuple(keras2.models.load_model(str(folder / files[role]), compile=False) for role in ("bad", "repaired"))


def keras2_api():
    for name in ("tf_keras", "keras", "tensorflow.keras"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if str(getattr(module, "__version__", "")).startswith("2."):
            return module
    sys.exit("eval.py: no Keras 2 API (tf_keras, keras 2.x, tf.keras 2.x): pip install tf_keras, or use Keras 3.")


def refuse(image_path: str, reason: str) -> int:
    # one line on stderr naming the file and the reason, exit code 2 (a usage error), never a traceback
    print(f"eval.py: {image_path}: {' '.join(reason.split())}", file=sys.stderr)
    return 2


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_paths(arguments: list[str]) -> list[str]:
    # files as given; a folder's PNG and JPEG files in name order
    paths = []
    for argument in arguments:
        folder = Path(argument)
        if folder.is_dir():
            paths += sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        else:
            paths.append(argument)
    return paths


def labels_of(bundle: dict, images: list, folder: Path) -> list[int]:
    bad, repaired = load_networks(bundle, folder)
    pixels = scale_pixels(np.stack([image.pixels for image in images]), bundle["divisor"])
    flagged = None
    if "strip" in bundle:  # STRIP on the BadNet: a low entropy over blends with clean images is poisoned too
        overlays = np.load(folder / "strip_overlays.npy", allow_pickle=False)

        def predict(blends):
            return np.asarray(bad.predict_on_batch(scale_pixels(blends, bundle["divisor"])))

        threshold = bundle["strip"]["threshold"]
        flagged = np.array([strip_entropy(predict, image.pixels, overlays) < threshold for image in images])
    bad_votes, repaired_votes = np.asarray(bad.predict_on_batch(pixels)), np.asarray(repaired.predict_on_batch(pixels))
    return [int(label) for label in goodnet_labels(bad_votes, repaired_votes, flagged)]


def main(arguments: list[str], folder: Path = HERE) -> int:
    """Answer every image of `arguments` (files or folders) with the bundle in `folder`; 2 if any was refused."""
    bundle = json.loads((folder / "bundle.json").read_text())
    height, width = bundle["input_shape"][:2]
    one = len(arguments) == 1 and not Path(arguments[0]).is_dir()  # the grader's form: the class alone
    paths = image_paths(arguments)
    if not paths:
        return refuse(arguments[0], "no PNG or JPEG images in this folder")
    read, refused = [], 0
    for path in paths:  # images are read before the networks, so a wrong path or a text file is answered at once
        if not Path(path).is_file():
            refuse(path, "no such file")
            refused += 1
            continue
        try:
            read.append((path, load_image(path, (height, width))))
        except DataError as refusal:
            refuse(path, str(refusal))
            refused += 1
    if read:
        for (path, _), label in zip(read, labels_of(bundle, [image for _, image in read], folder), strict=True):
            print(label if one else f"{path}\t{label}")
    return 2 if refused else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python eval.py IMAGE [IMAGE ...] | FOLDER")
    sys.exit(main(sys.argv[1:]))
