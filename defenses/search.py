"""Search a training defense's parameters within a budget of fine-tuning-epoch units, instead of a grid.

Optuna's TPE sampler proposes a trial (the defense's searchable parameters: T, the learning rate on a log
scale, its own); the trial trains in rungs of epochs (3, 9, 27 by default), each rung an ordinary job of the
defense (one run, extending the previous rung's run from its checkpoint, so no epoch is trained twice), and
after each rung successive halving (Optuna's SuccessiveHalvingPruner) stops the trial unless it is
in the best third of the trials that reached that rung. Every epoch of a trial is a point; its objective is the
held-out selection score within the clean-accuracy floor (defenses.selection.objective), so the search reads
what the honest selection reads and never a test set. The search stops when the next rung would pass the
budget; its best point is the best point of its trials.

Ask and tell: this module asks Optuna for trials and tells it their values; the caller runs each rung's job
(`run_rung`) where it likes (in process for bench/leaderboard.py, as runs a worker stores for the dashboard)
and says what the rung cost (a rung an earlier run already holds costs nothing). `history` replays the trials
of an interrupted search, so a re-delivered search continues where it stopped instead of starting again.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from defenses.jobs import Job
from defenses.methods import Method, job_kind

RungRunner = Callable[[Job, Job | None], tuple[dict[int, dict], float]]  # (job, previous rung) -> (points, units)


@dataclass(frozen=True)
class SearchSettings:
    budget: float  # fine-tuning-epoch units (passes over the clean validation set) the whole search may spend
    seed: int = 0
    min_epochs: int = 3  # the first rung
    reduction: int = 3  # successive halving's factor: rungs 3, 9, 27; a third of a rung's trials go on
    max_epochs: int = 27  # the last rung
    max_trials: int = 100  # a cap for trials that cost nothing (every rung already stored)

    def rungs(self) -> list[int]:
        """The epoch counts a trial is trained to, one rung after the other."""
        rungs = [self.min_epochs]
        while rungs[-1] * self.reduction <= self.max_epochs:
            rungs.append(rungs[-1] * self.reduction)
        return rungs


@dataclass
class Trial:
    """One proposal: its parameters, the rungs' jobs it ran, its points' objective by epoch, its best."""

    number: int
    params: dict
    jobs: list[Job] = field(default_factory=list)
    objective: dict[int, float] = field(default_factory=dict)  # epoch -> objective of that point
    cost: float = 0.0  # units charged to the budget: every rung's, even one a stored run served
    trained: float = 0.0  # units trained for it (a served rung trains nothing)
    state: str = "running"  # running, complete, pruned (stopped by successive halving), budget (the next rung
    # would pass the budget), cancelled

    @property
    def epochs(self) -> int:
        return int(self.jobs[-1].config["epochs"]) if self.jobs else 0

    @property
    def value(self) -> float | None:
        return max(self.objective.values()) if self.objective else None

    @property
    def best_epoch(self) -> int | None:
        """The epoch of the trial's best objective (the fewest epochs among equals)."""
        if not self.objective:
            return None
        return min(self.objective, key=lambda epoch: (-self.objective[epoch], epoch))

    def as_dict(self) -> dict:
        return {
            "number": self.number,
            "params": self.params,
            "jobs": [[job.kind, job.config] for job in self.jobs],
            "objective": {str(epoch): value for epoch, value in self.objective.items()},
            "cost": self.cost,
            "trained": self.trained,
            "state": self.state,
        }

    @classmethod
    def from_dict(cls, record: dict) -> "Trial":
        return cls(
            number=int(record["number"]),
            params=dict(record["params"]),
            jobs=[Job(kind, config) for kind, config in record["jobs"]],
            objective={int(epoch): float(value) for epoch, value in record["objective"].items()},
            cost=float(record["cost"]),
            trained=float(record.get("trained", record["cost"])),
            state=record["state"],
        )


def searchable(method: Method) -> list:
    """The defense's parameters a search varies (those with a `search` range), epochs aside: epochs are the
    rungs' resource, not a dimension."""
    return [p for p in method.parameters if p.search and p.name != "epochs"]


def can_search(method: Method) -> bool:
    """A defense whose jobs train epoch by epoch, each epoch a point a longer run extends (JobKind.epoch_prefix),
    with epochs the user may set (prune-only fixes them at 0)."""
    return any(parameter.name == "epochs" for parameter in method.parameters) and all(
        kind.epoch_prefix for kind in method.jobs if kind.repairs
    )


def suggest(trial, parameter):
    """One value of a parameter from Optuna's trial, within its search range (log scale where it says)."""
    low, high = parameter.search
    if parameter.choices:
        return trial.suggest_categorical(parameter.name, list(parameter.choices))
    if parameter.kind is int:
        return trial.suggest_int(parameter.name, int(low), int(high), log=parameter.log)
    return trial.suggest_float(parameter.name, float(low), float(high), log=parameter.log)


def distribution(parameter):
    import optuna

    low, high = parameter.search
    if parameter.choices:
        return optuna.distributions.CategoricalDistribution(list(parameter.choices))
    if parameter.kind is int:
        return optuna.distributions.IntDistribution(int(low), int(high), log=parameter.log)
    return optuna.distributions.FloatDistribution(float(low), float(high), log=parameter.log)


def rung_job(method: Method, space: dict, params: dict, epochs: int) -> Job:
    """The one job that trains the trial's configuration to `epochs` (the defense's own planner)."""
    from defenses.methods import plan_space

    axes = {name: [value] for name, value in params.items() if name in {p.name for p in method.axes()}}
    single = {name: value for name, value in params.items() if name not in axes}
    the_plan = plan_space(space | {"defense": method.name} | axes | single | {"epochs": [epochs]})
    if len(the_plan.jobs) != 1:
        raise ValueError(f"a {method.name} trial should be one job, the planner made {len(the_plan.jobs)}")
    return the_plan.jobs[0]


def new_study(settings: SearchSettings, replayed: int = 0):
    """A study for the search; after `replayed` trials of an interrupted one, its sampler's random stream starts
    elsewhere (the first stream would propose the first trials' parameters again)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=settings.seed + 7919 * replayed, n_startup_trials=5)
    pruner = optuna.pruners.SuccessiveHalvingPruner(
        min_resource=settings.min_epochs, reduction_factor=settings.reduction
    )
    return optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)


def replay(study, method: Method, trials: list[Trial]) -> None:
    """Tell a new study the finished trials of an interrupted search (their parameters, objective by epoch,
    value and state), and queue the parameters of the one it was running, so the search goes on from there."""
    import optuna

    states = {"complete": optuna.trial.TrialState.COMPLETE, "budget": optuna.trial.TrialState.COMPLETE}
    states |= {"pruned": optuna.trial.TrialState.PRUNED, "cancelled": optuna.trial.TrialState.PRUNED}
    dimensions = {p.name: distribution(p) for p in searchable(method)}
    for trial in trials:
        if trial.state == "running":
            study.enqueue_trial(trial.params)
            continue
        study.add_trial(
            optuna.trial.create_trial(
                params=trial.params,
                distributions={name: dimensions[name] for name in trial.params},
                value=trial.value if states[trial.state] == optuna.trial.TrialState.COMPLETE else None,
                intermediate_values=dict(trial.objective),
                state=states[trial.state],
            )
        )


def search(
    method: Method,
    space: dict,
    settings: SearchSettings,
    run_rung: RungRunner,
    objective: Callable[[dict], float | None],
    n_valid: int,
    n_classes: int,
    history: list[Trial] | None = None,
    on_trial: Callable[[list[Trial]], None] | None = None,
) -> list[Trial]:
    """Run trials of `method` on `space` (its fixed values: layers, seed, holdout) until the budget is spent
    and return every trial. `run_rung(job, previous_rung_job)` trains a rung and returns its points
    {position: metrics} with the units it trained (0 when stored runs served it); every rung is charged its
    full cost against the budget all the same, so each defense of a leaderboard explores the same amount of
    work whatever its team had stored, and the trials do not depend on what was; `objective(metrics)` scores
    a point (None: no score); `n_valid` and `n_classes` size a job's cost (JobKind.cost); `on_trial(trials)`
    hears of every rung's end (a page shows it). A search cancelled by its runner (an exception) stops there;
    its trials so far are kept."""
    import optuna

    trials = [Trial.from_dict(t.as_dict()) for t in history or []]
    study = new_study(settings, len(trials))
    replay(study, method, trials)
    spent = sum(trial.cost for trial in trials)
    resumed = [trial for trial in trials if trial.state == "running"]
    rungs = settings.rungs()
    first_cost = first_rung_cost(method, space, settings, n_valid, n_classes)
    while resumed or len(trials) < settings.max_trials:
        if not resumed and spent + first_cost > settings.budget:
            break
        asked = study.ask()  # a resumed trial's parameters were queued by replay: asked gives them back
        params = {p.name: suggest(asked, p) for p in searchable(method)}
        if resumed:
            trial = resumed.pop(0)
        else:
            trial = Trial(number=len(trials), params=params)
            trials.append(trial)
        previous: Job | None = None
        for epochs in rungs:
            job = rung_job(method, space, params, epochs)
            planned = rung_cost(job, previous, n_valid, n_classes)
            if spent + planned > settings.budget + 1e-9 and job not in trial.jobs:
                trial.state = "budget"
                break
            points, units = run_rung(job, previous)
            if job not in trial.jobs:  # a resumed trial's rungs before its kill were charged then
                spent, trial.cost = spent + planned, trial.cost + planned
                trial.jobs.append(job)
            trial.trained += units
            for epoch in range((previous.config["epochs"] if previous else 0) + 1, epochs + 1):
                value = objective(points.get(epoch) or {})
                if value is not None:
                    trial.objective[epoch] = value
                    asked.report(value, epoch)
            previous = job
            if on_trial:
                on_trial(trials)
            if asked.should_prune():
                trial.state = "pruned"
                break
        else:
            trial.state = "complete"
        if trial.state == "pruned" or trial.value is None:
            study.tell(asked, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(asked, trial.value)
        if on_trial:
            on_trial(trials)
    return trials


def rung_cost(job: Job, previous: Job | None, n_valid: int, n_classes: int) -> float:
    """The units of a rung: its job's training less its previous rung's (the setup, a scan, is the search's:
    setup_cost)."""
    cost = job_kind(job.kind).cost(job.config, n_valid, n_classes, with_setup=False)
    return cost - (
        job_kind(previous.kind).cost(previous.config, n_valid, n_classes, with_setup=False) if previous else 0.0
    )


def first_rung_cost(method: Method, space: dict, settings: SearchSettings, n_valid: int, n_classes: int) -> float:
    """The units one trial's first rung costs: a budget below it trains nothing."""
    return rung_cost(rung_job(method, space, default_params(method), settings.rungs()[0]), None, n_valid, n_classes)


def setup_cost(method: Method, space: dict, n_valid: int, n_classes: int) -> float:
    """The units of what a search of `method` does once before its trials (Neural Cleanse's scan; 0 for most):
    outside the search's budget, which buys training, but work all the same."""
    job = rung_job(method, space, default_params(method), 1)
    return job_kind(job.kind).setup(job.config, n_valid, n_classes)


def default_params(method: Method) -> dict:
    """The searchable parameters at their search ranges' lower ends: what the cheapest first rung costs."""
    return {p.name: (p.choices[0] if p.choices else p.search[0]) for p in searchable(method)}


def best_trial(trials: list[Trial]) -> Trial | None:
    """The trial holding the best objective (the earlier trial among equals)."""
    scored = [trial for trial in trials if trial.value is not None]
    return max(scored, key=lambda trial: (trial.value, -trial.number), default=None)


def importance(method: Method, trials: list[Trial]) -> dict[str, float]:
    """How much each searchable parameter decides the best objective a trial reached (Optuna's default
    evaluator, PED-ANOVA, on every trial with a value, pruned ones at the value they reached); {} with too few
    trials or parameters."""
    import optuna

    dimensions = {p.name: distribution(p) for p in searchable(method)}
    scored = [trial for trial in trials if trial.value is not None and math.isfinite(trial.value)]
    if len(dimensions) < 2 or len(scored) < 4:
        return {}
    study = optuna.create_study(direction="maximize")
    for trial in scored:
        study.add_trial(optuna.trial.create_trial(params=trial.params, distributions=dimensions, value=trial.value))
    try:
        return {name: float(value) for name, value in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError, ZeroDivisionError):  # every value equal, or too few distinct ones
        return {}
