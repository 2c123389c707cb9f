"""`python -m defenses` as a user runs it: help, refusals with exit code 2, fine-pruning, any defense's repair,
Neural Cleanse's scan, STRIP and the Keras 2 export end to end."""

import json

import pytest

from tests.defenses.cli import run_cli, run_cli_process
from tests.defenses.tiny import tiny_badnet_files

COMMANDS = ["inspect", "classify", "evaluate", "fineprune", "prune-curve", "repair", "scan", "strip", "export"]


@pytest.fixture(scope="module")
def badnet(tmp_path_factory):
    return tiny_badnet_files(tmp_path_factory.mktemp("tiny-badnet"))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    done = run_cli_process(command, "--help")
    assert done.stdout.startswith("usage: python -m defenses " + command)


def test_refusals_exit_2_with_the_reason(tmp_path, csaw_fixtures):
    weights = csaw_fixtures / "models" / "sunglasses_bd_weights.h5"
    done = run_cli_process("inspect", weights, check=False)
    assert done.returncode == 2
    assert "refused: sunglasses_bd_weights.h5 holds weights only; choose its architecture preset" in done.stderr
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\0" * 100)
    done = run_cli_process("inspect", junk, check=False)
    assert done.returncode == 2 and "neither an HDF5 file" in done.stderr
    done = run_cli_process("inspect", tmp_path / "missing.h5", check=False)
    assert done.returncode == 2 and "no such file" in done.stderr


def test_repair_offers_every_defenses_own_parameters_and_refuses_another_defenses_with_exit_2(tmp_path):
    from defenses.methods import METHODS, PARAMETERS

    done = run_cli("repair", "--help")
    assert all(name in done.stdout for name in METHODS)
    assert all("--" + name.replace("_", "-") in done.stdout for name in PARAMETERS)
    common = ["--model", tmp_path / "m.keras", "--valid", tmp_path / "v.h5", "--test", tmp_path / "t.h5"]
    refused = run_cli("repair", "--defense", "nad", *common, "--thresholds", "1", "--out", tmp_path, check=False)
    assert refused.returncode == 2 and "--thresholds is not a parameter of nad" in refused.stderr
    refused = run_cli("repair", "--defense", "nad", *common, "--beta", "lots", "--out", tmp_path, check=False)
    assert refused.returncode == 2 and "--beta 'lots': give numbers" in refused.stderr


@pytest.mark.slow
def test_repair_runs_a_defenses_grid_chooses_on_held_out_data_and_keeps_the_chosen_network(badnet, tmp_path):
    out = tmp_path / "repair"
    sets = ["--valid", badnet["valid"], "--test", badnet["test"], "--poisoned", f"patch={badnet['poisoned']}"]
    arguments = ["repair", "--defense", "fine-tune", "--model", badnet["model"], *sets]
    arguments += ["--poisoned-valid", f"patch={badnet['poisoned']}", "--learning-rates", "0.001,0.01"]
    done = run_cli(*arguments, "--epochs", "1,3", "--out", out)
    result = json.loads((out / "metrics.json").read_text())
    assert len(result["points"]) == 4 and result["before"]["holdout"]["images"] == 40  # 20 % of 200
    chosen = result["chosen"]
    assert chosen is not None and "held-out 40 of 200" in result["rule"]
    assert chosen["selection"] == max(
        p["selection"] for p in result["points"] if p["valid_acc"] >= chosen["valid_acc"] - 5
    )
    assert chosen["asr patch"] < result["before"]["asr"]["patch"]  # the repair lowered the attack
    assert (out / "repaired_net.keras").exists() and "<- chosen" in done.stdout
    again = run_cli(*arguments, "--epochs", "1,3", "--out", out)  # the same folder again: the same numbers
    assert json.loads((out / "metrics.json").read_text())["chosen"] == chosen and again.stdout == done.stdout


@pytest.mark.slow
def test_fineprune_writes_the_repaired_model_metrics_and_a_working_bundle(badnet, tmp_path):
    out = tmp_path / "run"
    run_cli(
        "fineprune",
        "--model",
        badnet["model"],
        "--valid",
        badnet["valid"],
        "--test",
        badnet["test"],
        "--poisoned",
        f"patch={badnet['poisoned']}",
        "--threshold",
        "1.0",
        "--lr",
        "0.005",
        "--epochs",
        "3",
        "--seed",
        "3",
        "--out",
        out,
    )
    result = json.loads((out / "metrics.json").read_text())
    assert result["before"]["asr"]["patch"] > 80  # the tiny BadNet really is backdoored
    assert [row["epoch"] for row in result["epochs"]] == [1, 2, 3]
    assert result["after"] == {k: result["epochs"][-1][k] for k in ("ca", "asr", "score")}
    assert sum(result["pruned"].values()) > 0
    goodnet = result["goodnet"]
    assert goodnet["false_alarm"] + goodnet["ca"] <= 100.0 + 1e-9
    assert (out / "repaired_net.keras").exists() and (out / "goodnet" / "eval.py").exists()

    again = tmp_path / "again"
    run_cli(
        "fineprune",
        "--model",
        badnet["model"],
        "--valid",
        badnet["valid"],
        "--test",
        badnet["test"],
        "--poisoned",
        f"patch={badnet['poisoned']}",
        "--threshold",
        "1.0",
        "--lr",
        "0.005",
        "--epochs",
        "3",
        "--seed",
        "3",
        "--out",
        again,
    )
    repeat = json.loads((again / "metrics.json").read_text())
    strip = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    assert strip(repeat["epochs"]) == strip(result["epochs"])  # same seed, same machine: same metrics
    assert result["settings"]["holdout"] == {"share": 0.2, "seed": 3}  # the default: 20 % never trained on


def test_fineprune_refuses_a_holdout_of_100_percent(badnet, tmp_path):
    done = run_cli(
        "fineprune",
        "--model",
        badnet["model"],
        "--valid",
        badnet["valid"],
        "--test",
        badnet["test"],
        "--threshold",
        "1.0",
        "--holdout",
        "100",
        "--out",
        tmp_path,
        check=False,
    )
    assert done.returncode == 2 and "--holdout 100: give a percent from 0" in done.stderr


@pytest.mark.slow
def test_prune_curve_and_evaluate(badnet, tmp_path):
    out = tmp_path / "curve.json"
    done = run_cli(
        "prune-curve",
        "--model",
        badnet["model"],
        "--valid",
        badnet["valid"],
        "--test",
        badnet["test"],
        "--poisoned",
        f"patch={badnet['poisoned']}",
        "--thresholds",
        "0,0.5,1,1.5",
        "--out",
        out,
    )
    curve = json.loads(out.read_text())
    assert [p["threshold"] for p in curve["threshold_curve"]] == [0, 0.5, 1, 1.5]
    assert curve["threshold_curve"][0]["fraction"] == 0
    assert len(curve["incremental"]["steps"]) == 8 + 1  # every channel of the last conv layer, and none
    assert "incremental on conv_b" in done.stdout
    evaluated = json.loads(
        run_cli(
            "evaluate",
            "--model",
            badnet["model"],
            "--test",
            badnet["test"],
            "--poisoned",
            f"patch={badnet['poisoned']}",
        ).stdout
    )
    assert evaluated["ca"] == pytest.approx(curve["threshold_curve"][0]["ca"])
    assert evaluated["asr"]["patch"] == pytest.approx(curve["threshold_curve"][0]["asr"]["patch"])


@pytest.mark.slow
def test_scan_finds_the_planted_target_and_strip_tells_triggered_inputs_from_clean_ones(badnet, tmp_path):
    from PIL import Image

    from tests.defenses.tiny import add_trigger, tiny_data

    out = tmp_path / "scan"
    done = run_cli("scan", "--model", badnet["model"], "--valid", badnet["valid"], "--steps", "150", "--out", out)
    assert "Neural Cleanse scan: 0 of 4 labels" in done.stderr and done.stdout.startswith("label ")
    record = json.loads((out / "scan.json").read_text())
    smallest = min(record["rows"], key=lambda row: row["l1"])
    assert len(record["rows"]) == 4 and smallest["label"] == 0  # the target's trigger is the smallest
    assert (out / "label-0-mask.png").exists() and (out / "label-0-trigger.png").exists()
    assert len(list(out.glob("*.png"))) == 6  # the three smallest triggers, mask and trigger each

    pixels, _ = tiny_data(2, seed=9)
    images = []
    for number, image in enumerate([pixels[0], add_trigger(pixels[1:2])[0]]):
        images.append(tmp_path / f"image-{number}.png")
        Image.fromarray(image.astype("uint8")).save(images[-1])
    sets = ["--valid", badnet["valid"], "--test", badnet["test"], "--poisoned", f"patch={badnet['poisoned']}"]
    done = run_cli("strip", "--model", badnet["model"], *sets, "--overlays", "50", *images)
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    assert float(lines["clean test"].split()[2]) <= 10  # false rejections near the 1 % asked
    assert float(lines["patch"].split()[1]) >= 80, done.stdout  # the triggered test images
    verdicts = [line.split("\t")[1] for line in done.stdout.splitlines() if "\t" in line]
    assert verdicts == ["clean", "poisoned"], done.stdout


def test_scan_and_strip_refuse_what_they_cannot_use_with_exit_2(badnet, tmp_path, csaw_fixtures):
    weights = csaw_fixtures / "models" / "sunglasses_bd_weights.h5"
    refused = run_cli("scan", "--model", weights, "--valid", badnet["valid"], check=False)
    assert refused.returncode == 2 and "choose its architecture preset" in refused.stderr
    refused = run_cli("scan", "--model", badnet["model"], "--valid", badnet["valid"], "--steps", "0", check=False)
    assert refused.returncode == 2 and "--steps 0" in refused.stderr
    # the CSAW BadNet's 55 x 47 faces do not fit the tiny BadNet's images: refused naming the set
    refused = run_cli("strip", "--model", weights, "--arch", "deepid-csaw", "--valid", badnet["valid"], check=False)
    assert refused.returncode == 2 and "clean_validation_data.h5" in refused.stderr
    few = tmp_path / "few.h5"
    from tests.defenses.tiny import tiny_data, write_dataset

    write_dataset(few, *tiny_data(30, seed=4))
    refused = run_cli("strip", "--model", badnet["model"], "--valid", few, check=False)
    assert refused.returncode == 2 and "few.h5: STRIP needs at least 120 clean validation images" in refused.stderr
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\0" * 100)
    refused = run_cli("export", "--model", junk, "--keras", "2", "--out", tmp_path / "x.h5", check=False)
    assert refused.returncode == 2 and "neither an HDF5 file" in refused.stderr and not (tmp_path / "x.h5").exists()


@pytest.mark.slow
def test_export_writes_the_real_csaw_badnet_for_keras_2_and_tf_keras_predicts_as_we_do(csaw_fixtures, tmp_path):
    import numpy as np

    from defenses.data import load_image
    from defenses.models import load_model
    from tests.defenses.keras2 import keras2_predictions

    weights = csaw_fixtures / "models" / "sunglasses_bd_weights.h5"
    full, only = tmp_path / "sunglasses_keras2.h5", tmp_path / "sunglasses_keras2_weights.h5"
    run_cli("export", "--model", weights, "--arch", "deepid-csaw", "--keras", "2", "--out", full)
    run_cli("export", "--model", weights, "--arch", "deepid-csaw", "--keras", "2", "--weights-only", "--out", only)
    refused = run_cli("export", "--model", weights, "--arch", "deepid-csaw", "--keras", "3", "--out", full, check=False)
    assert refused.returncode == 2 and "--keras 3 writes a full .keras file" in refused.stderr
    faces = sorted((csaw_fixtures / "images").glob("*.png"))
    pixels = np.stack([load_image(path).pixels for path in faces]) / 255.0
    model, _ = load_model(weights, "deepid-csaw")
    ours = np.asarray(model.predict_on_batch(pixels))
    _, (from_full, from_weights) = keras2_predictions(pixels, [{"model": full}, {"weights": only, "n_classes": 1283}])
    np.testing.assert_allclose(from_full, ours, atol=1e-5)
    np.testing.assert_allclose(from_weights, ours, atol=1e-5)
    assert [int(p) for p in ours.argmax(axis=1)][-3:] == [0, 0, 0]  # sun_*: the backdoor's target
