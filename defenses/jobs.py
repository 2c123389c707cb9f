"""Work as the runner and the database see it: a `Job` is one run's worth of work (a kind and its config) with
a stable key, and a `Plan` is the jobs a space needs and where each of its points comes from. Every defense
plans into these (defenses.methods); what a job costs is its kind's to say (defenses.methods.training_epochs).
"""

import hashlib
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Job:
    """One run's worth of work: its kind (a JobKind's name: "finetune", "nad", ...) and its config."""

    kind: str
    config: dict = field(hash=False)

    @property
    def key(self) -> str:
        """Stable identity of the work: equal configs, equal keys (the reuse rule)."""
        return hashlib.sha256(json.dumps([self.kind, self.config], sort_keys=True).encode()).hexdigest()[:32]


@dataclass
class Plan:
    """The jobs a space needs, and for each of its points the job and the position that produce it."""

    jobs: list[Job]
    # point (T, LR, epochs) -> (index in jobs, position within the job's results)
    points: dict[tuple[float, float, int], tuple[int, int]]


def plan_points(grid: list[tuple[float, float, int]], layers: list[str], seed: int) -> Plan:
    """The fewest jobs for any set of (T, LR, epochs) points: one training run per (T, LR) to its largest
    epoch count, one prune-curve job for every epochs = 0 point."""
    jobs: list[Job] = []
    index: dict[str, int] = {}
    points: dict[tuple[float, float, int], tuple[int, int]] = {}

    def add(job: Job) -> int:
        if job.key not in index:
            index[job.key] = len(jobs)
            jobs.append(job)
        return index[job.key]

    longest: dict[tuple[float, float], int] = {}
    for threshold, lr, epochs in grid:
        if epochs:
            longest[(threshold, lr)] = max(longest.get((threshold, lr), 0), epochs)
    prune_only = sorted({t for t, lr, e in grid if e == 0})
    curve = add(Job("prune-curve", {"thresholds": prune_only, "layers": layers})) if prune_only else None
    for threshold, lr, epochs in sorted(set(grid)):
        if epochs == 0:
            points[(threshold, lr, epochs)] = (curve, prune_only.index(threshold))
            continue
        config = {"threshold": threshold, "lr": lr, "epochs": longest[(threshold, lr)], "layers": layers, "seed": seed}
        points[(threshold, lr, epochs)] = (add(Job("finetune", config)), epochs)
    return Plan(jobs, points)
