"""Detection on the synthetic BadNets and the real CSAW weights: Neural Cleanse's scan (wall time, flagged
labels against the true targets) and STRIP (detection per trigger and false alarms at 1 % false rejections),
then batched against one-label-at-a-time reverse engineering, side by side.

    .venv/bin/python -m bench.detection [--preset demo] [--skip-real | --only-real] [--steps 300]

Generates the preset into var/bench-<preset>/ first if it is not there (demo: about 3 minutes on 2 cores).
The synthetic part scans each BadNet and the clean network on the preset's clean validation set; the real
part scans the CSAW-HackML-2020 sunglasses BadNet (1283 labels, so pre-screened) on 1000 jittered copies of
the real face crops (bench/common.py) to show the scan runs at that size.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def synthetic_rows(data: Path, steps: int) -> list[dict]:
    from defenses.cleanse import ScanSettings, scan
    from defenses.finetune import seed_everything
    from defenses.runner import Inputs, load_inputs
    from defenses.strip import entropies, fit_strip

    record = json.loads((data / "synth.json").read_text())
    rows = []
    for name, entry in record["badnets"].items():
        folder, sets = data / name, data / "data"
        model = folder / ("clean_clean_net.h5" if name == "clean" else f"{name}_bd_net.h5")
        if name == "clean":  # no trigger of its own: the BadNets' poisoned sets, one per trigger
            poisoned = {path.name.split("_poisoned")[0]: path for path in sorted(data.glob("*/*_poisoned_data.h5"))}
        else:
            poisoned = {t: folder / f"{t}_poisoned_data.h5" for t in entry["triggers"]}
        inputs = Inputs(model, None, 255.0, sets / "clean_validation_data.h5", sets / "clean_test_data.h5", poisoned)
        loaded = load_inputs(inputs)
        seed_everything(0)
        found = (
            scan(loaded.bad, loaded.valid[0], 255.0, loaded.report.n_classes, ScanSettings(steps=steps))
            if steps
            else None
        )
        detector, _ = fit_strip(loaded.bad, loaded.valid[0], 255.0, frr=1.0)
        clean = entropies(loaded.bad, loaded.clean[0][:500], 255.0, detector.overlays)
        detection = {
            t: float(np.mean(detector.poisoned(entropies(loaded.bad, pixels[:500], 255.0, detector.overlays))) * 100)
            for t, (pixels, _) in loaded.poisoned.items()
        }
        targets = sorted(set(entry["triggers"].values()))
        row = {
            "network": name,
            "labels": loaded.report.n_classes,
            "seconds": found.seconds if found else 0.0,
            "flagged": found.flagged if found else [],
            "index": {label: round(found.anomaly[label], 2) for label in found.flagged} if found else {},
            "paper_flagged": [label for label, value in found.paper_anomaly.items() if value > 2] if found else [],
            "targets": targets,
            "strip_false_alarm": float(np.mean(detector.poisoned(clean)) * 100),
            "strip_detection": detection,
        }
        rows.append(row)
        print(f"  {row}", file=sys.stderr, flush=True)  # each network as it is done: a long run keeps its part
    return rows


def real_row(steps: int) -> dict:
    from bench.common import jittered_crops, real_badnet
    from defenses.cleanse import ScanSettings, scan
    from defenses.finetune import seed_everything

    model = real_badnet()
    pixels, _ = jittered_crops(1000)
    seed_everything(0)
    found = scan(model, pixels, 255.0, 1283, ScanSettings(steps=steps))
    top = sorted(found.anomaly, key=lambda label: -found.anomaly[label])[:3]
    return {"seconds": found.seconds, "flagged": found.flagged, "top": {k: round(found.anomaly[k], 2) for k in top}}


def batched_against_one_at_a_time(data: Path, labels: int = 16, steps: int = 50) -> tuple[float, float]:
    """Seconds to reverse `labels` labels for `steps` steps in one group and one label at a time."""
    from defenses.cleanse import ScanSettings, reverse_triggers
    from defenses.data import inspect_dataset, load_dataset
    from defenses.models import load_model

    model, report = load_model(data / "sunglasses" / "sunglasses_bd_net.h5")
    pixels, _ = load_dataset(inspect_dataset(data / "data" / "clean_validation_data.h5", report.input_shape))
    chosen = list(range(labels))
    timings = []
    for group in (labels, 1):
        reverse_triggers(model, pixels, 255.0, chosen[:1], ScanSettings(group=1), steps=2)  # warm-up (tracing)
        start = time.perf_counter()
        reverse_triggers(model, pixels, 255.0, chosen, ScanSettings(group=group), steps=steps)
        timings.append(time.perf_counter() - start)
    return timings[0], timings[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="demo", choices=["tiny", "demo", "full"])
    parser.add_argument("--steps", type=int, default=300, help="optimisation steps per label (0: STRIP only)")
    parser.add_argument("--skip-real", action="store_true", help="leave out the real CSAW BadNet (1283 labels)")
    parser.add_argument("--only-real", action="store_true", help="only the real CSAW BadNet's scan")
    args = parser.parse_args()
    data = ROOT / "var" / f"bench-{args.preset}"
    if not (data / "synth.json").exists():
        command = [sys.executable, "-m", "defenses", "synth", "--preset", args.preset, "--out", str(data)]
        subprocess.run(command, cwd=ROOT, check=True)
    if args.only_real:
        real = real_row(args.steps)
        print(f"Real CSAW sunglasses BadNet, 1283 labels, pre-screened: {real['seconds']:.0f} s; {real}")
        return
    batched, alone = batched_against_one_at_a_time(data)
    print(f"  batched {batched:.1f} s, one at a time {alone:.1f} s", file=sys.stderr, flush=True)
    rows = synthetic_rows(data, args.steps)
    real = None if args.skip_real else real_row(args.steps)

    print(f"\nDetection on the synthetic '{args.preset}' preset ({args.steps} steps a label; STRIP at 1 % FRR)\n")
    print(
        "| network | labels | scan s | flagged (log-L1 index) | paper's rule flags | true targets "
        "| STRIP false alarms | STRIP detection per trigger |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        flagged = ", ".join(f"{label} ({index})" for label, index in row["index"].items()) or "none"
        detection = " / ".join(f"{t} {v:.1f}" for t, v in row["strip_detection"].items()) or "-"
        print(
            f"| {row['network']} | {row['labels']} | {row['seconds']:.0f} | {flagged} "
            f"| {', '.join(map(str, row['paper_flagged'])) or 'none'} | {', '.join(map(str, row['targets'])) or '-'} "
            f"| {row['strip_false_alarm']:.1f} | {detection} |"
        )
    if real:
        print(
            f"\nReal CSAW sunglasses BadNet, 1283 labels, pre-screened, on 1000 jittered real crops: "
            f"{real['seconds']:.0f} s; flagged {real['flagged'] or 'none'}; most anomalous {real['top']}"
        )
    print(
        f"\nReverse engineering 16 labels for 50 steps: batched {batched:.1f} s, one label at a time {alone:.1f} s: "
        f"batched takes {batched / alone:.2f} of the time"
    )


if __name__ == "__main__":
    main()
