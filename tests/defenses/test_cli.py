"""`python -m defenses` as a user runs it: help, refusals with exit code 2, and fine-pruning end to end."""

import json
import subprocess
import sys

import pytest

from tests.defenses.tiny import tiny_badnet_files

COMMANDS = ["inspect", "classify", "evaluate", "fineprune", "prune-curve", "repair"]


def run_cli(*args, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "defenses", *map(str, args)], capture_output=True, text=True)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def badnet(tmp_path_factory):
    return tiny_badnet_files(tmp_path_factory.mktemp("tiny-badnet"))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    done = run_cli(command, "--help")
    assert done.stdout.startswith("usage: python -m defenses " + command)


def test_refusals_exit_2_with_the_reason(tmp_path, csaw_fixtures):
    weights = csaw_fixtures / "models" / "sunglasses_bd_weights.h5"
    done = run_cli("inspect", weights, check=False)
    assert done.returncode == 2
    assert "refused: sunglasses_bd_weights.h5 holds weights only; choose its architecture preset" in done.stderr
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\0" * 100)
    done = run_cli("inspect", junk, check=False)
    assert done.returncode == 2 and "neither an HDF5 file" in done.stderr
    done = run_cli("inspect", tmp_path / "missing.h5", check=False)
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
