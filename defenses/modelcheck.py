"""The allow-list parser that reads an uploaded model file before Keras may see it.

A model file comes from an untrusted party, and neither HDF5, TensorFlow nor Keras promises that loading
one is safe. This module reads only structure: HDF5 links, dataset layouts and attributes with h5py, and
the model config as JSON. It accepts a small set of layer classes with known config keys and refuses the
rest with a reason (ModelRefused). Nothing in a file is ever imported, called or deserialised as code.
"""

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from defenses.data import HDF5_DAMAGE
from defenses.hdf5check import HDF5Refused, check_structure

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"


@dataclass(frozen=True)
class Limits:
    """Caps on a model file. The defaults admit a VGG-Face-size recognizer (about 140 M weights, 103 M of them
    in one Dense layer); shape bombs are refused by the HDF5 door's stored-size rule, not by these numbers."""

    max_file_bytes: int = 2 * 2**30
    max_params: int = 200_000_000
    max_dataset_elements: int = 200_000_000
    max_layers: int = 256
    max_config_bytes: int = 4 * 2**20
    max_dim: int = 4096  # any declared size: units, filters, image side
    max_input_elements: int = 2**22


DEFAULT_LIMITS = Limits()


class ModelRefused(ValueError):
    """The model file is not accepted; the message names the file and the reason."""


# Layer classes a Fine-Pruning classifier of the CSAW kind may use, with the config keys each may carry.
_BASE_KEYS = {"name", "trainable", "dtype", "batch_input_shape", "batch_size", "input_shape"}
_CONV_KEYS = {
    "filters",
    "kernel_size",
    "strides",
    "padding",
    "data_format",
    "dilation_rate",
    "groups",
    "activation",
    "use_bias",
    "kernel_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "kernel_constraint",
    "bias_constraint",
    "lora_rank",
    "lora_alpha",
}
_POOL_KEYS = {"pool_size", "strides", "padding", "data_format"}
ALLOWED_LAYERS: dict[str, set[str]] = {
    "InputLayer": {"batch_shape", "sparse", "ragged", "optional"},
    "Conv2D": _CONV_KEYS,
    "MaxPooling2D": _POOL_KEYS,
    "AveragePooling2D": _POOL_KEYS,
    "GlobalMaxPooling2D": {"data_format", "keepdims"},
    "GlobalAveragePooling2D": {"data_format", "keepdims"},
    "ZeroPadding2D": {"padding", "data_format"},
    "Dense": _CONV_KEYS - {"filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate", "groups"}
    | {"units"},
    "Flatten": {"data_format"},
    "Add": set(),
    "Concatenate": {"axis"},
    "Activation": {"activation"},
    "ReLU": {"max_value", "negative_slope", "threshold"},
    "Softmax": {"axis"},
    "Dropout": {"rate", "noise_shape", "seed"},
    "BatchNormalization": {
        "axis",
        "momentum",
        "epsilon",
        "center",
        "scale",
        "beta_initializer",
        "gamma_initializer",
        "moving_mean_initializer",
        "moving_variance_initializer",
        "beta_regularizer",
        "gamma_regularizer",
        "beta_constraint",
        "gamma_constraint",
        "synchronized",
        "renorm",
        "renorm_clipping",
        "renorm_momentum",
        "fused",
        "virtual_batch_size",
        "adjustment",
    },
}
# Keys Keras 3 writes on every layer that may only be empty: a set value would name classes or files.
NULL_ONLY_KEYS = {"quantization_config"}
MODEL_CLASSES = {"Functional", "Model", "Sequential"}
# Objects that may appear inside a layer config: initializers, regularizers, constraints, dtype policies.
NESTED_CLASSES = {
    "VarianceScaling",
    "GlorotUniform",
    "GlorotNormal",
    "HeUniform",
    "HeNormal",
    "LecunUniform",
    "LecunNormal",
    "RandomUniform",
    "RandomNormal",
    "TruncatedNormal",
    "Zeros",
    "Ones",
    "Constant",
    "Orthogonal",
    "L1",
    "L2",
    "L1L2",
    "MaxNorm",
    "NonNeg",
    "UnitNorm",
    "MinMaxNorm",
    "DTypePolicy",
    "Policy",
}
ALLOWED_MODULES = {None, "keras", "keras.layers", "keras.initializers", "keras.regularizers", "keras.constraints"}
ACTIVATIONS = {
    "linear",
    "relu",
    "softmax",
    "sigmoid",
    "tanh",
    "elu",
    "selu",
    "softplus",
    "softsign",
    "swish",
    "silu",
    "gelu",
    "relu6",
    "leaky_relu",
    "hard_sigmoid",
    "exponential",
}


@dataclass
class ModelFileFacts:
    """What the parser learned: the file kind, the model config (None for weights-only files) and the
    weight arrays' shapes by path."""

    kind: str  # "keras-h5", "weights-h5" or "keras-zip"
    config: dict | None
    weight_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def check_model_file(path: str | Path, limits: Limits = Limits()) -> ModelFileFacts:
    """Read a model or weights file's structure and refuse anything outside the allow-list.

    Accepts a Keras 2/3 full-model `.h5`, a weights-only `.h5` and a Keras 3 `.keras` zip. Raises
    ModelRefused with the reason: size over the cap, unknown container, HDF5 soft or external links at any
    depth, external or virtual datasets, oversized datasets, unknown layer classes (Lambda, custom or
    TFSMLayer), module or registered-name references outside Keras' own layers, unknown config keys,
    declared sizes or parameter counts over the caps.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise ModelRefused(
            f"{path.name} is {size / 2**20:.0f} MiB; model files over "
            f"{limits.max_file_bytes / 2**20:.0f} MiB are refused."
        )
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head == HDF5_SIGNATURE:
        try:
            with h5py.File(path, "r") as h5:
                return _check_h5(h5, path.name, size, limits)
        except ModelRefused:
            raise
        except HDF5_DAMAGE as error:  # a damaged file fails inside h5py with any of these; found by fuzzing
            raise ModelRefused(
                f"{path.name} is a damaged HDF5 file ({type(error).__name__}: {error}); save the "
                "model again with Keras and upload the new file."
            ) from None
    if head.startswith(ZIP_SIGNATURE):
        return _check_keras_zip(path, limits)
    raise ModelRefused(
        f"{path.name} is neither an HDF5 file (.h5) nor a Keras zip (.keras). "
        "Upload a model saved by Keras (model.save) or weights saved by model.save_weights."
    )


def _check_h5(h5: h5py.File, name: str, file_bytes: int, limits: Limits) -> ModelFileFacts:
    shapes = _weight_shapes(h5, name, file_bytes, limits)
    total = sum(int(np.prod(shape)) for shape in shapes.values())
    if total > limits.max_params:
        raise ModelRefused(f"{name} stores {total:,} weights; the cap is {limits.max_params:,}.")
    raw_config = h5.attrs.get("model_config")
    if raw_config is None:
        return ModelFileFacts(kind="weights-h5", config=None, weight_shapes=shapes)
    config = _parse_json(raw_config, name, limits)
    check_config(config, name, limits)
    return ModelFileFacts(kind="keras-h5", config=config, weight_shapes=shapes)


def _weight_shapes(h5: h5py.File, name: str, file_bytes: int, limits: Limits) -> dict[str, tuple[int, ...]]:
    """The HDF5 door (hard links only, self-contained numeric arrays, no shape bombs), as a model refusal."""
    try:
        facts = check_structure(h5, name, file_bytes, limits.max_dataset_elements)
    except HDF5Refused as refusal:
        raise ModelRefused(str(refusal)) from None
    return {where: fact.shape for where, fact in facts.items()}


def _parse_json(raw: bytes | str, name: str, limits: Limits) -> dict:
    if isinstance(raw, bytes | np.bytes_):
        raw = bytes(raw).decode("utf-8", errors="strict")
    if len(raw) > limits.max_config_bytes:
        raise ModelRefused(f"{name}: the model config is {len(raw):,} bytes; the cap is {limits.max_config_bytes:,}.")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ModelRefused(f"{name}: the model config is not valid JSON ({error}).") from None
    except RecursionError:
        raise ModelRefused(f"{name}: the model config nests objects thousands deep; no Keras model does.") from None
    if not isinstance(config, dict):
        raise ModelRefused(f"{name}: the model config is not a JSON object.")
    return config


def _check_keras_zip(path: Path, limits: Limits) -> ModelFileFacts:
    allowed_members = {"config.json", "metadata.json", "model.weights.h5"}
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ModelRefused(f"{path.name} is a damaged zip archive.") from None
    with archive:
        members = {info.filename: info for info in archive.infolist()}
        unknown = sorted(set(members) - allowed_members)
        if unknown:
            raise ModelRefused(
                f"{path.name} contains {unknown[:5]}; a .keras file may hold only "
                f"{sorted(allowed_members)} (no assets, no extra code)."
            )
        if "config.json" not in members or "model.weights.h5" not in members:
            raise ModelRefused(f"{path.name} lacks config.json or model.weights.h5; it is not a Keras 3 model.")
        for info in members.values():
            # judged from the zip's own headers before anything is inflated: a 2 MB zip can declare 2 GB
            cap = limits.max_file_bytes if info.filename == "model.weights.h5" else limits.max_config_bytes
            if info.file_size > cap:
                raise ModelRefused(
                    f"{path.name}: {info.filename} unpacks to {info.file_size:,} bytes; the cap is {cap:,}."
                )
        if members["model.weights.h5"].compress_type != zipfile.ZIP_STORED:
            # Keras stores it uncompressed; h5py seeks inside it, and every seek back in a deflated member
            # inflates it again from its start
            raise ModelRefused(
                f"{path.name}: model.weights.h5 is compressed inside the zip; Keras stores it "
                "uncompressed. Save the model again with model.save()."
            )
        config = _parse_json(archive.read("config.json"), path.name, limits)
        check_config(config, path.name, limits)
        weights_bytes = members["model.weights.h5"].file_size
        with archive.open("model.weights.h5") as weights, h5py.File(weights, "r") as h5:
            shapes = _weight_shapes(h5, f"{path.name}:model.weights.h5", weights_bytes, limits)
    return ModelFileFacts(kind="keras-zip", config=config, weight_shapes=shapes)


def check_config(config: dict, name: str, limits: Limits = Limits()) -> None:
    """Refuse a model config that names anything outside the allow-list, or declares sizes over the caps."""
    _check_object_ref(
        config, name, "the model", MODEL_CLASSES, {None, "keras", "keras.models", "keras.src.models.functional"}
    )
    inner = config.get("config")
    if not isinstance(inner, dict) or not isinstance(inner.get("layers"), list):
        raise ModelRefused(f"{name}: the model config has no layer list.")
    layers = inner["layers"]
    if not layers or len(layers) > limits.max_layers:
        raise ModelRefused(f"{name} has {len(layers)} layers; between 1 and {limits.max_layers} are accepted.")
    for layer in layers:
        _check_layer(layer, name, limits)
    declared = declared_parameter_count(config)
    if declared > limits.max_params:
        raise ModelRefused(f"{name} declares {declared:,} parameters; the cap is {limits.max_params:,}.")


def _check_object_ref(obj: dict, name: str, what: str, classes: set[str], modules: set) -> None:
    class_name = obj.get("class_name")
    if class_name not in classes:
        raise ModelRefused(
            f"{name}: {what} is of class {class_name!r}, which is not accepted "
            f"(accepted: {', '.join(sorted(classes))})."
        )
    if obj.get("module") not in modules:
        raise ModelRefused(f"{name}: {what} refers to module {obj.get('module')!r}; only Keras' own are accepted.")
    if obj.get("registered_name") not in (None, class_name):
        raise ModelRefused(
            f"{name}: {what} refers to registered object {obj.get('registered_name')!r}; "
            "custom registered objects are refused."
        )


def _check_layer(layer: dict, name: str, limits: Limits) -> None:
    if not isinstance(layer, dict):
        raise ModelRefused(f"{name}: a layer entry is not an object.")
    config = layer.get("config")
    layer_name = config.get("name", "?") if isinstance(config, dict) else "?"
    what = f"layer {str(layer_name)[:60]!r}"
    if not isinstance(layer_name, str) or not LAYER_NAME.fullmatch(layer_name):
        raise ModelRefused(
            f"{name}: {what} has a name TensorFlow cannot use (letters, digits and _ . - only, at "
            "most 128); rename the layer and save the model again."
        )
    if layer.get("class_name") == "Lambda":
        raise ModelRefused(f"{name}: {what} is a Lambda layer, which carries code; Lambda layers are refused.")
    _check_object_ref(layer, name, what, set(ALLOWED_LAYERS), ALLOWED_MODULES)
    if not isinstance(config, dict):
        raise ModelRefused(f"{name}: {what} has no config object.")
    unknown = set(config) - _BASE_KEYS - NULL_ONLY_KEYS - ALLOWED_LAYERS[layer["class_name"]]
    unknown |= {key for key in NULL_ONLY_KEYS & set(config) if config[key] is not None}
    if unknown:
        raise ModelRefused(f"{name}: {what} ({layer['class_name']}) has unknown config keys {sorted(unknown)}.")
    for key, value in config.items():
        _check_value(value, name, f"{what} key {key!r}", limits, key)
    if (
        layer["class_name"] == "InputLayer"
        and int(np.prod([d or 1 for d in _input_shape(config)])) > limits.max_input_elements
    ):
        raise ModelRefused(f"{name}: {what} declares an input of {_input_shape(config)}; over the size cap.")
    activation = config.get("activation")
    if activation is not None and not isinstance(activation, str):
        raise ModelRefused(
            f"{name}: {what} names its activation with a {type(activation).__name__}, not a name; "
            "only Keras' built-in activations, by name, are accepted."
        )
    if activation is not None and activation not in ACTIVATIONS:
        raise ModelRefused(f"{name}: {what} uses activation {activation!r}; only Keras' built-in ones are accepted.")
    _check_inbound(layer.get("inbound_nodes", []), name, what)


# Layer names become TensorFlow name scopes (a '<' in one made every run fail after the upload was accepted).
LAYER_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.\-]{0,127}")
# Numbers that are identifiers, not sizes: exempt from the size cap.
ID_KEYS = {"seed", "shared_object_id"}


def _check_value(value, name: str, where: str, limits: Limits, key: str = "") -> None:
    """Nested objects may only be Keras initializers, regularizers, constraints or dtype policies; numbers
    must stay under the size cap."""
    if isinstance(value, dict):
        if "class_name" in value:
            _check_object_ref(value, name, where, NESTED_CLASSES, ALLOWED_MODULES)
        for inner_key, item in value.items():
            if inner_key in {"function", "function_type", "fn"}:
                raise ModelRefused(f"{name}: {where} carries a {inner_key!r}; code in configs is refused.")
            _check_value(item, name, where, limits, inner_key)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, name, where, limits, key)
    elif (
        isinstance(value, int | float) and not isinstance(value, bool) and value > limits.max_dim and key not in ID_KEYS
    ):
        raise ModelRefused(f"{name}: {where} declares {value}; sizes over {limits.max_dim} are refused.")


def _check_inbound(nodes, name: str, what: str) -> None:
    """Inbound nodes may only name other layers' outputs: Keras 2 lists or Keras 3 `__keras_tensor__`s."""
    if isinstance(nodes, dict):
        if "class_name" in nodes and (
            nodes["class_name"] != "__keras_tensor__"
            or set(nodes.get("config", {})) - {"shape", "dtype", "keras_history"}
        ):
            raise ModelRefused(f"{name}: {what} has an inbound node that is not a layer output.")
        for item in nodes.values():
            _check_inbound(item, name, what)
    elif isinstance(nodes, list):
        for item in nodes:
            _check_inbound(item, name, what)


def inbound_layer_names(layer: dict) -> list[str]:
    """Names of the layers feeding `layer`, from a Keras 2 or Keras 3 config entry."""
    names: list[str] = []

    def visit(node) -> None:
        if isinstance(node, dict):
            history = (
                node.get("config", {}).get("keras_history") if node.get("class_name") == "__keras_tensor__" else None
            )
            if history:
                names.append(history[0])
                return
            for item in node.values():
                visit(item)
        elif isinstance(node, list | tuple):  # JSON gives lists; a live get_config() gives tuples too
            if len(node) >= 3 and isinstance(node[0], str) and isinstance(node[1], int):
                names.append(node[0])  # Keras 2: [layer_name, node_index, tensor_index, kwargs]
                return
            for item in node:
                visit(item)

    visit(layer.get("inbound_nodes", []))
    return names


def declared_parameter_count(config: dict) -> int:
    """Parameters the config would allocate, by shape inference over the accepted layer classes."""
    layers = config["config"]["layers"]
    sequential = config.get("class_name") == "Sequential"
    shapes: dict[str, tuple] = {}
    total, previous = 0, None
    for layer in layers:
        cfg = layer["config"]
        inputs = [shapes[n] for n in inbound_layer_names(layer) if n in shapes]
        if sequential and previous is not None:
            inputs = [shapes[previous]]
        shape, params = _infer(layer["class_name"], cfg, inputs)
        shapes[cfg.get("name", str(len(shapes)))] = shape
        previous = cfg.get("name", str(len(shapes) - 1))
        total += params
    return total


def _input_shape(cfg: dict) -> tuple:
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    return tuple(shape[1:]) if shape else ()


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _infer(class_name: str, cfg: dict, inputs: list[tuple]) -> tuple[tuple, int]:
    """(output shape without batch, parameter count) of one layer; unknown sizes count as 1."""
    if class_name == "InputLayer" or not inputs:
        return _input_shape(cfg), 0
    shape = inputs[0] or (1,)  # a declared shape with no dimensions: unknown, counted as 1
    if class_name == "Conv2D" and len(shape) == 3:
        kh, kw = _pair(cfg["kernel_size"])
        sh, sw = _pair(cfg.get("strides", 1))
        valid = cfg.get("padding", "valid") == "valid"
        h = (shape[0] - (kh - 1 if valid else 0) + sh - 1) // sh
        w = (shape[1] - (kw - 1 if valid else 0) + sw - 1) // sw
        return (h, w, cfg["filters"]), kh * kw * shape[2] * cfg["filters"] + cfg["filters"]
    if class_name in {"MaxPooling2D", "AveragePooling2D"} and len(shape) == 3:
        ph, pw = _pair(cfg.get("pool_size", 2))
        sh, sw = _pair(cfg.get("strides") or (ph, pw))
        valid = cfg.get("padding", "valid") == "valid"
        return (
            (shape[0] - (ph - 1 if valid else 0) + sh - 1) // sh,
            (shape[1] - (pw - 1 if valid else 0) + sw - 1) // sw,
            shape[2],
        ), 0
    if class_name in {"GlobalMaxPooling2D", "GlobalAveragePooling2D"}:
        return (shape[-1],), 0
    if class_name == "Flatten":
        return (int(np.prod(shape)),), 0
    if class_name == "Dense":
        return (*shape[:-1], cfg["units"]), shape[-1] * cfg["units"] + cfg["units"]
    if class_name == "BatchNormalization":
        return shape, 4 * shape[-1]
    if class_name == "Concatenate":
        return (*shape[:-1], sum(s[-1] for s in inputs)), 0
    return shape, 0
