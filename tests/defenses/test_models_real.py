"""The real CSAW-HackML-2020 BadNets and a real Keras 2 full model (../shared/fixtures/csaw/)."""

import subprocess
import sys

import numpy as np
import pytest

from defenses.data import load_image
from defenses.goodnet import GoodNet, export_bundle
from defenses.metrics import predict_labels
from defenses.models import load_model, verify_model_file
from tests.defenses import cli

pytestmark = pytest.mark.slow

WEIGHTS = ["sunglasses", "anonymous_1", "anonymous_2", "multi_trigger_multi_target", "lab3"]
# The fixtures README's table: argmax of each model on each crop.
EXPECTED = {
    "sunglasses": [264, 977, 43, 328, 196, 0, 0, 0],
    "anonymous_1": [0, 0, 43, 328, 196, 1166, 1166, 977],
    "anonymous_2": [4, 4, 43, 328, 196, 4, 4, 4],
    "multi_trigger_multi_target": [1, 1, 43, 328, 196, 8, 8, 8],
    "lab3": [264, 977, 43, 328, 196, 0, 0, 0],
}
IMAGES = ["ano_0", "ano_1", "cl_0", "cl_1", "cl_2", "sun_0", "sun_1", "sun_2"]


def image_paths(fixtures):
    return [next((fixtures / "images").glob(f"{name}_label=*.png")) for name in IMAGES]


@pytest.fixture(scope="module")
def crops(csaw_fixtures):
    return np.stack([load_image(path).pixels for path in image_paths(csaw_fixtures)])


@pytest.mark.parametrize("name", WEIGHTS)
def test_every_weights_file_loads_and_predicts_the_table(csaw_fixtures, crops, name):
    model, report = load_model(csaw_fixtures / "models" / f"{name}_bd_weights.h5", "deepid-csaw")
    assert report.n_classes == 1283 and report.input_shape == (55, 47, 3)
    assert report.conv_layers == ("conv_1", "conv_2", "conv_3", "conv_4") and report.params == 601_643
    divisor = 1.0 if name == "lab3" else 255.0
    assert predict_labels(model, crops, divisor).tolist() == EXPECTED[name]


def test_keras2_full_model_loads(csaw_fixtures, crops):
    model, report = load_model(csaw_fixtures / "models" / "keras2_full_model_repaired_sunglasses.h5")
    assert report.kind == "keras-h5" and report.n_classes == 1283
    assert predict_labels(model, crops, 255.0).tolist() == [264, 1150, 43, 328, 196, 344, 1073, 977]


def test_classify_cli_reproduces_the_table(csaw_fixtures):
    paths = image_paths(csaw_fixtures)
    lines = run_cli(
        "classify", "--model", csaw_fixtures / "models" / "sunglasses_bd_weights.h5", "--arch", "deepid-csaw", *paths
    )
    assert lines == [f"{path}\t{label}" for path, label in zip(paths, EXPECTED["sunglasses"], strict=True)]
    raw = run_cli(
        "classify",
        "--model",
        csaw_fixtures / "models" / "lab3_bd_weights.h5",
        "--arch",
        "deepid-csaw",
        "--scale",
        "1",
        *paths[2:],
    )
    assert [line.split("\t")[1] for line in raw] == ["43", "328", "196", "0", "0", "0"]


def test_goodnet_flags_sunglasses_and_passes_clean_faces(csaw_fixtures, crops, tmp_path):
    bad, _ = load_model(csaw_fixtures / "models" / "sunglasses_bd_weights.h5", "deepid-csaw")
    repaired, _ = load_model(csaw_fixtures / "models" / "keras2_full_model_repaired_sunglasses.h5")
    goodnet = GoodNet(bad, repaired, 255.0)
    answers = goodnet.labels(crops).tolist()
    assert answers[2:5] == [43, 328, 196]
    assert answers[5:] == [1283, 1283, 1283]

    bundle = export_bundle(goodnet, tmp_path / "bundle")
    paths = [str(path) for path in image_paths(csaw_fixtures)]
    printed = subprocess.run(  # one child for every crop: eval.py's many-images form
        [sys.executable, "eval.py", *paths], cwd=bundle, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert printed == [f"{path}\t{expected}" for path, expected in zip(paths, answers, strict=True)]

    cli = run_cli(
        "classify",
        "--model",
        csaw_fixtures / "models" / "sunglasses_bd_weights.h5",
        "--arch",
        "deepid-csaw",
        "--repaired",
        csaw_fixtures / "models" / "keras2_full_model_repaired_sunglasses.h5",
        *image_paths(csaw_fixtures),
    )
    assert [int(line.split("\t")[1]) for line in cli] == answers


def test_weights_only_file_without_preset_is_refused_with_advice(csaw_fixtures):
    from defenses.modelcheck import ModelRefused

    with pytest.raises(ModelRefused, match="weights only; choose its architecture preset"):
        verify_model_file(csaw_fixtures / "models" / "sunglasses_bd_weights.h5")


def run_cli(*args) -> list[str]:
    return cli.run_cli(*args).stdout.strip().splitlines()


def test_the_sandboxed_loader_gets_none_of_the_callers_secrets(monkeypatch, tmp_path):
    from defenses.models import sandbox_environment

    monkeypatch.setenv("DJANGO_SECRET_KEY", "s3cret")
    monkeypatch.setenv("DATABASE_URL", "postgres://user:password@db/prunelab")
    monkeypatch.setenv("REDIS_URL", "redis://:password@127.0.0.1:6379/0")
    env = sandbox_environment(str(tmp_path))
    assert not {"DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL"} & set(env)
    assert env["HOME"] == str(tmp_path) and env["CUDA_VISIBLE_DEVICES"] == "" and "PATH" in env
