"""The search of a defense's space (defenses.search) with a stand-in for training: each point's objective is a
known function of the trial's parameters and the epoch, so the budget, the rungs, successive halving, the
replay of an interrupted search and the best trial are checked on numbers, in milliseconds."""

import math

import pytest

from defenses.methods import METHODS, job_kind
from defenses.search import SearchSettings, Trial, best_trial, can_search, importance, rung_job, search

SPACE = {"defense": "fine-prune", "layers": [], "seed": 0, "holdout": 0.2}


def peak(config: dict, epoch: int) -> float:
    """A made-up objective: best at LR 0.003 and T 0.8, rising with epochs."""
    distance = (math.log10(config["lr"]) - math.log10(0.003)) ** 2 + (config["threshold"] - 0.8) ** 2
    return 100.0 - 20.0 * distance - 10.0 / epoch


class FakeTraining:
    """run_rung for the search: points from `peak`, the units a rung costs (its new epochs), every job seen."""

    def __init__(self):
        self.jobs, self.trained = [], 0

    def __call__(self, job, previous):
        start = previous.config["epochs"] if previous else 0
        self.jobs.append((job, previous))
        self.trained += job.config["epochs"] - start
        points = {e: {"objective": peak(job.config, e)} for e in range(1, job.config["epochs"] + 1)}
        return points, float(job.config["epochs"] - start)


def run(budget: float, history=None, training=None):
    training = training or FakeTraining()
    settings = SearchSettings(budget=budget, seed=1)
    trials = search(METHODS["fine-prune"], SPACE, settings, training, lambda m: m.get("objective"), 100, 4, history)
    return trials, training


def test_the_rungs_are_3_9_27_epochs():
    assert SearchSettings(budget=10).rungs() == [3, 9, 27]
    assert SearchSettings(budget=10, min_epochs=2, reduction=2, max_epochs=16).rungs() == [2, 4, 8, 16]


def test_a_search_spends_no_more_than_its_budget_and_its_best_is_the_best_of_its_trials():
    trials, training = run(budget=100)
    spent = sum(trial.cost for trial in trials)
    assert spent <= 100 and training.trained == spent and spent > 100 - 27  # the next rung would not fit
    best = best_trial(trials)
    every_point = [value for trial in trials for value in trial.objective.values()]
    assert best.value == max(every_point)
    assert best.objective[best.best_epoch] == best.value
    assert len(trials) >= 8  # 3-epoch first rungs and halving: far more trials than 100 / 27
    assert any(trial.state == "pruned" for trial in trials)
    # each rung continues the previous one: the jobs of a trial differ only in their epoch count
    for job, previous in training.jobs:
        if previous is not None:
            assert {k: v for k, v in job.config.items() if k != "epochs"} == {
                k: v for k, v in previous.config.items() if k != "epochs"
            }
            assert job.config["epochs"] == 3 * previous.config["epochs"]


def test_trials_draw_within_the_search_ranges_and_carry_the_split():
    trials, training = run(budget=60)
    for job, _ in training.jobs:
        assert 1e-4 <= job.config["lr"] <= 1e-2 and 0.0 <= job.config["threshold"] <= 1.5
        assert job.config["holdout"] == {"share": 0.2, "seed": 0}


def test_an_interrupted_search_goes_on_from_its_trials_without_training_them_again():
    whole, _ = run(budget=60)
    first = [Trial.from_dict(t.as_dict()) for t in whole[:3]]
    first[-1].state = "running"  # it was killed during this trial
    training = FakeTraining()
    resumed, _ = run(budget=60, history=first, training=training)
    assert [t.params for t in resumed[:3]] == [t.params for t in first]
    assert resumed[2].state != "running"
    assert sum(t.cost for t in resumed) <= 60
    assert all(job.config["lr"] != first[0].params["learning_rates"] for job, _ in training.jobs)
    proposals = [tuple(t.params.values()) for t in resumed]
    assert len(set(proposals)) == len(proposals)  # the resumed sampler does not propose the first trials again


def test_a_rung_that_would_pass_the_budget_is_not_started():
    trials, training = run(budget=5)  # one 3-epoch rung fits, its 9-epoch rung does not
    assert [t.state for t in trials] == ["budget"] and training.trained == 3


def test_every_training_defense_can_be_searched_and_a_trial_is_one_job():
    searchable = [m for m in METHODS.values() if can_search(m)]
    assert {m.name for m in searchable} >= {"fine-prune", "fine-tune", "ft-sam", "nad", "fst", "sau", "i-bau"}
    assert not can_search(METHODS["anp"]) and not can_search(METHODS["prune-only"])
    for method in searchable:
        job = rung_job(method, {"defense": method.name, "holdout": 0.2}, {}, 9)
        assert job.config["epochs"] == 9 and job_kind(job.kind).epoch_prefix


def test_importance_names_the_parameter_that_decides():
    trials = [
        Trial(number=i, params={"thresholds": t, "learning_rates": lr}, objective={3: 100 - 50 * abs(t - 0.8)})
        for i, (t, lr) in enumerate((t, lr) for t in (0.0, 0.4, 0.8, 1.2, 1.5) for lr in (1e-4, 1e-3, 1e-2))
    ]
    found = importance(METHODS["fine-prune"], trials)
    assert set(found) == {"thresholds", "learning_rates"}
    assert found["thresholds"] > found["learning_rates"]
    assert sum(found.values()) == pytest.approx(1.0)


def test_rungs_that_stored_runs_serve_are_charged_in_full_so_the_trials_are_the_same():
    """A search whose every rung was already stored trains nothing, but spends its budget on the same trials:
    a leaderboard's defenses explore the same amount of work whatever the team had stored."""

    class Stored(FakeTraining):
        def __call__(self, job, previous):
            points, _ = super().__call__(job, previous)
            return points, 0.0

    fresh, _ = run(budget=60)
    served, _ = run(budget=60, training=Stored())
    assert [t.params for t in served] == [t.params for t in fresh]
    assert sum(t.cost for t in served) == sum(t.cost for t in fresh) <= 60
    assert sum(t.trained for t in served) == 0 and sum(t.trained for t in fresh) == sum(t.cost for t in fresh)
