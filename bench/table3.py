"""The seed report's Table 3 on the synthetic benchmark, through the command line: every BadNet before,
its repaired network and its GoodNet after fine-pruning at the report's chosen T 0.8, LR 0.001, 30 epochs.

    .venv/bin/python -m bench.table3 [--preset full] [--epochs 30]

Generates the preset into var/bench-<preset>/ first if it is not there (the full preset takes about an hour
on 2 CPU cores), then runs `python -m defenses fineprune` per BadNet and prints the table beside the
report's numbers.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The report's Table 3 (CA and ASR of BadNets and GoodNets, percent); its anonymous 2 had no poisoned data.
REPORT = {
    "sunglasses": (97.89, 84.34, "99.99", "0.40"),
    "lipstick": (97.18, 87.72, "91.40", "0.22"),
    "anonymous": (95.83, 86.52, "/", "/"),
    "multi_trigger_multi_target": (96.27, 86.66, "100.0 / 91.35 / 91.52", "0.0 / 0.01 / 0.10"),
}


def cli(*args) -> None:
    subprocess.run([sys.executable, "-m", "defenses", *map(str, args)], cwd=ROOT, check=True)


def asr_text(asr: dict) -> str:
    return " / ".join(f"{value:.2f}" for value in asr.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="full", choices=["tiny", "demo", "full"])
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    data = ROOT / "var" / f"bench-{args.preset}"
    if not (data / "synth.json").exists():
        cli("synth", "--preset", args.preset, "--out", data)
    record = json.loads((data / "synth.json").read_text())
    rows = []
    for name, entry in record["badnets"].items():
        if name == "clean":
            continue
        out = data / "table3" / name
        if not (out / "metrics.json").exists():
            poisoned = [f"--poisoned={t}={data / name / f'{t}_poisoned_data.h5'}" for t in entry["triggers"]]
            sets = data / "data"
            settings = ["--threshold", args.threshold, "--lr", args.lr, "--epochs", args.epochs, "--out", out]
            cli(
                "fineprune",
                "--model",
                data / name / f"{name}_bd_net.h5",
                "--valid",
                sets / "clean_validation_data.h5",
                "--test",
                sets / "clean_test_data.h5",
                *poisoned,
                *settings,
            )
        rows.append((name, json.loads((out / "metrics.json").read_text())))

    print(
        f"\nTable 3 on the synthetic '{args.preset}' preset (T {args.threshold}, LR {args.lr}, {args.epochs} "
        f"epochs; ASR per trigger, percent)\n"
    )
    print(
        "| BadNet | CA before | CA repaired | CA GoodNet | ASR before | ASR repaired | ASR GoodNet "
        "| detection | false alarm | report: CA Bad / Good | report: ASR Bad / Good |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, m in rows:
        report = REPORT.get(name, ("", "", "", ""))
        good = m["goodnet"]
        print(
            f"| {name} | {m['before']['ca']:.2f} | {m['after']['ca']:.2f} | {good['ca']:.2f} "
            f"| {asr_text(m['before']['asr'])} | {asr_text(m['after']['asr'])} | {asr_text(good['asr'])} "
            f"| {asr_text(good['detection'])} | {good['false_alarm']:.2f} "
            f"| {report[0]} / {report[1]} | {report[2]} / {report[3]} |"
        )


if __name__ == "__main__":
    main()
