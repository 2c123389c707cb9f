"""Exports the CSAW-era tools load: Keras 2 full-model and weights-only `.h5` files written from Keras 3 models.

The fast tests compare the files with what Keras 2 itself wrote (the real CSAW fixture) and check the refusals;
the slow ones load the exports with tf_keras in a child process (tests/defenses/keras2.py) and compare its
predictions with the Keras 3 model's."""

import json

import h5py
import numpy as np
import pytest

from defenses.export import KERAS2_ACTIVATIONS, ExportRefused, save_keras2_model, save_keras2_weights
from defenses.models import build_deepid_csaw, load_and_describe_unsandboxed
from tests.defenses.keras2 import keras2_predictions
from tests.defenses.tiny import SHAPE

REPAIRED_FIXTURE = "keras2_full_model_repaired_sunglasses.h5"
ATOL = 1e-5  # float32 round-off between two TensorFlow graphs of the same network


def assert_same_predictions(keras2: np.ndarray, keras3: np.ndarray) -> float:
    np.testing.assert_allclose(keras2, keras3, rtol=0, atol=ATOL)
    np.testing.assert_array_equal(keras2.argmax(axis=1), keras3.argmax(axis=1))
    return float(np.abs(keras2 - keras3).max())


def tree(path) -> dict:
    """Every group and dataset of an HDF5 file: (shape, dtype, attributes)."""
    found = {}
    with h5py.File(path, "r") as handle:

        def visit(name, item):
            attrs = {key: np.asarray(value).tolist() for key, value in item.attrs.items()}
            found[name] = (getattr(item, "shape", None), str(getattr(item, "dtype", "")), attrs)

        handle.visititems(visit)
    return found


def test_the_real_csaw_network_re_exported_has_the_layout_keras_2_wrote(csaw_fixtures, tmp_path):
    source = csaw_fixtures / "models" / REPAIRED_FIXTURE
    model, _ = load_and_describe_unsandboxed(source)
    out = save_keras2_model(model, tmp_path / "repaired_keras2.h5")
    with h5py.File(out, "r") as ours, h5py.File(source, "r") as theirs:
        assert {key: ours.attrs[key] for key in ("keras_version", "backend")} == {
            "keras_version": "2.4.0",
            "backend": "tensorflow",
        }
        written, original = json.loads(ours.attrs["model_config"]), json.loads(theirs.attrs["model_config"])
        for weights in (ours["model_weights/conv_1/conv_1/kernel:0"], theirs["model_weights/conv_1/conv_1/kernel:0"]):
            assert weights.shape == (4, 4, 3, 20)
        np.testing.assert_array_equal(
            ours["model_weights/output/output/bias:0"], theirs["model_weights/output/output/bias:0"]
        )
    for layer in original["config"]["layers"]:  # Keras 3's Dense leaves activity_regularizer out; Keras 2 defaults it
        if layer["class_name"] == "Dense":
            assert layer["config"].pop("activity_regularizer") is None
    assert written == original  # Functional, batch_input_shape, nested inbound nodes, plain dtypes
    assert tree(out) == tree(source)  # model_weights: the same groups, datasets and weight_names


def test_the_config_carries_no_keras_3_only_keys(tmp_path):
    config = json.loads(h5py.File(save_keras2_model(branchy_model(), tmp_path / "m.h5"))["/"].attrs["model_config"])
    text = json.dumps(config)
    for key in ("module", "registered_name", "build_config", "batch_shape", "DTypePolicy", "__keras_tensor__"):
        assert f'"{key}"' not in text, key
    layers = {layer["name"]: layer for layer in config["config"]["layers"]}
    assert layers["input"]["config"]["batch_input_shape"] == [None, *SHAPE]
    assert layers["cat"]["inbound_nodes"] == [[["flat", 0, 0, {}], ["gap", 0, 0, {}], ["gmp", 0, 0, {}]]]
    assert {layer["config"]["dtype"] for layer in config["config"]["layers"]} == {"float32"}
    assert config["config"]["output_layers"] == [["soft", 0, 0]]


def test_what_keras_2_cannot_express_is_refused_and_nothing_is_written(tmp_path):
    import keras
    from keras import layers

    def small(*middle):
        inputs = keras.Input((4,), name="input")
        x = inputs
        for layer in middle:
            x = layer(x)
        return keras.Model(inputs, layers.Dense(2, activation="softmax", name="out")(x))

    cases = [
        (small(layers.Dense(3, activation="hard_sigmoid", name="hs")), "'hs' (Dense): activation 'hard_sigmoid'"),
        (small(layers.LayerNormalization(name="ln")), "'ln' (LayerNormalization): no Keras 2 translation"),
        (small(layers.Dense(3, name="lora", lora_rank=2)), "'lora' (Dense): lora_rank is set"),
        (small(layers.Dense(3, name="q", kernel_initializer="identity")), "'q' (Dense) kernel_initializer"),
        # modelcheck admits the name; HDF5 reads "." as the group itself (an attack review: h5py's ValueError was a
        # 500 on the GoodNet bundle and a 404 on the run's Keras 2 download)
        (small(layers.Dense(3, name=".")), "layer '.': HDF5 cannot hold a group of that name"),
        (keras.Sequential([keras.Input((4,)), layers.Dense(2, name="d")]), None),  # Sequential translates
    ]
    for number, (model, message) in enumerate(cases):
        path = tmp_path / f"model-{number}.h5"
        if message is None:
            assert save_keras2_model(model, path).exists()
            continue
        with pytest.raises(ExportRefused) as refusal:
            save_keras2_model(model, path)
        assert message in str(refusal.value) and not path.exists()


def test_weights_for_a_preset_must_fit_it(tmp_path):
    from tests.defenses.tiny import tiny_model

    with pytest.raises(ExportRefused, match="not the 'deepid-csaw' architecture"):
        save_keras2_weights(tiny_model(), tmp_path / "w.h5", "deepid-csaw")
    assert not (tmp_path / "w.h5").exists()
    path = save_keras2_weights(build_deepid_csaw(n_classes=7), tmp_path / "w.h5", "deepid-csaw")
    with h5py.File(path, "r") as handle:
        names = [name.decode() for name in handle.attrs["layer_names"]]
        assert names[:3] == ["input", "conv_1", "pool_1"] and len(names) == 15
        assert [n.decode() for n in handle["conv_1"].attrs["weight_names"]] == ["conv_1/kernel:0", "conv_1/bias:0"]
        assert handle["output/output/kernel:0"].shape == (160, 7) and len(handle["pool_1"].attrs["weight_names"]) == 0


def test_the_synthetic_benchmark_writes_its_weights_with_the_same_function():
    from defenses import export, synthetic

    assert synthetic.save_keras2_weights is export.save_keras2_weights


def branchy_model(n_classes: int = 5):
    """Every layer class the export translates, three branches into a Concatenate, an Add, a BatchNormalization
    with moving statistics away from 0 and 1, and one Dense per Keras 2 activation."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    inputs = keras.Input(SHAPE, name="input")
    x = layers.ZeroPadding2D(1, name="pad")(inputs)
    x = layers.Conv2D(6, 3, activation="relu", name="conv_a")(x)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    conv_b = layers.Conv2D(4, 3, padding="same", activation="elu", name="conv_b")(x)
    a = layers.Flatten(name="flat")(layers.AveragePooling2D(2, name="avg")(conv_b))
    b = layers.GlobalAveragePooling2D(name="gap")(layers.Conv2D(5, 2, activation="tanh", name="conv_c")(x))
    c = layers.GlobalMaxPooling2D(name="gmp")(x)
    h = layers.Concatenate(name="cat")([a, b, c])
    ladder = [layers.Dense(4, activation=name, name=f"d_{name}")(h) for name in sorted(KERAS2_ACTIVATIONS)]
    h = layers.ReLU(max_value=6.0, negative_slope=0.1, threshold=0.05, name="relu")(
        layers.Concatenate(name="ladder")(ladder)
    )
    h = layers.Dropout(0.3, name="drop")(h)
    h = layers.Activation("gelu", name="act")(
        layers.Add(name="add")([layers.Dense(8, name="e1")(h), layers.Dense(8, name="e2")(h)])
    )
    model = keras.Model(inputs, layers.Softmax(name="soft")(layers.Dense(n_classes, name="logits")(h)))
    rng = np.random.default_rng(3)
    model.get_layer("bn").set_weights(
        [rng.uniform(0.5, 2, 6), rng.normal(0, 1, 6), rng.normal(0, 1, 6), rng.uniform(0.5, 2, 6)]
    )
    return model


@pytest.mark.slow
def test_a_branching_model_a_sequential_one_and_every_activation_predict_the_same_under_tf_keras(tmp_path):
    import keras
    from keras import layers

    branchy = branchy_model()
    sequential = keras.Sequential(
        [keras.Input(SHAPE), layers.Conv2D(3, 3, activation="relu", name="c"), layers.Flatten(name="f")]
        + [layers.Dense(4, activation="softmax", name="o")],
        name="seq",
    )
    # one output per activation, so that no activation's difference hides behind another's
    ladder = keras.Model(branchy.inputs, [branchy.get_layer(f"d_{name}").output for name in sorted(KERAS2_ACTIVATIONS)])
    models = {"branchy": branchy, "sequential": sequential, "ladder": ladder}
    pixels = np.random.default_rng(0).uniform(0, 1, (64, *SHAPE)).astype(np.float32)
    logits = branchy.get_layer("logits")  # centred on the batch, so that its argmax is not one class for all
    centre = keras.Model(branchy.inputs, logits.output).predict_on_batch(pixels).mean(axis=0)
    logits.set_weights([logits.get_weights()[0], -centre])
    files = [save_keras2_model(model, tmp_path / f"{name}.h5") for name, model in models.items()]
    version, (branchy2, sequential2, ladder2) = keras2_predictions(pixels, [{"model": path} for path in files])
    assert version == "2.21.0"
    assert assert_same_predictions(branchy2, np.asarray(branchy.predict_on_batch(pixels))) < ATOL
    assert assert_same_predictions(sequential2, np.asarray(sequential.predict_on_batch(pixels))) < ATOL
    assert len(np.unique(branchy2.argmax(axis=1))) >= 3  # the batch reaches several classes
    ladder3 = np.stack([np.asarray(out) for out in ladder.predict_on_batch(pixels)])
    assert ladder2.shape == ladder3.shape == (len(KERAS2_ACTIVATIONS), 64, 4)
    for name, ours, theirs in zip(sorted(KERAS2_ACTIVATIONS), ladder2, ladder3, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=ATOL, err_msg=name)  # exponential reaches 14


@pytest.mark.slow
def test_bfloat16_weights_are_written_as_numbers_keras_2_reads(tmp_path):
    """An attack review: a layer with the bfloat16 dtype (modelcheck admits the policy) was written as opaque
    2-byte HDF5 data ('|V2'), which tf_keras' load_model fails on ("No cast function available"): a file the
    export promised to load. bfloat16 widens to float32 exactly, and Keras 2 casts it back on loading."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(5)
    inputs = keras.Input((6,), name="input")
    hidden = layers.Dense(8, activation="relu", name="half", dtype="bfloat16")(inputs)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax", name="out")(hidden))
    path = save_keras2_model(model, tmp_path / "bf16.h5")
    with h5py.File(path, "r") as handle:
        assert handle["model_weights/half/half/kernel:0"].dtype == np.float32
    pixels = np.random.default_rng(5).uniform(-1, 1, (32, 6)).astype(np.float32)
    _, (predicted,) = keras2_predictions(pixels, [{"model": path}])
    # both compute the bfloat16 layer in bfloat16: equal up to its rounding, not float32's
    np.testing.assert_allclose(predicted, np.asarray(model.predict_on_batch(pixels)), atol=2e-2)


@pytest.fixture(scope="module")
def fine_pruned(tmp_path_factory):
    """The synthetic `tiny` preset's sunglasses BadNet, read as Keras 2 weights + the deepid-csaw preset (as a
    CSAW upload), fine-pruned at T 0.8 for 2 epochs, with its test images (clean and triggered)."""
    from defenses.methods.fineprune import run_finetune
    from defenses.runner import Inputs, load_inputs
    from tests.defenses.tiny import tiny_preset

    out = tiny_preset(tmp_path_factory.mktemp("preset"))
    folder = out / "sunglasses"
    inputs = Inputs(
        model=folder / "sunglasses_bd_weights.h5",
        arch="deepid-csaw",
        divisor=255.0,
        valid=out / "data" / "clean_validation_data.h5",
        test=out / "data" / "clean_test_data.h5",
        poisoned={"sunglasses": folder / "sunglasses_poisoned_data.h5"},
    )
    loaded = load_inputs(inputs)
    points = {}
    config = {"threshold": 0.8, "lr": 0.001, "epochs": 2, "layers": [], "seed": 0}
    repaired = run_finetune(loaded, config, lambda position, metrics: points.__setitem__(position, metrics))
    pixels = np.concatenate([loaded.clean[0][:96], loaded.poisoned["sunglasses"][0][:96]]) / 255.0
    return repaired, points[0]["pruned"], pixels.astype(np.float32)


@pytest.mark.slow
def test_a_fine_pruned_deepid_csaw_network_loads_in_tf_keras_as_full_model_and_as_weights(fine_pruned, tmp_path):
    repaired, pruned, pixels = fine_pruned
    assert sum(pruned.values()) > 0  # masks were applied
    full = save_keras2_model(repaired, tmp_path / "repaired_keras2.h5")
    weights = save_keras2_weights(repaired, tmp_path / "repaired_keras2_weights.h5", "deepid-csaw")
    with h5py.File(full, "r") as handle:  # the pruned channels travel as exact zeros
        for layer, count in pruned.items():
            kernel, bias = (np.asarray(handle[f"model_weights/{layer}/{layer}/{w}:0"]) for w in ("kernel", "bias"))
            silent = [c for c in range(kernel.shape[-1]) if not kernel[..., c].any() and bias[c] == 0]
            assert len(silent) == count, layer
    keras3 = np.asarray(repaired.predict(pixels, verbose=0))
    n_classes = keras3.shape[1]
    version, (from_full, from_weights) = keras2_predictions(
        pixels, [{"model": full}, {"weights": weights, "n_classes": n_classes}]
    )
    assert version == "2.21.0"
    assert assert_same_predictions(from_full, keras3) < ATOL
    assert assert_same_predictions(from_weights, keras3) < ATOL
    for path, arch in ((full, None), (weights, "deepid-csaw")):  # and Prunelab reads its own exports back
        again, report = load_and_describe_unsandboxed(path, arch)
        assert report.n_classes == n_classes
        np.testing.assert_array_equal(np.asarray(again.predict(pixels, verbose=0)), keras3)


# The fixtures README's table: argmax on ano_0, ano_1, cl_0, cl_1, cl_2, sun_0, sun_1, sun_2 (pixels / 255).
BADNET_LABELS = [264, 977, 43, 328, 196, 0, 0, 0]
REPAIRED_LABELS = [264, 1150, 43, 328, 196, 344, 1073, 977]


@pytest.mark.slow
def test_the_real_csaw_networks_re_exported_predict_the_same_under_tf_keras(csaw_fixtures, tmp_path):
    from defenses.data import load_image
    from defenses.models import load_model

    names = ["ano_0", "ano_1", "cl_0", "cl_1", "cl_2", "sun_0", "sun_1", "sun_2"]
    crops = np.stack([load_image(next((csaw_fixtures / "images").glob(f"{n}_label=*.png"))).pixels for n in names])
    noisy = np.clip(
        np.repeat(crops, 3, axis=0) + np.random.default_rng(0).normal(0, 12, (24, *crops.shape[1:])), 0, 255
    )
    pixels = (np.concatenate([crops, noisy]) / 255.0).astype(np.float32)
    models = csaw_fixtures / "models"
    bad, _ = load_model(models / "sunglasses_bd_weights.h5", "deepid-csaw")
    repaired, _ = load_model(models / REPAIRED_FIXTURE)
    jobs = [
        {"weights": save_keras2_weights(bad, tmp_path / "bad_weights.h5", "deepid-csaw"), "n_classes": 1283},
        {"model": save_keras2_model(bad, tmp_path / "bad.h5")},
        {"model": save_keras2_model(repaired, tmp_path / "repaired.h5")},
        {"model": models / REPAIRED_FIXTURE},  # what Keras 2 reads from the file Keras 2 wrote
    ]
    _, (bad_weights, bad_full, repaired_ours, repaired_original) = keras2_predictions(pixels, jobs)
    bad3, repaired3 = (np.asarray(m.predict(pixels, verbose=0)) for m in (bad, repaired))
    assert assert_same_predictions(bad_weights, bad3) < ATOL and assert_same_predictions(bad_full, bad3) < ATOL
    assert assert_same_predictions(repaired_ours, repaired3) < ATOL
    np.testing.assert_array_equal(repaired_ours, repaired_original)  # the same file contents, the same answers
    assert bad_full[:8].argmax(axis=1).tolist() == BADNET_LABELS
    assert repaired_ours[:8].argmax(axis=1).tolist() == REPAIRED_LABELS
