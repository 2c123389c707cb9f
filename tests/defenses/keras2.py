"""Predictions of model files under the Keras 2 API (tf_keras), in a child process: the tests' proof that an
export loads where CSAW-era tools load it. The child imports tf_keras directly with TF_USE_LEGACY_KERAS unset,
so nothing of Keras 3 or of Prunelab takes part in reading the file."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# The child builds DeepID as CSAW-HackML-2020 did (../shared/fixtures/csaw/README.md), with Keras 2's own layers,
# for weights-only files: `load_weights` needs the architecture from the reader's side.
CHILD = r"""
import json, sys
import numpy as np
import tf_keras
from tf_keras import layers

def deepid(n_classes):
    inputs = tf_keras.Input(shape=(55, 47, 3), name="input")
    x = layers.Conv2D(20, 4, activation="relu", name="conv_1")(inputs)
    x = layers.MaxPooling2D(2, name="pool_1")(x)
    x = layers.Conv2D(40, 3, activation="relu", name="conv_2")(x)
    x = layers.MaxPooling2D(2, name="pool_2")(x)
    x = layers.Conv2D(60, 3, activation="relu", name="conv_3")(x)
    pool_3 = layers.MaxPooling2D(2, name="pool_3")(x)
    a = layers.Dense(160, name="fc_1")(layers.Flatten()(pool_3))
    b = layers.Dense(160, name="fc_2")(layers.Flatten()(layers.Conv2D(80, 2, activation="relu", name="conv_4")(pool_3)))
    merged = layers.Activation("relu")(layers.Add()([a, b]))
    return tf_keras.Model(inputs, layers.Dense(n_classes, activation="softmax", name="output")(merged))

spec = json.loads(sys.argv[1])
pixels = np.load(spec["pixels"])
out = {}
for number, job in enumerate(spec["jobs"]):
    if "weights" in job:
        model = deepid(job["n_classes"])
        model.load_weights(job["weights"])
    else:
        model = tf_keras.models.load_model(job["model"])
    predicted = model.predict(pixels, batch_size=64, verbose=0)
    out[str(number)] = np.stack(predicted) if isinstance(predicted, list) else np.asarray(predicted)
np.savez(spec["out"], **out)
print(json.dumps({"version": tf_keras.__version__}))
"""


def keras2_predictions(pixels: np.ndarray, jobs: list[dict]) -> tuple[str, list[np.ndarray]]:
    """(tf_keras' version, one array of class probabilities per job, stacked per output for a model with
    several) for `pixels` (already scaled). A job is
    `{"model": path}` (tf_keras.models.load_model) or `{"weights": path, "n_classes": N}` (DeepID built in
    tf_keras, then load_weights). One child for all jobs: importing TensorFlow is most of its time."""
    environment = {key: value for key, value in os.environ.items() if key != "TF_USE_LEGACY_KERAS"}
    environment |= {"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    with tempfile.TemporaryDirectory(prefix="prunelab-keras2-") as scratch:
        np.save(Path(scratch) / "pixels.npy", np.asarray(pixels, dtype=np.float32))
        jobs = [{key: str(value) if isinstance(value, Path) else value for key, value in job.items()} for job in jobs]
        spec = {"pixels": f"{scratch}/pixels.npy", "out": f"{scratch}/out.npz", "jobs": jobs}
        child = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=300,
            env=environment,
            cwd=scratch,
        )
        assert child.returncode == 0, child.stderr[-3000:]
        with np.load(Path(scratch) / "out.npz") as arrays:
            predictions = [arrays[str(number)] for number in range(len(jobs))]
    return json.loads(child.stdout.strip().splitlines()[-1])["version"], predictions
