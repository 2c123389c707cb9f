"""The leaderboard page's study from a shell: every registered defense on every BadNet of a synthetic preset,
each with its default small sweep (defenses.methods `sweep`, as the page's one click queues it), the point
chosen on validation data only (the poisoned validation sets and the clean-accuracy floor,
defenses.selection.select, the rule every page uses), then that point's test-set figures.

    .venv/bin/python -m bench.leaderboard [--preset demo] [--max-ca-drop 5] [--badnets sunglasses,lipstick]
        [--methods fine-prune,nc-unlearn]

Generates the preset into var/bench-<preset>/ first if it is not there (demo: about 3 minutes on 2 cores;
full: about an hour). Jobs two defenses share (fine-tuning alone is fine-pruning at T = 0) run once; their
time counts for the first defense that needs them. Prints one table per BadNet, then the goal's verdict: per
BadNet, is there a defense with a clean-accuracy drop of 2 points or less and an ASR of 1 % or less on every
trigger, chosen without the test sets?
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# BackdoorBench (BadNets, CIFAR-10, PreAct-ResNet18, 10 % poison): CA / ASR, for the README beside ours.
ANCHORS = {
    "no defense": (91.32, 95.03),
    "fine-pruning": (91.31, 57.13),
    "fine-tuning": (89.96, 1.48),
    "NAD": (89.87, 2.14),
    "ANP": (84.17, 0.73),
}


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


def run_jobs(plan, loaded, done: dict) -> tuple[list[dict], float]:
    """Every job's points ({position: metrics} per job of `plan`) and the seconds spent on jobs not already in
    `done` (shared jobs, keyed by their reuse key, run once)."""
    from defenses.runner import run_job

    spent = 0.0
    for job in plan.jobs:
        if job.key not in done:
            points: dict[int, dict] = {}
            start = time.perf_counter()
            run_job(job.kind, job.config, loaded, lambda position, metrics, p=points: p.__setitem__(position, metrics))
            spent += time.perf_counter() - start
            done[job.key] = points
    return [done[job.key] for job in plan.jobs], spent


def chosen_point(method, plan, results: list[dict], loaded, triggers: list[str], max_ca_drop: float):
    """The defense's validation-selected point as a flat row (None: no point meets the floor) and the rule."""
    from defenses.selection import flat_row, select

    valid = [f"{t} (validation)" for t in triggers]
    before_valid = loaded.baseline()["valid_acc"]
    if method.steps:  # one job whose own validation rule says where it stopped
        stop = next((m for _, m in sorted(results[0].items()) if m.get("stop")), None)
        row = flat_row(stop, triggers, valid) if stop else None
        return row, "its own validation rule (where it stopped)"
    columns = [column.name for column in method.columns]
    rows = []
    for coordinates, (job, position) in sorted(plan.points.items()):
        metrics = results[job].get(position) or {}
        row = dict(zip(columns, coordinates, strict=True)) | flat_row(metrics, triggers, valid)
        rows.append(row | {"before_valid_acc": before_valid})
    selection = select(rows, max_ca_drop, with_poisoned_valid=True)
    return selection.best, selection.rule


def point_text(method, row: dict | None) -> str:
    if row is None:
        return "none meets the floor"
    shown = [f"{column.heading or column.name} {row[column.name]:g}" for column in method.columns if column.name in row]
    return ", ".join(shown) or "its stop"


def board(name: str, triggers: list[str], data: Path, max_ca_drop: float, methods: list[str] | None) -> list[dict]:
    from defenses.methods import METHODS, job_kind
    from defenses.runner import load_inputs
    from defenses.selection import der

    loaded = load_inputs(inputs_of(data, name, triggers))
    before = loaded.baseline()
    before_asr = sum(before["asr"][t] for t in triggers) / len(triggers)
    done: dict = {}
    lines = []
    for method in METHODS.values():
        if methods and method.name not in methods:
            continue
        plan = method.plan({"defense": method.name, **method.sweep})
        results, seconds = run_jobs(plan, loaded, done)
        row, rule = chosen_point(method, plan, results, loaded, triggers, max_ca_drop)
        units = sum(job_kind(job.kind).cost(job.config, len(loaded.valid[1])) for job in plan.jobs)
        line = {"badnet": name, "method": method.title, "point": point_text(method, row), "seconds": seconds}
        line |= {"epoch_units": units, "rule": rule, "row": row, "before": before, "triggers": triggers}
        if row is not None:
            line["der"] = der(before["ca"], before_asr, row["ca"], row["asr"])
            line["ca_drop"] = before["ca"] - row["ca"]
            line["meets_goal"] = line["ca_drop"] <= 2.0 and all(row[f"asr {t}"] <= 1.0 for t in triggers)
        lines.append(line)
        print(f"  {name}: {method.title} done in {seconds:.0f} s", file=sys.stderr, flush=True)
    return lines


def print_table(lines: list[dict]) -> None:
    first = lines[0]
    triggers, before = first["triggers"], first["before"]
    asr_before = " / ".join(f"{before['asr'][t]:.1f}" for t in triggers)
    print(f"\n{first['badnet']} (triggers {', '.join(triggers)}): BadNet CA {before['ca']:.2f} %, ASR {asr_before} %")
    print("| defense | chosen point (validation) | CA | ASR per trigger | detection | false alarm | DER | s | epochs |")
    print("|---|---|---|---|---|---|---|---|---|")
    ranked = sorted(
        lines, key=lambda line: (line["row"] is None, -(line["row"]["selection"] or 0) if line["row"] else 0)
    )
    for line in ranked:
        row = line["row"]
        if row is None:
            print(
                f"| {line['method']} | {line['point']} | | | | | | {line['seconds']:.0f} | {line['epoch_units']:.0f} |"
            )
            continue
        asr = " / ".join(f"{row[f'asr {t}']:.1f}" for t in triggers)
        detection = " / ".join(
            "-" if row.get(f"detection {t}") is None else f"{row[f'detection {t}']:.1f}" for t in triggers
        )
        alarm = "-" if row.get("false_alarm") is None else f"{row['false_alarm']:.1f}"
        mark = " (goal met)" if line["meets_goal"] else ""
        print(
            f"| {line['method']}{mark} | {line['point']} | {row['ca']:.2f} | {asr} | {detection} | {alarm} "
            f"| {line['der']:.3f} | {line['seconds']:.0f} | {line['epoch_units']:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="demo", choices=["tiny", "demo", "full"])
    parser.add_argument("--max-ca-drop", type=float, default=5.0, help="the selection's clean-accuracy floor")
    parser.add_argument("--badnets", help="comma-separated BadNet names (default: every BadNet of the preset)")
    parser.add_argument("--methods", help="comma-separated defense names (default: every registered defense)")
    args = parser.parse_args()
    data = ROOT / "var" / f"bench-{args.preset}"
    if not (data / "synth.json").exists():
        command = [sys.executable, "-m", "defenses", "synth", "--preset", args.preset, "--out", str(data)]
        subprocess.run(command, cwd=ROOT, check=True)
    record = json.loads((data / "synth.json").read_text())
    chosen = args.badnets.split(",") if args.badnets else [n for n in record["badnets"] if n != "clean"]
    start = time.perf_counter()
    methods = args.methods.split(",") if args.methods else None
    boards = [
        board(name, list(record["badnets"][name]["triggers"]), data, args.max_ca_drop, methods) for name in chosen
    ]
    print(
        f"\nLeaderboard on the synthetic '{args.preset}' preset: each defense's default sweep, the point chosen on "
        f"validation data only (floor: at most {args.max_ca_drop:g} points below the BadNet's validation CA), "
        "test-set figures in percent"
    )
    for lines in boards:
        print_table(lines)
    print("\nGoal (a defense at a CA drop <= 2 points with ASR <= 1 % on every trigger, chosen on validation data):")
    for lines in boards:
        met = [line["method"] for line in lines if line.get("meets_goal")]
        print(f"  {lines[0]['badnet']}: {'met by ' + ', '.join(met) if met else 'not met'}")
    print("\nBackdoorBench anchors (BadNets, CIFAR-10, PreAct-ResNet18), CA / ASR:")
    print("  " + "; ".join(f"{name} {ca:.2f} / {asr:.2f}" for name, (ca, asr) in ANCHORS.items()))
    print(f"\nWall time: {time.perf_counter() - start:.0f} s (data generation excluded)")


if __name__ == "__main__":
    main()
