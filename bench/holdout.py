"""What a selection reads, side by side: the "validation" CA a repair reports on the images it trained on (the way
before held-out selection), the CA on held-out images it never saw, and the test CA they both stand for.

    .venv/bin/python -m bench.holdout [--preset demo] [--badnet sunglasses] [--threshold 1.2 --lr 0.005 --epochs 5]

One fine-pruning run on the whole clean validation set (the old way: validation CA is training accuracy), one
on the repair's 80 % with the other 20 % held out; per epoch it prints both validation figures beside the test
CA, and at the end the mean gap of each to the test CA.
"""

import argparse
import json
from pathlib import Path

from bench.leaderboard import ROOT, inputs_of


def main() -> None:
    from defenses.runner import load_inputs, run_job

    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--badnet", default="sunglasses")
    parser.add_argument("--threshold", type=float, default=1.2)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--holdout", type=float, default=0.2)
    args = parser.parse_args()
    data = ROOT / "var" / f"bench-{args.preset}"
    if not (data / "synth.json").exists():
        raise SystemExit(f"{data} has no synthetic data: run `python -m bench.leaderboard --preset {args.preset}`")
    triggers = list(json.loads(Path(data / "synth.json").read_text())["badnets"][args.badnet]["triggers"])
    loaded = load_inputs(inputs_of(data, args.badnet, triggers))
    config = {"threshold": args.threshold, "lr": args.lr, "epochs": args.epochs, "layers": [], "seed": 0}
    old, held = {}, {}
    run_job("finetune", config, loaded, old.__setitem__)
    run_job("finetune", config | {"holdout": {"share": args.holdout, "seed": 0}}, loaded, held.__setitem__)
    print(f"fine-prune T {args.threshold:g}, LR {args.lr:g} of the {args.preset} {args.badnet} BadNet, percent:")
    print("| epoch | validation CA on its training images (old) | test CA | held-out CA (new) | test CA |")
    print("|---|---|---|---|---|")
    for epoch in range(1, args.epochs + 1):
        a, b = old[epoch], held[epoch]
        print(f"| {epoch} | {a['valid_acc']:.2f} | {a['ca']:.2f} | {b['valid_acc']:.2f} | {b['ca']:.2f} |")
    gap_old = sum(old[e]["valid_acc"] - old[e]["ca"] for e in range(1, args.epochs + 1)) / args.epochs
    gap_new = sum(held[e]["valid_acc"] - held[e]["ca"] for e in range(1, args.epochs + 1)) / args.epochs
    images = held[0]["before"]["holdout"]
    print(f"mean (validation - test) CA: old way {gap_old:+.2f} points, held-out {gap_new:+.2f} points")
    print(f"held out: {images['images']} of {images['of']} clean validation images")


if __name__ == "__main__":
    main()
