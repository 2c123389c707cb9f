"""`python -m defenses`: inspect, classify, evaluate, repair with any registered defense (`repair --defense
NAME`, its options made from the defense's own parameters), fine-prune, draw prune-only curves, scan for a
backdoor (Neural Cleanse), judge inputs with STRIP and export a network for Keras 2, from a shell.

Exit codes: 0 done, 2 refused input (a model that fails the safety checks, a bad dataset or image),
1 anything else. Every refusal prints one line saying what was wrong and what to do.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from defenses.data import DEFAULT_HOLDOUT, DataError, inspect_dataset, load_dataset, load_image
from defenses.export import ExportRefused
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

    add_repair_parser(commands)

    add_detection_parsers(commands)
    export = commands.add_parser("export", help="a model file written for Keras 2 (or Keras 3)")
    export.add_argument("--model", required=True, type=Path, help="model: .h5 (full or weights-only) or .keras")
    export.add_argument("--arch", help="architecture preset for a weights-only file (deepid-csaw)")
    export.add_argument("--keras", required=True, choices=["2", "3"], help="the Keras that will load the file")
    export.add_argument(
        "--weights-only",
        action="store_true",
        help="Keras 2 save_weights layout (for load_weights into --arch's architecture, checked layer by layer)",
    )
    export.add_argument("--out", required=True, type=Path, help="the file to write (.h5 for Keras 2, .keras for 3)")

    synth = commands.add_parser("synth", help="write the synthetic face benchmark and its BadNets (CSAW layout)")
    synth.add_argument("--preset", choices=["tiny", "demo", "full"], default="tiny")
    synth.add_argument("--out", required=True, type=Path)
    synth.add_argument("--seed", type=int, help="default: the preset's own seed")
    return parser


def add_detection_parsers(commands) -> None:
    from defenses.cleanse import ScanSettings
    from defenses.strip import DEFAULT_FRR, OVERLAYS

    scan = commands.add_parser(
        "scan", help="Neural Cleanse: reverse every label's trigger on clean images and flag the anomalous labels"
    )
    add_model_args(scan)
    scan.add_argument("--valid", required=True, type=Path, help="clean images to reverse triggers on (.h5)")
    scan.add_argument("--steps", type=int, default=ScanSettings.steps, help="optimisation steps per label")
    scan.add_argument("--out", type=Path, help="folder for scan.json and the three smallest triggers as PNG")

    strip = commands.add_parser(
        "strip", help="STRIP: calibrate on clean validation images, then judge sets (rates) and images (each)"
    )
    add_model_args(strip)
    strip.add_argument("--valid", required=True, type=Path, help="clean validation set: overlays and calibration")
    strip.add_argument("--frr", type=float, default=DEFAULT_FRR, help="percent of clean inputs to reject")
    strip.add_argument("--overlays", type=int, default=OVERLAYS, help="clean images blended with each input")
    strip.add_argument("--test", "--clean", dest="clean", type=Path, help="clean test set: its false rejections")
    strip.add_argument("--poisoned", action="append", default=[], metavar="NAME=PATH", help="detection per set")
    strip.add_argument("--max-images", type=int, default=500, help="images judged per set, at most")
    strip.add_argument("images", nargs="*", type=Path, help="PNG or JPEG images to judge one by one")


def drop_checkpoints(folder: Path) -> None:
    from defenses.finetune import CHECKPOINTS

    for checkpoint in folder.glob(CHECKPOINTS):
        checkpoint.unlink()


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_repair_parser(commands) -> None:
    """`repair --defense NAME`: every registered defense's parameters are options (defenses.methods: a name
    means one thing in every defense), so a new defense appears here without an edit."""
    from defenses.methods import LAYERS, METHODS, PARAMETERS

    repair = commands.add_parser(
        "repair",
        help="any registered defense: its points, the one chosen on held-out data, and its repaired network",
        description="Runs a defense's grid (comma-separated values for its axes) on the held-out split, chooses "
        "a point on held-out validation data only, and writes metrics.json and the chosen repaired network.",
    )
    repair.add_argument("--defense", required=True, choices=sorted(METHODS), help="the defense to run")
    add_model_args(repair)
    repair.add_argument("--valid", required=True, type=Path, help="clean validation set: the defender's data")
    add_data_args(repair)
    repair.add_argument(
        "--poisoned-valid",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="poisoned validation set of a trigger (the choice reads it; without one it reads clean accuracy)",
    )
    repair.add_argument("--holdout", type=float, default=DEFAULT_HOLDOUT * 100, help="percent of --valid held out")
    repair.add_argument("--max-ca-drop", type=float, default=5.0, help="the choice's clean-accuracy floor")
    repair.add_argument("--out", required=True, type=Path, help="folder for metrics.json and the repaired network")
    for parameter in PARAMETERS.values():
        users = ", ".join(m.name for m in METHODS.values() if parameter in m.parameters)
        several = "values, comma-separated" if parameter.axis or parameter.kind == LAYERS else "one value"
        repair.add_argument(option(parameter.name), dest=parameter.name, help=f"{parameter.label} ({several}; {users})")


def repair_space(args) -> dict:
    """The defense's space from the options given; an option of another defense or a malformed value is
    refused with the option's name."""
    from defenses.methods import LAYERS, METHODS, PARAMETERS

    method = METHODS[args.defense]
    own = {parameter.name for parameter in method.parameters}
    space = {"defense": method.name, "holdout": args.holdout / 100}
    for name, parameter in PARAMETERS.items():
        text = getattr(args, name)
        if text is None:
            continue
        if name not in own:
            raise DataError(f"{option(name)} is not a parameter of {method.name}; see --help for its own")
        items = [item.strip() for item in text.split(",") if item.strip()]
        if parameter.kind == LAYERS:
            space[name] = items
            continue
        try:
            values = [parameter.kind(float(item)) if parameter.kind is int else float(item) for item in items]
        except ValueError:
            raise DataError(f"{option(name)} {text!r}: give numbers, e.g. {parameter.default}") from None
        if not values:
            raise DataError(f"{option(name)} is empty: give a value")
        space[name] = values if parameter.axis else values[0]
    if not 0 < args.holdout < 100:
        raise DataError(f"--holdout {args.holdout:g}: give a percent above 0 and below 100")
    return space


def cmd_repair(args) -> int:
    import shutil

    from defenses.methods import METHODS, job_kind, plan_space
    from defenses.runner import load_inputs, run_job
    from defenses.selection import point_rows, select

    method = METHODS[args.defense]
    space = repair_space(args)
    plan = plan_space(space)
    poisoned_valid = {f"{name} (validation)": path for name, path in parse_poisoned(args.poisoned_valid).items()}
    inputs = runner_inputs(args)
    loaded = load_inputs(dataclasses.replace(inputs, poisoned=inputs.poisoned | poisoned_valid))
    share, seed = space["holdout"], int(space.get("seed", 0))
    before = loaded.split(share, seed).baseline()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for number, job in enumerate(plan.jobs):
        points: dict[int, dict] = {}
        print(f"job {number + 1} of {len(plan.jobs)}: {job_kind(job.kind).describe(job.config)}", file=sys.stderr)
        folder = args.out / f"job-{number}"
        drop_checkpoints(folder)  # an earlier command's checkpoint here would resume it and skip its points
        run_job(job.kind, job.config, loaded, points.__setitem__, artifact_dir=folder)
        drop_checkpoints(folder)
        results.append(points)
    if method.steps:
        found = [(plan.jobs[0], p, m) for p, m in sorted(results[0].items()) if m.get("stop")][:1]
    else:
        found = [(plan.jobs[job], position, results[job].get(position) or {}) for job, position in plan.points.values()]
    triggers = sorted(parse_poisoned(args.poisoned))
    rows = point_rows(method, found, triggers, before["valid_acc"])
    chosen = select(rows, args.max_ca_drop, bool(poisoned_valid), before.get("holdout"))
    kept = None
    if chosen.best is not None:
        job, position = chosen.best["job"], chosen.best["position"]
        network = job_kind(job.kind).network_at(job.config, position, loaded.report.as_dict())
        source = args.out / f"job-{plan.jobs.index(job)}" / network if network else None
        if source and source.exists():
            kept = args.out / "repaired_net.keras"
            shutil.copyfile(source, kept)
    public = [{key: value for key, value in row.items() if key != "job"} for row in rows]
    best = {key: value for key, value in (chosen.best or {}).items() if key != "job"} or None
    result = {"space": space, "before": before, "points": public, "rule": chosen.rule, "chosen": best}
    result["repaired_network"] = str(kept) if kept else None
    (args.out / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    columns = [column.name for column in method.columns]
    for row in public:
        where = ", ".join(f"{name} {row.get(name)}" for name in columns)
        asr = ", ".join(f"{name} {row.get(f'asr {name}'):.2f}%" for name in triggers)
        mark = "  <- chosen" if best is not None and row == best else ""
        print(f"{where}: CA {row['ca']:.2f}%, ASR {asr}, held-out CA {row['valid_acc']:.2f}%{mark}")
    print(f"chosen: {chosen.rule}" if best else f"nothing chosen: {chosen.rule}")
    if kept:
        print(f"repaired network: {kept}")
    return 0


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
    drop_checkpoints(args.out)  # an earlier command's checkpoint here would resume it and skip its epochs
    repaired = run_job("finetune", config | split, loaded, report_point, artifact_dir=args.out)
    drop_checkpoints(args.out)
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


def cmd_scan(args) -> int:
    from defenses.cleanse import ScanSettings, ranked_rows, scan
    from defenses.finetune import seed_everything

    if args.steps < 1:
        raise DataError(f"--steps {args.steps}: give at least 1 step per label")
    model, report = load_checked_model(args.model, args.arch)
    pixels, _ = load_dataset(inspect_dataset(args.valid, report.input_shape, report.n_classes))
    seed_everything(0)
    result = scan(
        model,
        pixels,
        SCALES[args.scale],
        report.n_classes,
        ScanSettings(steps=args.steps),
        on_stage=lambda words: print(words, file=sys.stderr),
    )
    rows = ranked_rows(result)
    for row in rows[:10]:
        print(f"label {row['label']}: mask L1 {row['l1']}, anomaly index {row['anomaly']}, success {row['success']}%")
    flagged = ", ".join(map(str, result.flagged))
    print(f"flagged (anomaly index above 2): {flagged}" if flagged else "no label is flagged")
    if args.out:
        write_scan(args.out, result, rows)
    return 0


def write_scan(folder: Path, result, rows: list[dict]) -> None:
    """scan.json, and each of the three smallest triggers as its mask and mask x pattern in PNG."""
    import numpy as np
    from PIL import Image

    from defenses.cleanse import smallest_labels

    folder.mkdir(parents=True, exist_ok=True)
    record = {"flagged": result.flagged, "prescreened": result.prescreened, "seconds": result.seconds, "rows": rows}
    (folder / "scan.json").write_text(json.dumps(record, indent=2))
    for trigger in (result.triggers[label] for label in smallest_labels(result, 3)):
        mask = np.clip(trigger.mask * 255, 0, 255).astype(np.uint8)
        Image.fromarray(mask).save(folder / f"label-{trigger.label}-mask.png")
        drawn = np.clip(trigger.mask[..., None] * trigger.pattern, 0, 255).astype(np.uint8)
        Image.fromarray(drawn.squeeze(-1) if drawn.shape[-1] == 1 else drawn).save(
            folder / f"label-{trigger.label}-trigger.png"
        )


def cmd_strip(args) -> int:
    import numpy as np

    from defenses.finetune import seed_everything
    from defenses.strip import entropies, fit_strip

    if args.max_images < 1 or not 0 <= args.frr < 100:
        raise DataError("--max-images must be at least 1 and --frr a percent from 0 to under 100")
    model, report = load_checked_model(args.model, args.arch)
    divisor = SCALES[args.scale]
    valid, _ = load_dataset(inspect_dataset(args.valid, report.input_shape, report.n_classes))
    seed_everything(0)
    try:
        detector, calibration = fit_strip(model, valid, divisor, args.frr, args.overlays)
    except ValueError as refusal:
        raise DataError(f"{args.valid.name}: {refusal}") from None
    print(f"threshold: entropy {detector.threshold:.4f} bits ({args.frr:g} % of {len(calibration)} clean images)")
    sets = {"clean test": args.clean} if args.clean else {}
    for name, path in (sets | parse_poisoned(args.poisoned)).items():
        pixels, _ = load_dataset(inspect_dataset(path, report.input_shape, report.n_classes))
        judged = detector.poisoned(entropies(model, pixels[: args.max_images], divisor, detector.overlays))
        what = "false rejections" if name == "clean test" else "detected"
        print(f"{name}: {what} {100 * np.mean(judged):.2f} % of {len(judged)} images")
    for path in args.images:
        image = load_image(path, report.input_shape[:2])
        bits = float(entropies(model, image.pixels[None], divisor, detector.overlays)[0])
        verdict = "poisoned" if bits < detector.threshold else "clean"
        print(f"{path}\t{verdict}\tentropy {bits:.4f}")
    return 0


def cmd_export(args) -> int:
    from defenses.export import save_keras2_model, save_keras2_weights

    model, _ = load_checked_model(args.model, args.arch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.keras == "3":
        if args.weights_only or args.out.suffix != ".keras":
            raise DataError("--keras 3 writes a full .keras file: name --out *.keras, without --weights-only")
        model.save(args.out)
    elif args.weights_only:
        save_keras2_weights(model, args.out, args.arch)
    else:
        save_keras2_model(model, args.out)
    print(f"written: {args.out} (Keras {args.keras}{', weights only' if args.weights_only else ''})")
    return 0


COMMANDS = {
    "inspect": cmd_inspect,
    "classify": cmd_classify,
    "evaluate": cmd_evaluate,
    "fineprune": cmd_fineprune,
    "repair": cmd_repair,
    "prune-curve": cmd_prune_curve,
    "synth": cmd_synth,
    "scan": cmd_scan,
    "strip": cmd_strip,
    "export": cmd_export,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ModelRefused, DataError, ExportRefused) as refusal:
        print(f"refused: {refusal}", file=sys.stderr)
        return 2
    except FileNotFoundError as missing:
        print(f"refused: no such file: {missing.filename}. Check the path.", file=sys.stderr)
        return 2
