"""Files the Keras 2 API reads, written from a Keras 3 model: CSAW-era tools (a course grader, a CSAW-HackML-2020
`eval.py` on tf.keras 2.x or tf_keras) cannot read a Keras 3 file, and cannot read a Keras 3-written `.h5`
either (Keras 2's InputLayer has no `batch_shape`).

- `save_keras2_weights`: weights only, in the layout Keras 2's `model.save_weights("x.h5")` wrote and
  CSAW-HackML-2020 published (`*_bd_weights.h5`); the reader builds the architecture and calls `load_weights`.
- `save_keras2_model`: the full model in the layout Keras 2's `model.save("x.h5")` wrote: root attributes
  `keras_version`, `backend` and `model_config` (Keras 2's functional config JSON), and a `model_weights`
  group, one group per layer. Keras 2's `load_model` reads it, and so does Keras 3.

Both files are written with h5py from the model's own config and variables; nothing here imports Keras 2.
The translation covers the layer classes `modelcheck` admits and refuses anything else (ExportRefused),
so a file it writes either loads in Keras 2 as the same network or is not written at all.
"""

import json
from pathlib import Path

import h5py
import numpy as np

# The Keras 2 release whose `save` layout these files follow (the fixture's writer). Keras 2 readers branch on
# this only to convert Keras 1 files, so any 2.x value reads the same.
KERAS2_LAYOUT_VERSION = "2.4.0"
# h5py's default (oldest) object headers hold attributes up to 64 KiB; a larger config needs HDF5 1.8's.
_COMPACT_ATTRIBUTE_BYTES = 60_000


class ExportRefused(ValueError):
    """The model cannot be written in a Keras 2 layout; the message names the layer and the reason."""


# The config keys Keras 2's layer classes accept (tf_keras 2.21's get_config; a key Keras 2 does not know
# makes its constructor raise), for the classes modelcheck admits.
_COMMON = {"name", "trainable", "dtype"}
_REGULARIZED = {
    "activation",
    "use_bias",
    "kernel_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "kernel_constraint",
    "bias_constraint",
}
_POOLING = _COMMON | {"pool_size", "strides", "padding", "data_format"}
KERAS2_KEYS: dict[str, set[str]] = {
    "InputLayer": {"batch_input_shape", "dtype", "sparse", "ragged", "name"},
    "Conv2D": _COMMON
    | _REGULARIZED
    | {"filters", "kernel_size", "strides", "padding", "data_format"}
    | {"dilation_rate", "groups"},
    "Dense": _COMMON | _REGULARIZED | {"units"},
    "MaxPooling2D": _POOLING,
    "AveragePooling2D": _POOLING,
    "GlobalMaxPooling2D": _COMMON | {"data_format", "keepdims"},
    "GlobalAveragePooling2D": _COMMON | {"data_format", "keepdims"},
    "ZeroPadding2D": _COMMON | {"padding", "data_format"},
    "Flatten": _COMMON | {"data_format"},
    "Add": _COMMON,
    "Concatenate": _COMMON | {"axis"},
    "Activation": _COMMON | {"activation"},
    "ReLU": _COMMON | {"max_value", "negative_slope", "threshold"},
    "Softmax": _COMMON | {"axis"},
    "Dropout": _COMMON | {"rate", "noise_shape", "seed"},
    "BatchNormalization": _COMMON
    | {"axis", "momentum", "epsilon", "center", "scale", "beta_initializer", "gamma_initializer"}
    | {"moving_mean_initializer", "moving_variance_initializer", "beta_regularizer", "gamma_regularizer"}
    | {"beta_constraint", "gamma_constraint"},
}
# Keras 3 keys Keras 2 lacks, with the value that means the feature is off: dropped at that value, else refused
# (a LoRA adapter, a quantized layer, an optional input, renormalisation would change what the network is).
KERAS3_ONLY = {
    "optional": False,
    "lora_rank": None,
    "lora_alpha": None,
    "quantization_config": None,
    "synchronized": False,
    "renorm": False,
    "renorm_clipping": None,
}
# Initializers, regularizers and constraints: the config keys Keras 2's class of the same name accepts.
KERAS2_OBJECT_KEYS: dict[str, set[str]] = {
    "VarianceScaling": {"scale", "mode", "distribution", "seed"},
    **dict.fromkeys(
        ("GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform", "LecunNormal"), {"seed"}
    ),
    "RandomUniform": {"minval", "maxval", "seed"},
    "RandomNormal": {"mean", "stddev", "seed"},
    "TruncatedNormal": {"mean", "stddev", "seed"},
    "Zeros": set(),
    "Ones": set(),
    "Constant": {"value"},
    "Orthogonal": {"gain", "seed"},
    "L1": {"l1"},
    "L2": {"l2"},
    "L1L2": {"l1", "l2"},
    "MaxNorm": {"max_value", "axis"},
    "NonNeg": set(),
    "UnitNorm": {"axis"},
    "MinMaxNorm": {"min_value", "max_value", "rate", "axis"},
}
# Activations that Keras 2 knows by the same name and computes the same way (tests/defenses/test_export.py
# compares each under tf_keras). Not hard_sigmoid: Keras 2's is clip(0.2 x + 0.5), Keras 3's relu6(x + 3) / 6.
KERAS2_ACTIVATIONS = {
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
    "exponential",
}
KERAS2_DTYPES = {"float16", "bfloat16", "float32", "float64", "mixed_float16", "mixed_bfloat16"}


def save_keras2_weights(model, path: str | Path, preset: str | None = None) -> Path:
    """Write `model`'s weights as Keras 2's `save_weights` did: a `layer_names` attribute, one group per layer
    with a `weight_names` attribute, trainable weights before non-trainable ones. Keras 3 can only write its
    own `.weights.h5` layout, which Keras 2 cannot read.

    With `preset` (a name in `defenses.models.ARCHITECTURES`), refuse (ExportRefused) unless the weights fit
    that architecture layer by layer, so the file is what `load_weights` into the preset expects.
    """
    if preset is not None:
        _check_fits_preset(model, preset)
    table = _weight_table(model)
    path = Path(path)
    with h5py.File(path, "w") as handle:
        _write_weights(handle, table)
    return path


def save_keras2_model(model, path: str | Path) -> Path:
    """Write `model` as Keras 2's `model.save("x.h5")` did: root attributes `keras_version`, `backend` and
    `model_config` (Keras 2's functional or sequential config, see `keras2_model_config`) and the weights
    under `model_weights`. No optimizer state: the file is for inference and further training from scratch.

    Raises ExportRefused, before writing anything, when a layer cannot be expressed in Keras 2.
    """
    config = json.dumps(keras2_model_config(model))
    table = _weight_table(model)
    path = Path(path)
    low = "earliest" if len(config) < _COMPACT_ATTRIBUTE_BYTES else "v108"
    with h5py.File(path, "w", libver=(low, "latest")) as handle:
        handle.attrs["keras_version"] = KERAS2_LAYOUT_VERSION
        handle.attrs["backend"] = "tensorflow"
        handle.attrs["model_config"] = config
        _write_weights(handle.create_group("model_weights"), table)
    return path


def keras2_model_config(model) -> dict:
    """`model`'s config in Keras 2's form: `{"class_name": "Functional" | "Sequential", "config": ...}` with
    `batch_input_shape` on InputLayer, inbound nodes as nested `[layer, node, tensor, kwargs]` lists, dtypes
    as plain strings and objects as `{"class_name", "config"}` (no `module`, `registered_name`,
    `build_config` or dtype policies). Raises ExportRefused for what Keras 2 cannot express."""
    kind = type(model).__name__
    config = model.get_config()
    if kind == "Sequential":
        layers = [_keras2_layer(entry) for entry in config["layers"]]
        return {"class_name": "Sequential", "config": {"name": config["name"], "layers": layers}}
    if kind != "Functional":
        raise ExportRefused(f"{model.name} is a {kind} model; only functional and sequential models translate.")
    layers = []
    for entry in config["layers"]:
        layer = _keras2_layer(entry)
        layers.append(layer | {"name": layer["config"]["name"], "inbound_nodes": _keras2_nodes(entry)})
    return {
        "class_name": "Functional",
        "config": {
            "name": config["name"],
            "layers": layers,
            "input_layers": _endpoints(config["input_layers"]),
            "output_layers": _endpoints(config["output_layers"]),
        },
    }


def _keras2_layer(entry: dict) -> dict:
    class_name, config = entry["class_name"], dict(entry["config"])
    where = f"layer {config.get('name')!r} ({class_name})"
    if class_name not in KERAS2_KEYS:
        raise ExportRefused(f"{where}: no Keras 2 translation for this layer class.")
    if class_name == "InputLayer":
        config["batch_input_shape"] = config.pop("batch_shape")
    if class_name == "BatchNormalization" and not config.get("renorm"):
        config.pop("renorm_momentum", None)  # meaningless without renorm, which Keras 2's config lacks
    for key, off in KERAS3_ONLY.items():
        if key in config and config.pop(key) != off:
            raise ExportRefused(f"{where}: {key} is set; Keras 2 has no such option.")
    unknown = set(config) - KERAS2_KEYS[class_name]
    if unknown:
        raise ExportRefused(f"{where}: Keras 2 has no {', '.join(sorted(unknown))} for this layer class.")
    out = {}
    for key, value in config.items():
        if key == "dtype":
            out[key] = _keras2_dtype(value, where)
        elif key == "activation":
            out[key] = _keras2_activation(value, where)
        elif isinstance(value, dict):
            out[key] = _keras2_object(value, f"{where} {key}")
        else:
            out[key] = value
    if class_name == "InputLayer":  # Keras 2 wrote these keys in this order (see the CSAW fixture)
        out = {key: out[key] for key in ("batch_input_shape", "dtype", "sparse", "ragged", "name") if key in out}
    return {"class_name": class_name, "config": out}


def _keras2_dtype(value, where: str) -> str:
    if isinstance(value, dict):
        if value.get("class_name") != "DTypePolicy":
            raise ExportRefused(f"{where}: dtype policy {value.get('class_name')!r} (quantized?) has no Keras 2 form.")
        value = value["config"]["name"]
    if value not in KERAS2_DTYPES:
        raise ExportRefused(f"{where}: dtype {value!r} has no Keras 2 form.")
    return value


def _keras2_activation(value, where: str) -> str:
    if not isinstance(value, str) or value not in KERAS2_ACTIVATIONS:
        raise ExportRefused(
            f"{where}: activation {value!r} is not one Keras 2 computes the same way "
            f"({', '.join(sorted(KERAS2_ACTIVATIONS))})."
        )
    return value


def _keras2_object(value: dict, where: str) -> dict:
    class_name, config = value.get("class_name"), dict(value.get("config") or {})
    if class_name not in KERAS2_OBJECT_KEYS:
        raise ExportRefused(f"{where}: {class_name!r} has no Keras 2 translation.")
    for key in set(config) - KERAS2_OBJECT_KEYS[class_name]:
        if config.pop(key) is not None:  # Keras 3 options Keras 2 lacks (GlorotUniform's input_axes) when unset
            raise ExportRefused(f"{where}: {class_name} option {key} is set; Keras 2 has no such option.")
    return {"class_name": class_name, "config": config}


def _keras2_nodes(entry: dict) -> list:
    """Keras 3's `[{"args": [tensor or [tensors]], "kwargs": {}}]` as Keras 2's `[[[layer, node, tensor, {}]]]`."""
    where = f"layer {entry['config'].get('name')!r}"
    nodes = []
    for node in entry.get("inbound_nodes", []):
        args = node.get("args", [])
        # Keras 3 records call arguments left at their default too (mask=None, training=False); both Keras take
        # `training` from the model's own call, so only other values would change what the layer does
        kwargs = {
            key: value for key, value in (node.get("kwargs") or {}).items() if value is not None and value is not False
        }
        if kwargs or len(args) != 1:
            raise ExportRefused(f"{where}: called with extra arguments {sorted(kwargs)}; Keras 2 cannot replay them.")
        tensors = args[0] if isinstance(args[0], list) else [args[0]]
        node_out = []
        for tensor in tensors:
            if not isinstance(tensor, dict) or tensor.get("class_name") != "__keras_tensor__":
                raise ExportRefused(f"{where}: an input that is not a layer's output has no Keras 2 form.")
            layer_name, node_index, tensor_index = tensor["config"]["keras_history"]
            node_out.append([layer_name, node_index, tensor_index, {}])
        nodes.append(node_out)
    return nodes


def _endpoints(value: list) -> list:
    """Keras 3 writes one input or output as `[name, node, tensor]`; Keras 2 always a list of them."""
    return [list(value)] if value and isinstance(value[0], str) else [list(item) for item in value]


def _legacy_weights(layer) -> list:
    # Keras 2 reads a layer's weights in this order (trainable first), by position, not by name.
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def _weight_table(model) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """(layer name, [(Keras 2 weight name, values)]) for every layer, in the model's order."""
    table = []
    for layer in model.layers:
        if layer.name == ".":  # modelcheck and Keras admit it; to HDF5 it is the group itself
            raise ExportRefused("layer '.': HDF5 cannot hold a group of that name; Keras 2 files keep one per layer.")
        weights = [(f"{layer.name}/{weight.name}:0", _hdf5_values(weight)) for weight in _legacy_weights(layer)]
        if len({name for name, _ in weights}) != len(weights):
            raise ExportRefused(f"layer {layer.name!r}: two weights share a name; Keras 2 would mix them up.")
        table.append((layer.name, weights))
    return table


def _hdf5_values(weight) -> np.ndarray:
    """A variable's values as HDF5 stores numbers. bfloat16 (ml_dtypes) has no HDF5 type: h5py wrote it as opaque
    bytes that Keras 2 cannot cast, so it is widened to float32, exactly; Keras 2 casts it back on loading."""
    values = np.asarray(weight)
    return values.astype(np.float32) if values.dtype.name == "bfloat16" else values


def _write_weights(group: h5py.Group, table: list[tuple[str, list[tuple[str, np.ndarray]]]]) -> None:
    group.attrs["layer_names"] = np.array([name.encode() for name, _ in table], dtype="S")  # fixed-length, as Keras 2
    group.attrs["backend"] = b"tensorflow"
    group.attrs["keras_version"] = KERAS2_LAYOUT_VERSION.encode()
    for layer_name, weights in table:
        layer_group = group.create_group(layer_name)
        names = [name.encode() for name, _ in weights]
        layer_group.attrs["weight_names"] = np.array(names, dtype="S") if names else np.array([])  # Keras 2's []
        for name, values in weights:
            layer_group[name] = values  # "conv_1/kernel:0" nests as conv_1/conv_1/kernel:0, as Keras 2 wrote it


def _check_fits_preset(model, preset: str) -> None:
    from defenses.models import ARCHITECTURES

    if preset not in ARCHITECTURES:
        raise ExportRefused(f"Unknown architecture preset {preset!r}; known: {', '.join(sorted(ARCHITECTURES))}.")
    n_classes = int(model.outputs[0].shape[-1])
    expected = ARCHITECTURES[preset](n_classes=n_classes)

    def shapes(network) -> list[tuple[str, list[tuple[int, ...]]]]:
        return [
            (layer.name, [tuple(w.shape) for w in _legacy_weights(layer)]) for layer in network.layers if layer.weights
        ]

    if shapes(model) != shapes(expected):
        raise ExportRefused(
            f"{model.name} is not the {preset!r} architecture (layers with weights: {shapes(model)}); "
            "export the full model instead."
        )
