"""Classifier models: architecture presets, safe loading, and what a model is (input, classes, conv layers).

Loading is safe by construction (DESIGN.md non-negotiables): `modelcheck` reads the file's structure
against an allow-list, then a child process with memory and time limits (`sandbox`) lets Keras load it with
`safe_mode=True, compile=False`; only a file that passed both is loaded in this process.
"""

import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from defenses.modelcheck import DEFAULT_LIMITS, Limits, ModelRefused, check_model_file

SANDBOX_TIMEOUT_SECONDS = 120
SANDBOX_MEMORY_BYTES = 4 * 2**30  # address space; TensorFlow alone reserves about 2.5 GiB of it
SANDBOX_MEMORY_PER_FILE_BYTE = 4  # plus this much per byte of the file: h5py's copy, Keras' variables, headroom


@dataclass(frozen=True)
class ModelReport:
    """What a loaded classifier is; JSON-friendly, stored with every BadNet."""

    kind: str
    input_shape: tuple[int, int, int]
    n_classes: int
    conv_layers: tuple[str, ...]
    conv_channels: tuple[int, ...]  # channels of each conv layer, in conv_layers' order
    layers: tuple[tuple[str, str, int], ...]  # (name, class, parameter count)
    params: int

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelReport":
        return cls(
            kind=data["kind"],
            input_shape=tuple(data["input_shape"]),
            n_classes=int(data["n_classes"]),
            conv_layers=tuple(data["conv_layers"]),
            conv_channels=tuple(int(c) for c in data["conv_channels"]),
            layers=tuple(tuple(layer) for layer in data["layers"]),
            params=int(data["params"]),
        )


def build_deepid_csaw(n_classes: int = 1283, input_shape: tuple[int, int, int] = (55, 47, 3)):
    """The DeepID network of CSAW-HackML-2020, with the layer names of its published weight files."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.Conv2D(20, 4, activation="relu", name="conv_1")(inputs)
    x = layers.MaxPooling2D(2, name="pool_1")(x)
    x = layers.Conv2D(40, 3, activation="relu", name="conv_2")(x)
    x = layers.MaxPooling2D(2, name="pool_2")(x)
    x = layers.Conv2D(60, 3, activation="relu", name="conv_3")(x)
    pool_3 = layers.MaxPooling2D(2, name="pool_3")(x)
    branch_a = layers.Dense(160, name="fc_1")(layers.Flatten(name="flatten_1")(pool_3))
    conv_4 = layers.Conv2D(80, 2, activation="relu", name="conv_4")(pool_3)
    branch_b = layers.Dense(160, name="fc_2")(layers.Flatten(name="flatten_2")(conv_4))
    merged = layers.Activation("relu", name="activation_1")(layers.Add(name="add_1")([branch_a, branch_b]))
    outputs = layers.Dense(n_classes, activation="softmax", name="output")(merged)
    return keras.Model(inputs, outputs, name="deepid_csaw")


ARCHITECTURES = {"deepid-csaw": build_deepid_csaw}


def _preset_from_weights(path: Path, arch: str):
    """Build a preset and fill it from a Keras 2 `save_weights` file, layer by layer, by name."""
    if arch not in ARCHITECTURES:
        raise ModelRefused(f"Unknown architecture preset {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}.")
    with h5py.File(path, "r") as h5:
        if "layer_names" not in h5.attrs:
            raise ModelRefused(
                f"{path.name} is a weights file in a layout Prunelab does not read; upload weights "
                "saved by Keras 2 `model.save_weights('x.h5')`, or the full model."
            )
        weights = {
            name.decode() if isinstance(name, bytes) else str(name): _layer_arrays(h5, name)
            for name in h5.attrs["layer_names"]
        }
    output = weights.get("output") or [w for w in weights.values() if w][-1]
    model = ARCHITECTURES[arch](n_classes=int(output[-1].shape[0]))
    for layer in model.layers:
        if not layer.weights:
            continue
        arrays = weights.get(layer.name)
        if arrays is None:
            raise ModelRefused(
                f"{path.name} has no weights for layer {layer.name!r} of preset {arch!r}; "
                f"layers in the file: {sorted(weights)}. Is this the right preset?"
            )
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise ModelRefused(
                f"{path.name}: layer {layer.name!r} has shapes {[a.shape for a in arrays]}, "
                f"preset {arch!r} needs {expected}."
            )
        layer.set_weights(arrays)
    return model


def _layer_arrays(h5: h5py.File, name) -> list[np.ndarray]:
    group = h5[name.decode() if isinstance(name, bytes) else name]
    return [np.asarray(group[w.decode() if isinstance(w, bytes) else w]) for w in group.attrs.get("weight_names", [])]


def _load_in_process(path: Path, arch: str | None, limits: Limits = DEFAULT_LIMITS):
    facts = check_model_file(path, limits)
    import keras  # only after the allow-list accepted the file

    if facts.kind == "weights-h5":
        if not arch:
            raise ModelRefused(
                f"{path.name} holds weights only; choose its architecture preset "
                f"({', '.join(sorted(ARCHITECTURES))}) or upload the full model."
            )
        return _preset_from_weights(path, arch), facts.kind
    if path.suffix in {".h5", ".keras"}:
        return keras.models.load_model(path, safe_mode=True, compile=False), facts.kind
    with tempfile.TemporaryDirectory() as scratch:  # Keras picks its reader from the suffix: give it the right one
        source = Path(scratch) / ("model.keras" if facts.kind == "keras-zip" else "model.h5")
        source.symlink_to(path.resolve())
        return keras.models.load_model(source, safe_mode=True, compile=False), facts.kind


def describe(model, kind: str = "keras") -> ModelReport:
    """A report of a Keras classifier; ModelRefused if it is not one (output (None, N) through softmax)."""
    output_shape = tuple(model.outputs[0].shape)
    if len(model.outputs) != 1 or len(output_shape) != 2 or not output_shape[1] or output_shape[1] < 2:
        raise ModelRefused(f"The model's output is {output_shape}; a classifier has one output (None, N).")
    if not _ends_in_softmax(model):
        raise ModelRefused(
            "The model's last layer is not a softmax; Prunelab repairs classifiers whose output "
            "is a probability per class."
        )
    input_shape = tuple(model.inputs[0].shape[1:])
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ModelRefused(f"The model takes inputs of shape {input_shape}; Prunelab needs RGB images (H, W, 3).")
    layers = tuple((layer.name, type(layer).__name__, int(layer.count_params())) for layer in model.layers)
    return ModelReport(
        kind=kind,
        input_shape=input_shape,
        n_classes=int(output_shape[1]),
        conv_layers=tuple(name for name, cls, _ in layers if cls == "Conv2D"),
        conv_channels=tuple(int(layer.filters) for layer in model.layers if type(layer).__name__ == "Conv2D"),
        layers=layers,
        params=int(model.count_params()),
    )


def _ends_in_softmax(model) -> bool:
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    return type(last).__name__ == "Softmax" or getattr(activation, "__name__", "") == "softmax"


def load_and_describe_unsandboxed(path: str | Path, arch: str | None = None, limits: Limits = DEFAULT_LIMITS):
    """Structure check, Keras load and report in this process. Only the sandbox and already verified
    files use this; everything else calls `load_model`."""
    model, kind = _load_in_process(Path(path), arch, limits)
    return model, describe(model, kind)


_verified: dict[tuple[str, str | None, Limits], ModelReport] = {}  # (sha256 of file, arch, caps) -> report
_verdict_folder: Path | None = None  # where remember_verdicts keeps passes on disk; None: this process only


def remember_verdicts(folder: str | Path | None) -> None:
    """Keep every sandbox pass in `folder` as well as in this process, so that the other processes of one
    deployment (each worker, the web server, after restarts) skip the sandbox for a file one of them passed:
    about 4 s of CPU a file and process. Only passes are kept. A pass is keyed by the file's SHA-256, the
    preset, the caps and the checking code itself (this module, modelcheck, hdf5check and sandbox, and the
    Keras version), so a changed file or allow-list is checked again. `folder` must be writable by the app
    alone: what lies there is believed. None forgets the folder."""
    global _verdict_folder
    _verdict_folder = None if folder is None else Path(folder)
    if _verdict_folder is not None:
        _verdict_folder.mkdir(parents=True, exist_ok=True)


@functools.cache
def checker_version() -> str:
    """A digest of the code that decides a sandbox pass, and of the Keras it runs."""
    from importlib.metadata import version

    digest = hashlib.sha256(version("keras").encode())
    for module in ("models.py", "modelcheck.py", "sandbox.py", "hdf5check.py"):
        digest.update(Path(__file__).with_name(module).read_bytes())
    return digest.hexdigest()


def _verdict_path(key: tuple[str, str | None, Limits]) -> Path | None:
    if _verdict_folder is None:
        return None
    digest, arch, limits = key
    name = hashlib.sha256(json.dumps([digest, arch, asdict(limits), checker_version()]).encode()).hexdigest()
    return _verdict_folder / f"{name}.json"


def _kept_verdict(key) -> ModelReport | None:
    path = _verdict_path(key)
    try:
        return ModelReport.from_dict(json.loads(path.read_text())) if path else None
    except (OSError, ValueError, TypeError, KeyError):  # none kept, or a torn write: check it again
        return None


def _keep_verdict(key, report: ModelReport) -> None:
    path = _verdict_path(key)
    if path is None:
        return
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".part", delete=False) as part:
        part.write(json.dumps(report.as_dict()))
    os.replace(part.name, path)  # readers see the whole verdict or none


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# The environment variables a sandboxed loader keeps (webapp settings and credentials are not among them).
SANDBOX_ENVIRONMENT = {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "VIRTUAL_ENV", "LD_LIBRARY_PATH"}


def sandbox_environment(scratch: str) -> dict[str, str]:
    """The loader's environment: only what Python needs, so none of the caller's secrets (database and Redis
    URLs, the secret key) reach a process that opens a hostile file; HOME is the scratch folder (Keras may
    write its config there), the GPU is hidden and the library importable."""
    kept = {name: value for name, value in os.environ.items() if name in SANDBOX_ENVIRONMENT}
    library_root = str(Path(__file__).resolve().parent.parent)
    return kept | {"CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": library_root, "HOME": scratch}


def verify_model_file(
    path: str | Path,
    arch: str | None = None,
    timeout: float = SANDBOX_TIMEOUT_SECONDS,
    memory_bytes: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ModelReport:
    """Check and load a model file in a child process with memory and time limits; return its report.

    Raises ModelRefused with the reason when the allow-list refuses it (under `limits`), Keras cannot load it,
    it is not a classifier, or loading crashes, exceeds `memory_bytes` of address space (default: a base for
    TensorFlow plus a multiple of the file's size, which the caps bound) or `timeout` seconds.
    """
    path = Path(path)
    if memory_bytes is None:
        memory_bytes = SANDBOX_MEMORY_BYTES + SANDBOX_MEMORY_PER_FILE_BYTE * path.stat().st_size
    key = (file_digest(path), arch, limits)
    if key not in _verified and (kept := _kept_verdict(key)) is not None:
        _verified[key] = kept
    if key in _verified:
        return _verified[key]
    with tempfile.TemporaryDirectory(prefix="prunelab-sandbox-") as scratch:
        result_file = Path(scratch) / "result.json"
        command = [
            sys.executable,
            "-m",
            "defenses.sandbox",
            str(path.resolve()),
            str(result_file),
            "--memory-bytes",
            str(memory_bytes),
            "--cpu-seconds",
            str(int(timeout)),
            "--limits",
            json.dumps(asdict(limits)),
        ]
        if arch:
            command += ["--arch", arch]
        try:
            child = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, cwd=scratch, env=sandbox_environment(scratch)
            )
        except subprocess.TimeoutExpired:
            raise ModelRefused(f"{path.name} took longer than {timeout:.0f}s to load; refused.") from None
        if not result_file.exists():
            tail = (child.stderr or "").strip().splitlines()[-1:] or ["no output"]
            raise ModelRefused(
                f"{path.name} crashed the loader or exceeded its {memory_bytes / 2**30:.0f} GiB "
                f"memory limit (exit {child.returncode}: {tail[0][:300]}); refused."
            )
        outcome = json.loads(result_file.read_text())
    if not outcome["ok"]:
        raise ModelRefused(outcome["reason"])
    report = ModelReport.from_dict(outcome["report"])
    _verified[key] = report
    _keep_verdict(key, report)
    return report


def load_model(path: str | Path, arch: str | None = None, limits: Limits = DEFAULT_LIMITS):
    """Verify a model file in the sandbox, then load it here: returns (keras model, ModelReport)."""
    report = verify_model_file(path, arch, limits=limits)
    model, _ = _load_in_process(Path(path), arch, limits)
    return model, report
