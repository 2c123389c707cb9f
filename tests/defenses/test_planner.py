"""The planner: the least work for a parameter space, and every requested point mapped to it."""

import pytest

from defenses.methods import training_epochs
from defenses.planner import SEED_STUDY, ParameterSpace, naive_training_epochs, plan


def test_one_training_run_serves_every_epoch_value():
    the_plan = plan(SEED_STUDY["figure-4-epochs"])
    assert len(the_plan.jobs) == 1 and the_plan.jobs[0].config["epochs"] == 40
    assert training_epochs(the_plan) == 40
    assert naive_training_epochs(SEED_STUDY["figure-4-epochs"]) == 247
    assert the_plan.points[(1.0, 0.001, 28)] == (0, 28)


def test_grid_of_table_1_trains_each_t_lr_pair_once_to_35_epochs():
    the_plan = plan(SEED_STUDY["table-1-grid"])
    assert len(the_plan.points) == 27
    assert len(the_plan.jobs) == 9 and {job.config["epochs"] for job in the_plan.jobs} == {35}
    assert training_epochs(the_plan) == 9 * 35  # against 27 separate runs: 9 * (30 + 33 + 35)


def test_prune_only_points_share_one_curve_without_training():
    space = ParameterSpace(defense="prune-only", thresholds=(0.0, 0.5, 1.0, 1.5))
    the_plan = plan(space)
    assert [job.kind for job in the_plan.jobs] == ["prune-curve"]
    assert training_epochs(the_plan) == 0
    assert the_plan.points[(1.5, 0.0, 0)] == (0, 3)


def test_epochs_zero_in_a_fine_prune_space_is_read_from_the_prune_curve():
    the_plan = plan(ParameterSpace(thresholds=(0.8, 1.0), learning_rates=(0.001,), epochs=(0, 10)))
    kinds = sorted(job.kind for job in the_plan.jobs)
    assert kinds == ["finetune", "finetune", "prune-curve"]


def test_identical_configurations_have_identical_keys():
    first = plan(SEED_STUDY["table-2-with-pruning"]).jobs[0]
    again = plan(ParameterSpace(thresholds=(0.8,), learning_rates=(0.001,), epochs=(30,))).jobs[0]
    other = plan(ParameterSpace(thresholds=(0.8,), learning_rates=(0.001,), epochs=(30,), seed=1)).jobs[0]
    assert first.key == again.key != other.key


def test_fine_tune_only_is_threshold_zero():
    the_plan = plan(SEED_STUDY["table-2-without-pruning"])
    assert the_plan.jobs[0].config["threshold"] == 0.0


def test_incremental_is_one_job():
    the_plan = plan(ParameterSpace(defense="incremental", layers=("conv_3",), max_drop=2.0))
    assert [(job.kind, job.config) for job in the_plan.jobs] == [("incremental", {"layer": "conv_3", "max_drop": 2.0})]


@pytest.mark.parametrize(
    "bad", [{"defense": "magic"}, {"thresholds": (-0.1,)}, {"learning_rates": (0.0,)}, {"epochs": (-1,)}]
)
def test_invalid_spaces_are_refused(bad):
    with pytest.raises(ValueError):
        ParameterSpace(**bad)


def test_the_seed_study_planned_as_one_shares_training_between_its_parts():
    from defenses.planner import plan_study

    spaces = list(SEED_STUDY.values())
    the_plan = plan_study(spaces)
    naive = sum(naive_training_epochs(space) for space in spaces)
    assert training_epochs(the_plan) < 0.45 * naive
    # T 1.0 / LR 0.001 appears in Figures 2, 3, 4 and Table 1: one run, trained to 40 epochs, serves them all.
    assert the_plan.points[(1.0, 0.001, 10)] == the_plan.points[(1.0, 0.001, 33)][:1] + (10,)
    assert len({p for space in spaces for p in space.points()}) == len(the_plan.points)
