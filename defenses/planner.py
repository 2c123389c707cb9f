"""Turn a parameter space into the least work (DESIGN.md, "Studies").

A fine-tuning job trains one (T, LR, layers, seed) configuration to the largest epoch count requested and
reports every epoch, so it serves every epoch value; prune-only points (epochs = 0) of a threshold list come
from one prune-curve job on cached activations, without training. Jobs have a stable key, so the same
configuration asked for twice, in one study or in two, is computed once.
"""

import itertools
import math
from dataclasses import dataclass

from defenses.jobs import Job, Plan, plan_points

DEFENSES = ("fine-prune", "fine-tune", "prune-only", "incremental")


@dataclass(frozen=True)
class ParameterSpace:
    """Values or lists for each knob; the grid is their cartesian product."""

    defense: str = "fine-prune"
    thresholds: tuple[float, ...] = (1.0,)
    learning_rates: tuple[float, ...] = (0.001,)
    epochs: tuple[int, ...] = (10,)
    layers: tuple[str, ...] = ()  # empty: every Conv2D layer
    seed: int = 0
    max_drop: float = 4.0  # incremental pruning's stop rule

    def __post_init__(self):
        if self.defense not in DEFENSES:
            raise ValueError(f"unknown defense {self.defense!r}; choose one of {', '.join(DEFENSES)}")
        if any(t < 0 for t in self.thresholds) or any(lr <= 0 for lr in self.learning_rates):
            raise ValueError("thresholds must be >= 0 and learning rates > 0")
        if any(e < 0 for e in self.epochs):
            raise ValueError("epochs must be >= 0")

    def axes(self) -> tuple[tuple, tuple, tuple]:
        """The (T, LR, epochs) values the grid is made of, with the defense's fixed values applied."""
        thresholds = (0.0,) if self.defense == "fine-tune" else self.thresholds
        epochs = (0,) if self.defense == "prune-only" else self.epochs
        learning_rates = self.learning_rates if any(epochs) else (0.0,)
        return thresholds, learning_rates, epochs

    def size(self) -> int:
        """len(points()) from the axes' lengths alone, so a caller can refuse a huge grid before it is built."""
        return math.prod(len(set(axis)) for axis in self.axes())

    def points(self) -> list[tuple[float, float, int]]:
        """Every (T, LR, epochs) the user asked for, with the defense's fixed values applied."""
        return sorted(set(itertools.product(*self.axes())))


def plan(space: ParameterSpace) -> Plan:
    """The fewest jobs that produce every point of `space`."""
    if space.defense == "incremental":
        job = Job("incremental", {"layer": space.layers[-1] if space.layers else None, "max_drop": space.max_drop})
        return Plan([job], {(0.0, 0.0, 0): (0, 0)})
    return plan_points(space.points(), list(space.layers), space.seed)


def plan_study(spaces: list[ParameterSpace]) -> Plan:
    """One plan for several spaces of one BadNet and data (e.g. the seed's whole study): points they share
    are computed once, and a (T, LR) pair trained for one space serves the others' epoch values."""
    if len({(tuple(s.layers), s.seed) for s in spaces}) != 1:
        raise ValueError("a study plan needs one layer choice and one seed")
    grid = sorted({point for space in spaces for point in space.points()})
    return plan_points(grid, list(spaces[0].layers), spaces[0].seed)


def naive_training_epochs(space: ParameterSpace) -> int:
    """Epochs trained when every point runs separately from scratch, as the seed report did."""
    return sum(epochs for _, _, epochs in space.points())


SEED_STUDY = {
    "figure-2-threshold": ParameterSpace(
        thresholds=tuple(round(t / 10, 1) for t in range(21)), learning_rates=(0.001,), epochs=(10,)
    ),
    "figure-3-learning-rate": ParameterSpace(
        thresholds=(1.0,), epochs=(10,), learning_rates=(1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 1e-1)
    ),
    "figure-4-epochs": ParameterSpace(
        thresholds=(1.0,), learning_rates=(0.001,), epochs=(4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 30, 35, 40)
    ),
    "table-1-grid": ParameterSpace(
        thresholds=(0.8, 1.0, 1.2), learning_rates=(0.001, 0.003, 0.005), epochs=(30, 33, 35)
    ),
    "table-2-with-pruning": ParameterSpace(thresholds=(0.8,), learning_rates=(0.001,), epochs=(30,)),
    "table-2-without-pruning": ParameterSpace(defense="fine-tune", learning_rates=(0.001,), epochs=(30,)),
}
"""The seed report's whole study (its Figures 2-4 and Tables 1-2), as parameter spaces."""
