"""The seed's study at a reduced scale: the planner (shared training, one curve job) against running every
configuration separately from scratch, as the report did. Same process, same loaded data for both.

    .venv/bin/python -m bench.planner

Prints both wall times, their ratio, and whether every shared point has the same numbers both ways.
Uses the tiny synthetic preset's sunglasses BadNet (written to var/bench-planner/ on first use).
"""

import time
from pathlib import Path

from defenses.methods import training_epochs
from defenses.methods.fineprune import run_finetune
from defenses.planner import ParameterSpace, naive_training_epochs, plan_study
from defenses.runner import Inputs, load_inputs, run_job
from defenses.synthetic import BADNETS, build_benchmark

ROOT = Path(__file__).resolve().parent.parent
# The report's Figures 2-4 and Tables 1-2 with its epoch counts divided by about 5 and fewer values.
REDUCED_STUDY = [
    ParameterSpace(thresholds=tuple(t / 4 for t in range(9)), learning_rates=(0.001,), epochs=(2,)),
    ParameterSpace(thresholds=(1.0,), learning_rates=(1e-4, 5e-4, 1e-3, 5e-3, 1e-2), epochs=(2,)),
    ParameterSpace(thresholds=(1.0,), learning_rates=(0.001,), epochs=(1, 2, 3, 4, 5, 6, 7, 8)),
    ParameterSpace(thresholds=(0.8, 1.0, 1.2), learning_rates=(0.001, 0.003, 0.005), epochs=(6, 7, 8)),
    ParameterSpace(thresholds=(0.8,), learning_rates=(0.001,), epochs=(6,)),
    ParameterSpace(defense="fine-tune", learning_rates=(0.001,), epochs=(6,)),
]


def main() -> None:
    data = ROOT / "var" / "bench-planner"
    if not (data / "synth.json").exists():
        build_benchmark("tiny", data, badnets=(BADNETS[0],))
    badnet, sets = data / "sunglasses", data / "data"
    loaded = load_inputs(
        Inputs(
            model=badnet / "sunglasses_bd_net.h5",
            arch=None,
            divisor=255.0,
            valid=sets / "clean_validation_data.h5",
            test=sets / "clean_test_data.h5",
            poisoned={"sunglasses": badnet / "sunglasses_poisoned_data.h5"},
        )
    )
    the_plan = plan_study(REDUCED_STUDY)
    started = time.perf_counter()
    results = []
    for job in the_plan.jobs:
        rows = {}
        run_job(job.kind, job.config, loaded, rows.__setitem__)
        results.append(rows)
    planned = time.perf_counter() - started

    points = sorted({point for space in REDUCED_STUDY for point in space.points()})
    started = time.perf_counter()
    separate = {}
    for threshold, lr, epochs in points:
        rows = {}
        run_finetune(
            loaded, {"threshold": threshold, "lr": lr, "epochs": epochs, "layers": [], "seed": 0}, rows.__setitem__
        )
        separate[(threshold, lr, epochs)] = rows[epochs]
    naive = time.perf_counter() - started

    def same(a: dict, b: dict) -> bool:
        keys = ("ca", "asr", "score", "loss", "train_acc")
        return all(a.get(key) == b.get(key) for key in keys)

    mismatched = [p for p, (job, pos) in the_plan.points.items() if not same(results[job][pos], separate[p])]
    naive_epochs = sum(naive_training_epochs(space) for space in REDUCED_STUDY)
    print(
        f"{len(points)} points; planner: {len(the_plan.jobs)} runs, {training_epochs(the_plan)} training epochs; "
        f"separately: {len(points)} runs, {naive_epochs} training epochs"
    )
    print(f"planner {planned:.1f}s, separately {naive:.1f}s: planner / separate = {planned / naive:.2f}")
    print(f"points with different numbers: {len(mismatched)} {mismatched[:5]}")


if __name__ == "__main__":
    main()
