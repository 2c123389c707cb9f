"""`python -m defenses`: inspect, classify, evaluate, fine-prune and draw prune-only curves from a shell.

Exit codes: 0 done, 2 refused input (a model that fails the safety checks, a bad dataset or image),
1 anything else. Every refusal prints one line saying what was wrong and what to do.
"""

import argparse
import json
import sys
from pathlib import Path

from defenses.data import DEFAULT_HOLDOUT, DataError, inspect_dataset, load_dataset, load_image
from defenses.modelcheck import ModelRefused

SCALES = {"255": 255.0, "1": 1.0}


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="BadNet: .h5 (full or weights-only) or .keras")
    parser.add_argument("--arch", help="architecture preset for a weights-only file (deepid-csaw)")
    parser.add_argument(
        "--scale", choices=SCALES, default="255", help="divide pixels by 255 (default) or feed raw 0..255 pixels (1)"
    )


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--test", "--clean", dest="clean", required=True, type=Path, help="clean test set (.h5)")
    parser.add_argument(
        "--poisoned",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="poisoned test set with the attacker's target labels; repeat per trigger",
    )


def parse_floats(text: str) -> list[float]:
    return [float(item) for item in text.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m defenses", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="layers, input shape and class count of a model file")
    inspect.add_argument("model", type=Path)
    inspect.add_argument("--arch", help="architecture preset for a weights-only file")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")

    classify = commands.add_parser("classify", help="class of each image; with --repaired the GoodNet's answer")
    add_model_args(classify)
    classify.add_argument("--repaired", type=Path, help="repaired network: answer N when the two disagree")
    classify.add_argument("--repaired-arch", help="architecture preset for a weights-only repaired file")
    classify.add_argument("images", nargs="+", type=Path)

    evaluate = commands.add_parser("evaluate", help="CA, ASR per poisoned set and score")
    add_model_args(evaluate)
    add_data_args(evaluate)

    fineprune = commands.add_parser("fineprune", help="threshold pruning then fine-tuning; writes the GoodNet")
    add_model_args(fineprune)
    fineprune.add_argument("--valid", required=True, type=Path, help="clean validation set: the defender's data")
    add_data_args(fineprune)
    fineprune.add_argument("--threshold", type=float, required=True, help="pruning threshold T (0 prunes nothing)")
    fineprune.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 0.001)")
    fineprune.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (0: prune only)")
    fineprune.add_argument("--layers", help="comma-separated conv layers to prune (default: every Conv2D)")
    fineprune.add_argument("--seed", type=int, default=0)
    fineprune.add_argument(
        "--holdout",
        type=float,
        default=DEFAULT_HOLDOUT * 100,
        help="percent of --valid kept from pruning and fine-tuning, where validation accuracy is measured "
        "(default 20; 0: every image trains, and validation accuracy is training accuracy)",
    )
    fineprune.add_argument("--out", required=True, type=Path, help="folder for the repaired model and bundle")

    curve = commands.add_parser("prune-curve", help="prune-only CA/ASR against T and against fraction pruned")
    add_model_args(curve)
    curve.add_argument("--valid", required=True, type=Path)
    add_data_args(curve)
    curve.add_argument(
        "--thresholds",
        default=",".join(f"{t / 10:.1f}" for t in range(21)),
        type=parse_floats,
        help="comma-separated T values (default 0,0.1,...,2)",
    )
    curve.add_argument("--layers", help="comma-separated conv layers for the threshold curve (default: all)")
    curve.add_argument("--incremental-layer", help="layer for the incremental curve (default: last Conv2D)")
    curve.add_argument("--max-drop", type=float, default=4.0, help="incremental stop: validation accuracy drop")
    curve.add_argument("--out", type=Path, help="write the curves as JSON here")

    synth = commands.add_parser("synth", help="write the synthetic face benchmark and its BadNets (CSAW layout)")
    synth.add_argument("--preset", choices=["tiny", "demo", "full"], default="tiny")
    synth.add_argument("--out", required=True, type=Path)
    synth.add_argument("--seed", type=int, help="default: the preset's own seed")
    return parser


def load_checked_model(path: Path, arch: str | None):
    from defenses.models import load_model

    return load_model(path, arch)


def load_sets(args, n_classes: int, image_shape) -> tuple:
    def read(path: Path):
        return load_dataset(inspect_dataset(path, image_shape, n_classes))

    return read(args.clean), {name: read(path) for name, path in parse_poisoned(args.poisoned).items()}


def cmd_inspect(args) -> int:
    from defenses.models import verify_model_file

    report = verify_model_file(args.model, args.arch)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    print(
        f"{args.model.name}: {report.kind}, input {report.input_shape}, N = {report.n_classes} classes, "
        f"{report.params:,} parameters"
    )
    for name, cls, params in report.layers:
        print(f"  {name:<16} {cls:<20} {params:>10,}")
    print(f"Conv2D layers (prunable): {', '.join(report.conv_layers)}")
    return 0


def cmd_classify(args) -> int:
    import numpy as np

    from defenses.goodnet import GoodNet
    from defenses.metrics import predict_labels

    bad, report = load_checked_model(args.model, args.arch)
    size = report.input_shape[:2]
    images = [load_image(path, size) for path in args.images]
    pixels = np.stack([image.pixels for image in images])
    divisor = SCALES[args.scale]
    if args.repaired:
        repaired, _ = load_checked_model(args.repaired, args.repaired_arch)
        answers = GoodNet(bad, repaired, divisor).labels(pixels)
    else:
        answers = predict_labels(bad, pixels, divisor)
    for path, image, answer in zip(args.images, images, answers, strict=True):
        note = f"\t# {image.note}" if image.note else ""
        print(f"{path}\t{int(answer)}{note}")
    return 0


def cmd_evaluate(args) -> int:
    from defenses.metrics import evaluate

    model, report = load_checked_model(args.model, args.arch)
    clean, poisoned = load_sets(args, report.n_classes, report.input_shape)
    metrics = evaluate(model, SCALES[args.scale], clean, poisoned)
    print(json.dumps(metrics.as_dict(), indent=2))
    return 0


def parse_poisoned(items: list[str]) -> dict[str, Path]:
    poisoned = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise DataError(f"--poisoned {item!r}: write NAME=PATH, e.g. --poisoned sunglasses=bd_test.h5")
        poisoned[name] = Path(path)
    return poisoned


def runner_inputs(args):
    from defenses.runner import Inputs

    return Inputs(
        model=args.model,
        arch=args.arch,
        divisor=SCALES[args.scale],
        valid=args.valid,
        test=args.clean,
        poisoned=parse_poisoned(args.poisoned),
    )


def cmd_fineprune(args) -> int:
    from defenses.goodnet import GoodNet, export_bundle
    from defenses.metrics import evaluate
    from defenses.runner import load_inputs, run_job

    if not 0 <= args.holdout < 100:
        raise DataError(f"--holdout {args.holdout:g}: give a percent from 0 (nothing held out) to below 100")
    loaded = load_inputs(runner_inputs(args))
    layers = args.layers.split(",") if args.layers else list(loaded.report.conv_layers)
    config = {"threshold": args.threshold, "lr": args.lr, "epochs": args.epochs, "layers": layers, "seed": args.seed}
    rows: list[dict] = []
    progress = make_progress(args.epochs)

    def report_point(position: int, metrics: dict) -> None:
        rows.append(metrics)
        if position:
            progress(metrics)

    args.out.mkdir(parents=True, exist_ok=True)
    split = {"holdout": {"share": args.holdout / 100, "seed": args.seed}} if args.holdout else {}
    repaired = run_job("finetune", config | split, loaded, report_point, artifact_dir=args.out)
    goodnet = GoodNet(loaded.bad, repaired, loaded.divisor)
    export_bundle(goodnet, args.out / "goodnet", {key: config[key] for key in ("threshold", "lr", "epochs")})
    result = {
        "settings": config | {"divisor": loaded.divisor} | split,
        "pruned": rows[0]["pruned"],
        "before": evaluate(loaded.bad, loaded.divisor, loaded.clean, loaded.poisoned).as_dict(),
        "after_pruning": {key: rows[0][key] for key in ("ca", "asr", "score")},
        "epochs": rows[1:],
        "after": {key: rows[-1][key] for key in ("ca", "asr", "score")},
        "goodnet": goodnet.evaluate(loaded.clean, loaded.poisoned).as_dict(),
    }
    (args.out / "metrics.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({key: result[key] for key in ("pruned", "before", "after", "goodnet")}, indent=2))
    return 0


def make_progress(total: int):
    """A tqdm bar on a terminal, one line per epoch otherwise (logs, CI)."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit="epoch", disable=not sys.stderr.isatty())

    def report(row: dict) -> None:
        bar.update(1)
        text = f"loss {row['loss']:.4f}, CA {row['ca']:.2f}%"
        bar.set_postfix_str(text)
        if bar.disable:
            print(f"epoch {row['epoch']}/{total}: {text}", file=sys.stderr)

    return report


def cmd_prune_curve(args) -> int:
    from defenses.pruning import incremental_prune, threshold_curve
    from defenses.runner import load_inputs

    loaded = load_inputs(runner_inputs(args))
    layers = args.layers.split(",") if args.layers else list(loaded.report.conv_layers)
    profile = loaded.profile(list(loaded.report.conv_layers))
    by_threshold = threshold_curve(
        loaded.bad, loaded.divisor, profile, args.thresholds, loaded.valid, loaded.clean, loaded.poisoned, layers
    )
    incremental = incremental_prune(
        loaded.bad,
        loaded.divisor,
        profile,
        loaded.valid,
        args.max_drop,
        args.incremental_layer,
        loaded.clean,
        loaded.poisoned,
    )
    result = {
        "threshold_curve": [point.__dict__ for point in by_threshold],
        "incremental": {
            "layer": incremental.layer,
            "order": incremental.order,
            "stop": incremental.stop,
            "max_drop": args.max_drop,
            "steps": [point.__dict__ for point in incremental.steps],
        },
    }
    for point in by_threshold:
        asr = ", ".join(f"{name} {value:.2f}%" for name, value in point.asr.items())
        print(f"T={point.threshold:<4} pruned {point.fraction:6.1%}  CA {point.ca:6.2f}%  ASR {asr}")
    print(
        f"incremental on {incremental.layer}: stopped after {incremental.stop} channels "
        f"(validation accuracy drop > {args.max_drop} points)"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


def cmd_synth(args) -> int:
    from tqdm import tqdm

    from defenses.synthetic import build_benchmark

    bar = tqdm(unit="epoch", disable=not sys.stderr.isatty())

    def progress(what: str, done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.set_description(what)
        bar.refresh()
        if bar.disable:
            print(f"{what} ({done}/{total} epochs)", file=sys.stderr, flush=True)

    record = build_benchmark(args.preset, args.out, args.seed, progress=progress)
    bar.close()
    for name, entry in record["badnets"].items():
        asr = ", ".join(f"{trigger} {value:.1f}%" for trigger, value in entry["asr"].items())
        print(f"{name:<28} CA {entry['ca']:5.1f}%  ASR {asr}")
    print(f"written to {args.out} in {record['seconds']:.0f}s")
    return 0


COMMANDS = {
    "inspect": cmd_inspect,
    "classify": cmd_classify,
    "evaluate": cmd_evaluate,
    "fineprune": cmd_fineprune,
    "prune-curve": cmd_prune_curve,
    "synth": cmd_synth,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ModelRefused, DataError) as refusal:
        print(f"refused: {refusal}", file=sys.stderr)
        return 2
    except FileNotFoundError as missing:
        print(f"refused: no such file: {missing.filename}. Check the path.", file=sys.stderr)
        return 2
