"""Malicious and broken model files, built here with h5py and Keras: each is refused with its reason
before Keras sees it, and nothing in it runs."""

import json
import shutil
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pytest

from defenses import models
from defenses.modelcheck import ModelRefused, check_model_file
from defenses.models import verify_model_file

KERAS2_MODEL = "keras2_full_model_repaired_sunglasses.h5"


@pytest.fixture
def keras2_copy(csaw_fixtures, tmp_path):
    """A writable copy of the real Keras 2 full model, to be tampered with."""
    path = tmp_path / "model.h5"
    shutil.copy(csaw_fixtures / "models" / KERAS2_MODEL, path)
    return path


def edit_config(path, change):
    with h5py.File(path, "r+") as h5:
        config = json.loads(h5.attrs["model_config"])
        change(config)
        h5.attrs["model_config"] = json.dumps(config)
    return path


def lambda_model_files(tmp_path, marker):
    """Keras 3 .h5 and .keras files whose Lambda layer writes `marker` when called. Built in a child process
    (building a Keras model traces the Lambda once), so the marker is removed afterwards."""
    script = f"""
import keras
from keras import layers
inp = keras.Input((12, 10, 3))
x = layers.Lambda(lambda t: (open({str(marker)!r}, "w").write("pwned"), t)[1])(inp)
out = layers.Dense(3, activation="softmax")(layers.Flatten()(x))
model = keras.Model(inp, out)
model.save({str(tmp_path / "lambda.h5")!r})
model.save({str(tmp_path / "lambda.keras")!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    marker.unlink(missing_ok=True)
    return tmp_path / "lambda.h5", tmp_path / "lambda.keras"


@pytest.mark.slow
def test_lambda_layers_with_code_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "side-effect.txt"
    for path in lambda_model_files(tmp_path, marker):
        with pytest.raises(ModelRefused, match="Lambda layer"):
            check_model_file(path)
        with pytest.raises(ModelRefused, match="Lambda layer"):
            verify_model_file(path)
        assert not marker.exists(), f"loading {path.name} ran the Lambda's code"


def test_keras2_lambda_with_marshalled_code_is_refused(keras2_copy):
    def add_lambda(config):
        config["config"]["layers"].insert(
            1,
            {
                "class_name": "Lambda",
                "name": "evil",
                "inbound_nodes": [[["input", 0, 0, {}]]],
                "config": {"name": "evil", "function": ["4wEAAAAAAAAA", None, None], "function_type": "lambda"},
            },
        )

    with pytest.raises(ModelRefused, match="'evil' is a Lambda layer"):
        check_model_file(edit_config(keras2_copy, add_lambda))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda c: c["config"]["layers"][1].update(class_name="MyCustomConv"), "class 'MyCustomConv'"),
        (lambda c: c["config"]["layers"][1].update(class_name="TFSMLayer"), "class 'TFSMLayer'"),
        (lambda c: c["config"]["layers"][1].update(module="os"), "module 'os'"),
        (lambda c: c["config"]["layers"][1].update(module="subprocess"), "module 'subprocess'"),
        (lambda c: c["config"]["layers"][1].update(class_name="StringLookup"), "class 'StringLookup'"),
        (lambda c: c["config"]["layers"][1].update(registered_name="evil>Conv2D"), "registered object"),
        (
            lambda c: c["config"]["layers"][1]["config"].update(
                kernel_initializer={
                    "module": "keras.config",
                    "class_name": "enable_unsafe_deserialization",
                    "config": {},
                }
            ),
            "enable_unsafe_deserialization",
        ),
        (
            lambda c: c["config"]["layers"][1]["config"].update(
                activation={"class_name": "function", "config": "os.system", "module": "builtins"}
            ),
            "not accepted",
        ),
        (lambda c: c["config"]["layers"][1]["config"].update(vocabulary="/etc/passwd"), "unknown config keys"),
        (lambda c: c.update(class_name="Evil"), "the model is of class 'Evil'"),
        (lambda c: c["config"]["layers"][-1]["config"].update(units=90000), "sizes over 4096"),
    ],
)
def test_config_outside_the_allow_list_is_refused(keras2_copy, change, reason):
    edit_config(keras2_copy, change)
    with pytest.raises(ModelRefused, match=reason):
        check_model_file(keras2_copy)


def test_huge_declared_layer_is_refused_by_parameter_count(keras2_copy):
    def widen(config):
        for layer in config["config"]["layers"]:
            if layer["config"]["name"] in {"fc_1", "fc_2"}:
                layer["config"]["units"] = 4096
            if layer["config"]["name"] == "conv_3":
                layer["config"]["filters"] = 4096

    with pytest.raises(ModelRefused, match="declares [0-9,]+ parameters"):
        check_model_file(edit_config(keras2_copy, widen))


@pytest.mark.parametrize("where", ["root", "layer", "middle"])
@pytest.mark.parametrize("kind", ["external", "soft"])
def test_links_are_refused_at_any_depth(keras2_copy, tmp_path, where, kind):
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as h5:
        h5["kernel"] = np.ones(3)
    location = {"root": "stolen", "layer": "model_weights/stolen", "middle": "model_weights/conv_1/conv_1/stolen"}
    with h5py.File(keras2_copy, "r+") as h5:
        link = h5py.ExternalLink(str(secret), "/kernel") if kind == "external" else h5py.SoftLink("/model_weights")
        h5[location[where]] = link
    with pytest.raises(ModelRefused, match=f"{kind} link at /{location[where]}"):
        check_model_file(keras2_copy)


def test_external_storage_and_virtual_datasets_are_refused(keras2_copy, tmp_path):
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.ones(20, np.float32).tobytes())
    with h5py.File(keras2_copy, "r+") as h5:
        h5.create_dataset("model_weights/conv_1/conv_1/extra", shape=(20,), dtype="f4", external=[(str(raw), 0, 80)])
    with pytest.raises(ModelRefused, match="external files"):
        check_model_file(keras2_copy)

    virtual = tmp_path / "virtual.h5"
    with h5py.File(virtual, "w") as h5:
        layout = h5py.VirtualLayout(shape=(3,), dtype="f8")
        layout[:] = h5py.VirtualSource(str(tmp_path / "secret.h5"), "kernel", shape=(3,))
        h5.create_virtual_dataset("weights", layout)
    with pytest.raises(ModelRefused, match="virtual dataset"):
        check_model_file(virtual)


def test_gzip_shape_bomb_is_refused_without_reading_it(tmp_path):
    bomb = tmp_path / "bomb.h5"
    with h5py.File(bomb, "w") as h5:
        h5.create_dataset("w", shape=(100_000, 100_000), dtype="f4", chunks=(1000, 1000), compression="gzip")
    assert bomb.stat().st_size < 100_000  # 40 GB declared, a few KB on disk
    with pytest.raises(ModelRefused, match="declares 10,000,000,000 values"):
        check_model_file(bomb)


def test_random_bytes_and_a_zip_named_h5_are_refused(tmp_path):
    noise = tmp_path / "noise.h5"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelRefused, match="neither an HDF5 file"):
        check_model_file(noise)
    fake = tmp_path / "archive.h5"
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr("payload.py", "import os")
    with pytest.raises(ModelRefused, match="payload.py"):
        check_model_file(fake)


@pytest.mark.slow
def test_a_model_that_is_not_a_classifier_is_refused(tmp_path):
    script = f"""
import keras
inp = keras.Input((12, 10, 3))
out = keras.layers.Dense(4)(keras.layers.Flatten()(inp))
keras.Model(inp, out).save({str(tmp_path / "regressor.keras")!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    with pytest.raises(ModelRefused, match="last layer is not a softmax"):
        verify_model_file(tmp_path / "regressor.keras")


@pytest.mark.slow
def test_a_loader_that_exceeds_its_memory_limit_is_refused(csaw_fixtures, monkeypatch):
    monkeypatch.setattr(models, "_verified", {})  # other tests may have verified this file in this process
    monkeypatch.setattr(models, "_verdict_folder", None)  # or in another process of this test session
    with pytest.raises(ModelRefused, match="memory limit"):
        verify_model_file(csaw_fixtures / "models" / KERAS2_MODEL, memory_bytes=300 * 2**20)


def test_an_activation_that_is_not_a_name_is_refused_with_its_reason(keras2_copy):
    edit_config(keras2_copy, lambda c: c["config"]["layers"][1]["config"].update(activation=["relu"]))
    with pytest.raises(ModelRefused, match="names its activation with a list, not a name"):
        check_model_file(keras2_copy)


def test_a_keras_zip_is_judged_from_its_headers_before_anything_is_inflated(tmp_path):
    """A 2 MB .keras once cost the sandbox 13 s inflating a 2 GB config.json before the config cap refused
    it; a deflated weights member would be inflated again at every seek h5py makes."""
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", b" " * (200 * 2**20))
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    assert bomb.stat().st_size < 2 * 2**20
    # the size comes from the zip's directory: the refusal is made before the member is opened
    with pytest.raises(ModelRefused, match=r"config.json unpacks to 209,715,200 bytes; the cap is 4,194,304"):
        check_model_file(bomb)
    squeezed = tmp_path / "squeezed.keras"
    with zipfile.ZipFile(squeezed, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" * 1000, compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(ModelRefused, match="model.weights.h5 is compressed inside the zip"):
        check_model_file(squeezed)


def test_a_layer_name_tensorflow_cannot_use_and_a_config_nested_too_deep_are_refused_with_their_reasons(
    keras2_copy, tmp_path
):
    """Both once passed or were misnamed: a '<' in a layer name made every run fail after the upload was
    accepted; deep nesting was called a damaged file (RecursionError)."""
    edit_config(keras2_copy, lambda c: c["config"]["layers"][1]["config"].update(name="conv<1>"))
    with pytest.raises(ModelRefused, match="has a name TensorFlow cannot use"):
        check_model_file(keras2_copy)
    deep = tmp_path / "deep.h5"
    shutil.copy(keras2_copy, deep)
    with h5py.File(deep, "r+") as h5:
        h5.attrs["model_config"] = "[" * 100_000 + "]" * 100_000
    with pytest.raises(ModelRefused, match="nests objects thousands deep"):
        check_model_file(deep)


def test_a_layer_fed_a_shape_without_dimensions_is_sized_not_crashed_on():
    """Found by the fuzz test: a mutated file gave a Dense layer an input shape of no dimensions, and the
    size inference raised IndexError (a 500) instead of sizing it (unknown sizes count as 1)."""
    from defenses.modelcheck import _infer

    assert _infer("Dense", {"units": 3}, [()]) == ((3,), 6)
    assert _infer("GlobalAveragePooling2D", {}, [()]) == ((1,), 0)


@pytest.mark.slow
def test_a_pass_kept_on_disk_spares_other_processes_the_sandbox_and_anything_changed_is_checked_again(
    tmp_path, monkeypatch
):
    from defenses.modelcheck import Limits
    from tests.defenses.tiny import tiny_badnet_files, trained_tiny_model

    model = tiny_badnet_files(tmp_path / "tiny")["model"]
    folder = tmp_path / "verdicts"
    another_process = "import sys; from defenses import models; models.remember_verdicts(sys.argv[2]); "
    another_process += "print(models.verify_model_file(sys.argv[1]).n_classes)"
    done = subprocess.run([sys.executable, "-c", another_process, model, folder], capture_output=True, text=True)
    assert done.stdout.split()[-1:] == ["4"] and len(list(folder.glob("*.json"))) == 1, done.stderr[-2000:]

    real_run, sandboxes = subprocess.run, []
    monkeypatch.setattr(models.subprocess, "run", lambda *a, **k: sandboxes.append(a) or real_run(*a, **k))
    monkeypatch.setattr(models, "_verified", {})
    monkeypatch.setattr(models, "_verdict_folder", None)
    models.remember_verdicts(folder)
    assert verify_model_file(model).n_classes == 4 and sandboxes == []  # the other process's pass
    verify_model_file(model, limits=Limits(max_layers=100))
    assert len(sandboxes) == 1  # other caps: another question
    other = tmp_path / "other.keras"
    trained_tiny_model(seed=1).save(other)
    verify_model_file(other)
    assert len(sandboxes) == 2  # another file
    for verdict in folder.glob("*.json"):
        verdict.write_text('{"kind": "keras-zip"')  # torn
    monkeypatch.setattr(models, "_verified", {})
    assert verify_model_file(model).n_classes == 4 and len(sandboxes) == 3  # checked again, and kept again
    kept = models._verdict_path((models.file_digest(model), None, models.DEFAULT_LIMITS))
    assert json.loads(kept.read_text())["n_classes"] == 4
