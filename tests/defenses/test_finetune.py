"""Fine-tuning that survives a kill: one checkpoint per run, rewritten after every epoch, and a resumed run
that ends where an uninterrupted one ends, to the last digit."""

import numpy as np
import pytest

from defenses.finetune import CHECKPOINT, checkpoint_epoch, epoch_order
from defenses.methods.fineprune import run_finetune
from defenses.runner import Inputs, load_inputs
from tests.defenses.tiny import tiny_badnet_files

CONFIG = {"threshold": 1.0, "lr": 0.01, "epochs": 5, "layers": [], "seed": 3}


class Killed(Exception):
    """Stands for the SIGKILL of tests/lab/test_experiments.py: the run stops between two epochs."""


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    files = tiny_badnet_files(tmp_path_factory.mktemp("finetune"))
    paths = {name: files[name] for name in ("model", "valid", "test")}
    return load_inputs(Inputs(**paths, arch=None, divisor=255.0, poisoned={"patch": files["poisoned"]}))


def without_timing(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key not in ("seconds", "resumed_from")}


def test_a_resumed_run_ends_where_an_uninterrupted_one_does_to_the_last_digit(loaded, tmp_path):
    whole = {}
    uninterrupted = run_finetune(loaded, CONFIG, whole.__setitem__, artifact_dir=tmp_path / "whole")

    points = {}

    def killed_after_epoch_3(position, metrics):
        points[position] = metrics
        if position == 4:  # epoch 4 is reported, its checkpoint not yet written
            raise Killed

    with pytest.raises(Killed):
        run_finetune(loaded, CONFIG, killed_after_epoch_3, artifact_dir=tmp_path / "resumed")
    assert checkpoint_epoch(tmp_path / "resumed" / CHECKPOINT) == 3
    first_delivery = dict(points)
    resumed = run_finetune(loaded, CONFIG, points.__setitem__, artifact_dir=tmp_path / "resumed")

    trained_again = sorted(p for p, m in points.items() if m.get("resumed_from") == 3)
    assert trained_again == [4, 5]  # epochs 1-3 were not trained again, and position 0 not measured again
    assert all(points[p] is first_delivery[p] for p in range(4))
    assert {p: without_timing(m) for p, m in points.items()} == {p: without_timing(m) for p, m in whole.items()}
    for mine, theirs in zip(resumed.get_weights(), uninterrupted.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_the_checkpoint_is_one_file_holding_the_last_epoch(loaded, tmp_path):
    run_finetune(loaded, CONFIG | {"epochs": 2}, lambda position, metrics: None, artifact_dir=tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == [CHECKPOINT, "repaired_net.keras"]
    assert checkpoint_epoch(tmp_path / CHECKPOINT) == 2


def test_each_epochs_order_depends_on_the_seed_and_epoch_alone():
    assert np.array_equal(epoch_order(100, 3, 7), epoch_order(100, 3, 7))
    assert not np.array_equal(epoch_order(100, 3, 7), epoch_order(100, 3, 8))
    assert not np.array_equal(epoch_order(100, 3, 7), epoch_order(100, 4, 7))
    assert sorted(epoch_order(100, 3, 7)) == list(range(100))


RESUMABLE = {
    "ft-sam": {"threshold": 0.5, "lr": 0.01, "epochs": 4, "rho": 2.0, "layers": [], "seed": 3},
    "nad": {"lr": 0.01, "epochs": 4, "teacher_epochs": 2, "beta": 1000.0, "seed": 3},
    "fst": {"lr": 0.01, "epochs": 4, "fst_alpha": 0.2, "seed": 3},
    "sau": {"lr": 0.01, "epochs": 4, "sau_eps": 0.2, "sau_l2": 1, "sau_steps": 2, "seed": 3},
    "i-bau": {"lr": 0.01, "epochs": 4, "ibau_k": 2, "ibau_radius": 5.0, "seed": 3},
}


@pytest.mark.parametrize("kind", sorted(RESUMABLE))
def test_every_training_defense_resumes_to_the_last_digit(loaded, tmp_path, kind):
    """The shared loop's promise for every defense that plugs into it: killed after epoch 2 (its point stored,
    its checkpoint written), a second delivery trains epochs 3-4 only and ends with the uninterrupted run's
    weights and points."""
    from defenses.runner import run_job

    config = RESUMABLE[kind] | {"holdout": {"share": 0.25, "seed": 3}}
    whole = {}
    run_job(kind, config, loaded, whole.__setitem__, artifact_dir=tmp_path / "whole")
    points = {}

    def killed_after_epoch_2(position, metrics):
        points[position] = metrics
        if position == 3:
            raise Killed

    with pytest.raises(Killed):
        run_job(kind, config, loaded, killed_after_epoch_2, artifact_dir=tmp_path / "resumed")
    run_job(kind, config, loaded, points.__setitem__, artifact_dir=tmp_path / "resumed")
    assert sorted(p for p, m in points.items() if m.get("resumed_from") == 2) == [3, 4]
    assert {p: without_timing(m) for p, m in points.items()} == {p: without_timing(m) for p, m in whole.items()}
