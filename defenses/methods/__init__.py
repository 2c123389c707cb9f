"""Defenses as plug-ins. A defense (a repair or a detector) is one module of this package that describes itself
with a `Method` and registers it with `register`: what the user sets (`Parameter`s), what a result point is
made of (`Column`s), how the points are planned into jobs that share work (`plan`), how each kind of job runs
(`JobKind.run`, reporting points through the runner's callback) and which charts its results have (chart
specs). The planner, the runner, the web forms, the API, the results and the charts find it here; adding a
defense is one module and its tests.

A space is a dict: {"defense": method name, parameter name: tuple of values (an axis of the grid) or one
value}. A point is a tuple of values in the method's column order; a plan maps each point to (job index,
position within that job's stored points).
"""

import importlib
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

from defenses.jobs import Job, Plan

LAYERS = "layers"  # a Parameter kind: conv layer names of the BadNet, checked against it


@dataclass(frozen=True)
class Parameter:
    """Something the user sets. `axis`: a list of values is an axis of the grid; otherwise one value."""

    name: str  # key in a space, a form and the API: "thresholds"
    label: str
    kind: type | str  # float, int or LAYERS
    default: tuple | float | int
    low: float = 0.0
    high: float = 1.0
    low_open: bool = False  # the value must be above `low`, not at it
    axis: bool = True
    help: str = ""
    noun: str = ""  # one value in a message: "threshold", "epoch count"
    search: tuple = ()  # (low, high): the range a search draws from (defenses.search); empty: not searched
    log: bool = False  # a search draws on a log scale
    choices: tuple = ()  # a search draws one of these instead of a range


@dataclass(frozen=True)
class Column:
    """A coordinate of a result point: its key in a result row, how charts name it and one value of it."""

    name: str  # "threshold"
    label: str  # "pruning threshold T"
    short: str  # "T {}": a value in a legend
    log: bool = False
    heading: str = ""  # a table's column heading ("T"); the label when empty


@dataclass(frozen=True)
class Versus:
    """A chart of CA and ASR against one column, one series per value of the other columns."""

    column: str


@dataclass(frozen=True)
class Grid:
    """A heatmap of the seed's score over two columns (the best over the others), the selected point outlined."""

    x: str
    y: str
    slug: str = "grid"


@dataclass(frozen=True)
class Baseline:
    """Bars of CA and ASR per trigger at `column` = `at` beside every other value of it, the other columns
    equal (the seed's Table 2: fine-tuning alone, T = 0, beside fine-pruning)."""

    column: str
    at: float
    title: str
    slug: str
    alone: str  # names the bars at `at` ("fine-tune only")
    paired: str  # names the others, with their value ("fine-prune T {}")


@dataclass(frozen=True)
class Steps:
    """The curve of one job's every stored point (not a grid): CA, validation accuracy, ASR against `x`."""

    x: str
    label: str
    title: str
    slug: str


@dataclass(frozen=True)
class JobKind:
    """One kind of job: `run(loaded, config, report_point, should_stop, artifact_dir)` does it and reports its
    points; `positions(config, model_report)` says how many it stores; `describe(config)` says it in words;
    `training_epochs(config)` is its cost in fine-tuning-epoch units."""

    name: str  # stored on runs and part of the reuse key: never renamed
    run: Callable
    positions: Callable[[dict, dict], int]
    describe: Callable[[dict], str]
    training_epochs: Callable[[dict], int] = lambda config: 0
    repairs: bool = False  # leaves a repaired network in the run's folder
    # positions are epochs and nothing in epochs 1..e depends on the run's total: a run to E epochs serves
    # every request for e <= E whose config is otherwise equal (its first e + 1 points are the same numbers)
    epoch_prefix: bool = False
    x: tuple[str, str] = ("position", "point")  # what a position is on the run's page: (metrics key, label)
    # the file of the network at a position (None: none kept there); default: repaired_net.keras at the last
    network_file: Callable[[dict, int], str | None] | None = None
    # the cost in passes over the clean validation set of `n` images, when it is not `training_epochs`
    epoch_units: Callable[[dict, int], float] | None = None
    # work before training, in the same units, for a BadNet of `c` labels (config, n, c): Neural Cleanse's
    # scan. A search does it once for all its trials (its worker keeps the result), so rungs are charged
    # without it
    setup_units: Callable[[dict, int, int], float] | None = None

    def network_at(self, config: dict, position: int, report: dict) -> str | None:
        """The run folder's file holding the repaired network of `position`, or None."""
        if not self.repairs:
            return None
        if self.network_file is not None:
            return self.network_file(config, position)
        return "repaired_net.keras" if position == self.positions(config, report) - 1 else None

    def cost(self, config: dict, n_valid: int, n_classes: int, with_setup: bool = True) -> float:
        """Fine-tuning-epoch units: passes over the clean validation set (of `n_valid` images), for a BadNet of
        `n_classes` labels; with its setup (a scan, whose cost grows with the labels) unless `with_setup` is
        False (a search's rungs: the search does it once)."""
        n_valid = max(n_valid, 1)
        training = self.epoch_units(config, n_valid) if self.epoch_units else float(self.training_epochs(config))
        return max(training + (self.setup(config, n_valid, n_classes) if with_setup else 0.0), MIN_JOB_UNITS)

    def setup(self, config: dict, n_valid: int, n_classes: int) -> float:
        """The units of its work before training (setup_units; 0 for most kinds)."""
        return self.setup_units(config, max(n_valid, 1), n_classes) if self.setup_units else 0.0


# Every job costs at least this: even one that trains nothing (a pruning curve, incremental pruning, a T sweep
# at 0 epochs) loads the BadNet and evaluates every set at every point, and at 0 units a user could queue
# thousands of them (an attack review queued 30 incremental prunings that left the budget untouched).
MIN_JOB_UNITS = 1.0


@dataclass(frozen=True)
class Method:
    name: str  # "fine-prune": the `defense` of a space
    title: str
    paper: str
    summary: str
    parameters: tuple[Parameter, ...]
    columns: tuple[Column, ...]
    plan: Callable[[dict], Plan]
    charts: tuple = ()
    jobs: tuple[JobKind, ...] = ()
    steps: bool = False  # results are the steps of one job (incremental pruning), not a grid of points
    deviations: str = ""  # where it departs from the paper, said on its pages
    defaults: dict = field(default_factory=dict)  # this defense's own defaults for shared parameters
    sweep: dict = field(default_factory=dict)  # the leaderboard's small sweep: parameter -> values

    def axes(self) -> tuple[Parameter, ...]:
        return tuple(parameter for parameter in self.parameters if parameter.axis)

    def column(self, name: str) -> Column:
        return next(column for column in self.columns if column.name == name)


METHODS: dict[str, Method] = {}
JOB_KINDS: dict[str, JobKind] = {}
PARAMETERS: dict[str, Parameter] = {}  # by name, across methods: a name means one thing everywhere


def register(method: Method) -> Method:
    """Make a method (and its job kinds) known to the planner, runner, forms, API, results and charts. A
    parameter name two methods share must mean the same; a job kind may be shared by several methods."""
    for parameter in method.parameters:
        known = PARAMETERS.setdefault(parameter.name, parameter)
        if known != parameter:
            raise ValueError(f"{method.name} redefines parameter {parameter.name!r}: {parameter} vs {known}")
    for kind in method.jobs:
        JOB_KINDS[kind.name] = kind
    METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    """Forget a method (tests register toy ones); its job kinds and parameters stay if others use them."""
    method = METHODS.pop(name)
    used = {p.name for m in METHODS.values() for p in m.parameters}
    kinds = {k.name for m in METHODS.values() for k in m.jobs}
    for parameter in method.parameters:
        if parameter.name not in used:
            PARAMETERS.pop(parameter.name, None)
    for kind in method.jobs:
        if kind.name not in kinds:
            JOB_KINDS.pop(kind.name, None)


def method_of(space: dict) -> Method:
    name = space.get("defense", "fine-prune")
    if name not in METHODS:
        raise ValueError(f"unknown defense {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def default(method: "Method", parameter: Parameter):
    """A parameter's default for one defense: its own where it says (FT-SAM: T = 0), else the parameter's."""
    return method.defaults.get(parameter.name, parameter.default)


def values(space: dict, parameter: Parameter) -> tuple:
    """A parameter's values in a space (the defense's default when absent), always as a tuple."""
    method = METHODS.get(space.get("defense", "fine-prune"))
    value = space.get(parameter.name, default(method, parameter) if method else parameter.default)
    return tuple(value) if isinstance(value, list | tuple) else (value,)


def grid_size(space: dict) -> int:
    """How many points a space asks for, from the axes' lengths alone: a caller refuses a huge grid before
    anything is built."""
    return math.prod(len(set(values(space, parameter))) for parameter in method_of(space).axes())


def plan_space(space: dict) -> Plan:
    """The fewest jobs for every point of a space (the method's own planner). A space with a `holdout` share
    gives every job the split of the clean validation set it runs on ({"share", "seed"}: the space's seed),
    so runs on different splits are different work (defenses.runner.run_job splits; a space without one is
    an experiment made before held-out selection, whose runs keep their old keys)."""
    the_plan = method_of(space).plan(space)
    if "holdout" not in space:
        return the_plan
    split = {"holdout": {"share": float(space["holdout"]), "seed": int(space.get("seed", 0))}}
    return Plan([Job(job.kind, job.config | split) for job in the_plan.jobs], the_plan.points)


def separate_training_epochs(space: dict) -> int:
    """Epochs trained when every point runs on its own from scratch, as the seed report did: the sum of the
    points' epochs (or, for a defense without an epochs column, what its plan trains)."""
    method, the_plan = method_of(space), plan_space(space)
    names = [column.name for column in method.columns]
    if "epochs" not in names:
        return training_epochs(the_plan)
    return sum(point[names.index("epochs")] for point in the_plan.points)


def training_epochs(work: Job | Plan) -> int:
    """What a job, or every job of a plan, costs in fine-tuning-epoch units, as each job's kind counts them (a
    kind no longer registered: its config's epochs)."""
    if isinstance(work, Plan):
        return sum(training_epochs(job) for job in work.jobs)
    kind = JOB_KINDS.get(work.kind)
    return kind.training_epochs(work.config) if kind else int(work.config.get("epochs", 0))


def job_kind(name: str) -> JobKind:
    if name not in JOB_KINDS:
        raise ValueError(f"unknown job kind {name!r}")
    return JOB_KINDS[name]


def describe(job: Job | tuple[str, dict]) -> str:
    kind, config = (job.kind, job.config) if isinstance(job, Job) else job
    return job_kind(kind).describe(config) if kind in JOB_KINDS else f"{kind} {config}"


# Every module of this package is a defense that registers itself on import: adding one is adding its file.
for _module in pkgutil.iter_modules(__path__):  # sorted by name, so forms list them in a stable order
    importlib.import_module(f"{__name__}.{_module.name}")
