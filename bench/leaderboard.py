"""The leaderboard page's study from a shell: every registered defense on every BadNet of a synthetic preset,
each training defense searched within one budget of fine-tuning-epoch units (defenses.search: TPE and
successive halving on epochs), the others with their small sweep; the point chosen on held-out data only (a
part of the clean validation set no repair step saw, the poisoned validation sets and the clean-accuracy
floor: defenses.selection, the rule every page uses); then that point's test-set figures.

    .venv/bin/python -m bench.leaderboard [--preset demo] [--synth-seed N] [--budget 100] [--holdout 0.2]
        [--seed 0] [--seeds 3] [--grid] [--max-ca-drop 5] [--badnets sunglasses,lipstick] [--methods fst,sau]

Generates the preset into var/bench-<preset>[-s<N>]/ first if it is not there (demo: about 4 minutes on 2
cores; full: about 45 minutes). `--grid` uses every defense's sweep instead of search (the board before
search). `--seeds 3` trains each defense's chosen configuration again with seeds 1 and 2 (training order and
held-out split) and prints the mean and spread of its test figures. Prints one table per BadNet, then the
goal's verdict: per BadNet, is there a defense with a clean-accuracy drop of 2 points or less and an ASR of 1 %
or less on every trigger, chosen without the test sets?
"""

import argparse
import functools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_CA_DROP, GOAL_ASR = 2.0, 1.0
# BackdoorBench (BadNets, CIFAR-10, PreAct-ResNet18, 10 % poison): CA / ASR, for the README beside ours.
ANCHORS = {
    "no defense": (91.32, 95.03),
    "fine-pruning": (91.31, 57.13),
    "fine-tuning": (89.96, 1.48),
    "NAD": (89.87, 2.14),
    "ANP": (84.17, 0.73),
}


@dataclass(frozen=True)
class Options:
    max_ca_drop: float = 5.0
    budget: float = 100.0
    holdout: float = 0.2
    seed: int = 0
    grid: bool = False
    seeds: int = 1


def inputs_of(data: Path, name: str, triggers: list[str]):
    """The runner's inputs for one BadNet: its poisoned test sets by trigger, its poisoned validation sets
    named as the dashboard names them ("<trigger> (validation)")."""
    from defenses.runner import Inputs

    folder, sets = data / name, data / "data"
    poisoned = {t: folder / f"{t}_poisoned_data.h5" for t in triggers}
    poisoned |= {f"{t} (validation)": folder / f"{t}_poisoned_valid_data.h5" for t in triggers}
    return Inputs(
        model=folder / f"{name}_bd_net.h5",
        arch=None,
        divisor=255.0,
        valid=sets / "clean_validation_data.h5",
        test=sets / "clean_test_data.h5",
        poisoned=poisoned,
    )


class Runner:
    """Runs jobs in this process, each once (two defenses' shared jobs, a rung asked again); the rungs of a
    search trial extend one folder's checkpoint, so no epoch is trained twice."""

    def __init__(self, loaded, workdir: Path):
        self.loaded, self.workdir = loaded, workdir
        self.valid_count = len(loaded.valid[1])  # the whole clean validation set: what a cost unit passes over
        self.size = self.valid_count, loaded.report.n_classes  # what a job's cost depends on (JobKind.cost)
        self.points: dict[str, dict[int, dict]] = {}
        self.seconds: dict[str, float] = {}

    def run(self, job, folder: Path | None = None, earlier: dict | None = None) -> tuple[dict[int, dict], bool]:
        """The job's points {position: metrics}, and whether this call computed them."""
        from defenses.runner import run_job

        if job.key in self.points:
            return self.points[job.key], False
        points = dict(earlier or {})
        start = time.perf_counter()
        run_job(job.kind, job.config, self.loaded, points.__setitem__, artifact_dir=folder)
        self.seconds[job.key] = time.perf_counter() - start
        self.points[job.key] = points
        return points, True

    def rung(self, job, previous) -> tuple[dict[int, dict], float]:
        """defenses.search's RungRunner: one folder per trial (its first rung's key), the previous rung's points
        carried over, the units of the epochs trained now."""
        from defenses.search import rung_cost

        first = previous or job
        folder = self.workdir / first.key[:16]
        earlier = self.points.get(previous.key) if previous else None
        points, computed = self.run(job, folder, earlier)
        units = rung_cost(job, previous, *self.size)
        return points, units if computed else 0.0


def sweep_rows(method, runner: Runner, options: Options, triggers, before_valid) -> tuple[list[dict], float, str]:
    """The defense's small sweep: its rows, its cost in units and how it was explored."""
    from defenses.methods import job_kind, plan_space
    from defenses.selection import point_rows

    space = {"defense": method.name, **method.sweep, "holdout": options.holdout, "seed": options.seed}
    plan = plan_space(space)
    results = [runner.run(job)[0] for job in plan.jobs]
    if method.steps:  # one job whose own validation rule says where it stopped
        found = [(plan.jobs[0], p, m) for p, m in sorted(results[0].items()) if m.get("stop")][:1]
    else:
        found = [(plan.jobs[job], position, results[job].get(position) or {}) for job, position in plan.points.values()]
    units = sum(job_kind(job.kind).cost(job.config, *runner.size) for job in plan.jobs)
    return point_rows(method, found, triggers, before_valid), units, f"sweep of {len(plan.points)} points"


def search_rows(method, runner: Runner, options: Options, triggers, before_valid) -> tuple[list[dict], float, str]:
    """A search of the defense's space within the budget: the rows of every trial's every epoch, the units
    spent and how many trials ran."""
    from defenses.search import SearchSettings, search
    from defenses.selection import flat_row, objective, point_rows

    valid = [f"{t} (validation)" for t in triggers]

    def score(metrics: dict) -> float | None:
        return objective(flat_row(metrics, triggers, valid) | {"before_valid_acc": before_valid}, options.max_ca_drop)

    space = {"defense": method.name, "holdout": options.holdout, "seed": options.seed}
    settings = SearchSettings(budget=options.budget, seed=options.seed)
    trials = search(method, space, settings, runner.rung, score, *runner.size)
    found = []
    for trial in trials:
        job = trial.jobs[-1]
        found += [(job, epoch, metrics) for epoch, metrics in sorted(runner.points[job.key].items()) if epoch > 0]
    spent = sum(trial.cost for trial in trials)
    return point_rows(method, found, triggers, before_valid), spent, f"search, {len(trials)} trials"


def reseeded(job, seed: int):
    """The same work with another seed: its training order (where it has one) and its held-out split."""
    from defenses.jobs import Job

    config = dict(job.config)
    if "seed" in config:
        config["seed"] = seed
    if "holdout" in config:
        config["holdout"] = dict(config["holdout"], seed=seed)
    return Job(job.kind, config)


def repeat(row: dict, runner: Runner, options: Options, triggers: list[str]) -> list[dict]:
    """The chosen point's test CA and ASR per trigger, and the same point trained again with seeds 1 ..
    seeds - 1 (training order and held-out split)."""
    figures = [{"ca": row["ca"], **{t: row[f"asr {t}"] for t in triggers}}]
    for seed in range(1, options.seeds):
        metrics = runner.run(reseeded(row["job"], seed))[0][row["position"]]
        figures.append({"ca": metrics["ca"], **{t: metrics["asr"][t] for t in triggers}})
    return figures


def board(name: str, triggers: list[str], data: Path, options: Options, methods: list[str] | None) -> list[dict]:
    from defenses.methods import METHODS
    from defenses.runner import load_inputs
    from defenses.search import can_search
    from defenses.selection import der, select

    loaded = load_inputs(inputs_of(data, name, triggers))
    before = loaded.split(options.holdout, options.seed).baseline()
    before_asr = sum(before["asr"][t] for t in triggers) / len(triggers)
    workdir = Path(tempfile.mkdtemp(prefix="leaderboard-", dir=ROOT / "var"))
    runner = Runner(loaded, workdir)
    lines = []
    for method in METHODS.values():
        if methods and method.name not in methods:
            continue
        start = time.perf_counter()
        explore = sweep_rows if options.grid or not can_search(method) else search_rows
        rows, units, how = explore(method, runner, options, triggers, before["valid_acc"])
        selection = select(rows, options.max_ca_drop, with_poisoned_valid=True)
        row = selection.best
        line = {"badnet": name, "method": method, "title": method.title, "how": how, "row": row}
        line |= {"seconds": time.perf_counter() - start, "epoch_units": units, "before": before}
        line |= {"triggers": triggers, "rule": selection.rule}
        if row is not None:
            line["der"] = der(before["ca"], before_asr, row["ca"], row["asr"])
            line["ca_drop"] = before["ca"] - row["ca"]
            line["meets_goal"] = line["ca_drop"] <= GOAL_CA_DROP and all(row[f"asr {t}"] <= GOAL_ASR for t in triggers)
        if row is not None and options.seeds > 1:
            line["seeds"] = repeat(row, runner, options, triggers)
        lines.append(line)
        print(f"  {name}: {method.title} ({how}) done in {line['seconds']:.0f} s", file=sys.stderr, flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return lines


def point_text(line: dict) -> str:
    row, method = line["row"], line["method"]
    if row is None:
        return "none meets the floor"
    shown = [f"{c.heading or c.name} {row[c.name]:.3g}" for c in method.columns if row.get(c.name) is not None]
    fixed = [f"{name} {value:.3g}" for name, value in searched_values(line).items()]
    return ", ".join(shown + fixed) or "its stop"


def searched_values(line: dict) -> dict:
    """The chosen point's own searched parameters that are not columns (FST's alpha, FT-SAM's rho)."""
    from defenses.search import searchable

    row, method = line["row"], line["method"]
    config = row["job"].config
    return {p.name: config[p.name] for p in searchable(method) if not p.axis and p.name in config}


def spread(line: dict, key: str) -> str:
    values = [figures[key] for figures in line["seeds"]]
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def print_table(lines: list[dict], options: Options, file=sys.stdout) -> None:
    out = functools.partial(print, file=file, flush=True)
    first = lines[0]
    triggers, before = first["triggers"], first["before"]
    asr_before = " / ".join(f"{before['asr'][t]:.1f}" for t in triggers)
    held = before.get("holdout", {})
    out(
        f"\n{first['badnet']} (triggers {', '.join(triggers)}): BadNet CA {before['ca']:.2f} %, ASR {asr_before} %; "
        f"held-out CA {before['valid_acc']:.2f} % on {held.get('images')} of {held.get('of')} clean validation images"
    )
    seeds = f" | {options.seeds} seeds: CA | ASR" if options.seeds > 1 else ""
    out(f"| defense | how | chosen point (held-out) | CA | ASR per trigger | held-out CA | DER | s | units{seeds} |")
    out("|---|---|---|---|---|---|---|---|---|" + ("---|---|" if seeds else ""))
    ranked = sorted(lines, key=lambda line: (line["row"] is None, -(line["row"] or {}).get("selection", 0) or 0))
    for line in ranked:
        row = line["row"]
        cost = f"{line['seconds']:.0f} | {line['epoch_units']:.0f}"
        if row is None:
            out(f"| {line['title']} | {line['how']} | {point_text(line)} | | | | | {cost} |")
            continue
        asr = " / ".join(f"{row[f'asr {t}']:.1f}" for t in triggers)
        mark = " (goal met)" if line["meets_goal"] else ""
        repeated = ""
        if "seeds" in line:
            repeated = f" | {spread(line, 'ca')} | " + " / ".join(spread(line, t) for t in triggers)
        out(
            f"| {line['title']}{mark} | {line['how']} | {point_text(line)} | {row['ca']:.2f} | {asr} "
            f"| {row['valid_acc']:.2f} | {line['der']:.3f} | {cost}{repeated} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="demo", choices=["tiny", "demo", "full"])
    parser.add_argument("--synth-seed", type=int, help="another draw of the benchmark (synth --seed)")
    parser.add_argument("--max-ca-drop", type=float, default=5.0, help="the selection's clean-accuracy floor")
    parser.add_argument("--budget", type=float, default=100.0, help="fine-tuning-epoch units per defense's search")
    parser.add_argument("--holdout", type=float, default=0.2, help="share of the clean validation set held out")
    parser.add_argument("--seed", type=int, default=0, help="training order, held-out split and search")
    parser.add_argument("--seeds", type=int, default=1, help="train each chosen point again with this many seeds")
    parser.add_argument("--grid", action="store_true", help="every defense's small sweep instead of search")
    parser.add_argument("--badnets", help="comma-separated BadNet names (default: every BadNet of the preset)")
    parser.add_argument("--methods", help="comma-separated defense names (default: every registered defense)")
    args = parser.parse_args()
    options = Options(args.max_ca_drop, args.budget, args.holdout, args.seed, args.grid, args.seeds)
    suffix = f"-s{args.synth_seed}" if args.synth_seed is not None else ""
    data = ROOT / "var" / f"bench-{args.preset}{suffix}"
    if not (data / "synth.json").exists():
        command = [sys.executable, "-m", "defenses", "synth", "--preset", args.preset, "--out", str(data)]
        command += ["--seed", str(args.synth_seed)] if args.synth_seed is not None else []
        subprocess.run(command, cwd=ROOT, check=True)
    record = json.loads((data / "synth.json").read_text())
    chosen = args.badnets.split(",") if args.badnets else [n for n in record["badnets"] if n != "clean"]
    start = time.perf_counter()
    methods = args.methods.split(",") if args.methods else None
    boards = []
    for name in chosen:  # each BadNet's table as soon as it is done: a long run leaves what it finished
        boards.append(board(name, list(record["badnets"][name]["triggers"]), data, options, methods))
        print_table(boards[-1], options, file=sys.stderr)
    how = (
        "every defense's small sweep"
        if options.grid
        else f"search within {options.budget:g} units per training defense"
    )
    print(
        f"\nLeaderboard on the synthetic '{args.preset}' preset (seed {record.get('seed')}): {how}, the point "
        f"chosen on held-out data only ({options.holdout:.0%} of the clean validation set, seed {options.seed}, "
        f"and the poisoned validation sets; floor: at most {options.max_ca_drop:g} points below the BadNet's "
        "held-out CA); test-set figures in percent"
    )
    for lines in boards:
        print_table(lines, options)
    print(
        f"\nGoal (a defense at a test CA drop <= {GOAL_CA_DROP:g} points with ASR <= {GOAL_ASR:g} % on every "
        "trigger, chosen on held-out data):"
    )
    for lines in boards:
        met = [line["title"] for line in lines if line.get("meets_goal")]
        print(f"  {lines[0]['badnet']}: {'met by ' + ', '.join(met) if met else 'not met'}")
    print("\nBackdoorBench anchors (BadNets, CIFAR-10, PreAct-ResNet18), CA / ASR:")
    print("  " + "; ".join(f"{name} {ca:.2f} / {asr:.2f}" for name, (ca, asr) in ANCHORS.items()))
    print(f"\nWall time: {time.perf_counter() - start:.0f} s (data generation excluded)")


if __name__ == "__main__":
    main()
