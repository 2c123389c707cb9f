"""Peak memory on CSAW-size data, ours against the naive way (whole arrays), beside the file sizes: the web
process's upload check and dataset preview, and a worker's fine-prune run.

    .venv/bin/python -m bench.memory [--valid 11547 --test 12830 --epochs 1]

Builds once, in var/bench-memory/, three sets in the published CSAW-HackML-2020 layout: float64
(N, 3, 55, 47), unchunked, faces of 1283 synthetic identities (defenses.synthetic): clean validation, clean
test and sunglasses-poisoned test. The BadNet is the real CSAW sunglasses network (../shared/fixtures/csaw).
Every measurement runs in a fresh child process, which reports its resident size before the work (its idle
size: Django and the views imported for the web; TensorFlow and the model loaded for the worker) and its
peak (the kernel's high-water mark). The naive ways: the check and the preview read `data[:]` whole; the
worker holds every set as float32 and fits on one scaled copy of the validation set (the code before issue
16). The worker run also prints its seconds per epoch (training, then the measurement of every epoch on the
test sets): what one point of a seed study costs on this machine's CPUs.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from bench.common import FIXTURES, ROOT

CACHE = ROOT / "var" / "bench-memory"
IDENTITIES = 1283
MODEL = FIXTURES / "models" / "sunglasses_bd_weights.h5"
SHAPE = (55, 47, 3)


def write_set(path: Path, count: int, split: str, trigger: str | None = None) -> Path:
    """A CSAW-layout float64 set of `count` synthetic faces, written a block at a time."""
    from defenses.synthetic import make_identities, render_set

    if path.exists():
        return path
    people = make_identities(IDENTITIES, 0)
    partial = path.with_suffix(".partial")
    with h5py.File(partial, "w") as handle:
        data = handle.create_dataset("data", (count, 3, *SHAPE[:2]), dtype="float64")
        labels = handle.create_dataset("label", (count,), dtype="int64")
        block = 2000
        for start in range(0, count, block):
            n = min(block, count - start)
            if trigger:
                pixels, label = render_set(people, 1, start, split, trigger=trigger, target=0, count=n)
            else:
                rows = [(start + k) % IDENTITIES for k in range(n)]
                pixels, _ = render_set([people[i] for i in rows], 1, start, split)
                label = np.array(rows)
            data[start : start + n] = pixels.transpose(0, 3, 1, 2).astype(np.float64)
            labels[start : start + n] = label
    partial.rename(path)
    return path


def rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def rss_peak() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def web_idle() -> None:
    import django

    sys.path.insert(0, str(ROOT))
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.test")
    django.setup()
    import webapp.lab.services  # noqa: F401
    import webapp.lab.views.files  # noqa: F401


def check(path: Path, naive: bool) -> None:
    from defenses.data import validate_dataset
    from defenses.models import file_digest

    if naive:
        with h5py.File(path, "r") as handle:
            values = handle["data"][:]
            assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 255
        file_digest(path)
        return
    validate_dataset(path, SHAPE, IDENTITIES)
    file_digest(path)


def preview(path: Path, naive: bool) -> None:
    import io

    from PIL import Image

    from defenses.data import inspect_dataset, sample_pixels, tile

    if naive:
        with h5py.File(path, "r") as handle:
            pixels = handle["data"][:].transpose(0, 2, 3, 1)[:32].round().astype(np.uint8)
    else:
        pixels, _ = sample_pixels(inspect_dataset(path, image_shape=None), 32)
    Image.fromarray(tile(pixels)).save(io.BytesIO(), format="PNG")


def worker_run(paths: dict, epochs: int, naive: bool) -> dict:
    """A fine-prune run (T 1, LR 0.001) as a worker does it, or the naive way; returns its timings."""
    from defenses.data import inspect_dataset, load_dataset, scale_pixels
    from defenses.finetune import seed_everything
    from defenses.methods.fineprune import run_finetune
    from defenses.models import load_model
    from defenses.runner import Inputs, Loaded, load_inputs

    seed_everything(0)
    times: list[float] = []
    training: list[float] = []
    started = time.perf_counter()

    def report(position: int, metrics: dict) -> None:
        times.append(time.perf_counter() - started)
        training.extend([metrics["seconds"]] if "seconds" in metrics else [])

    if not naive:
        inputs = Inputs(MODEL, "deepid-csaw", 255.0, paths["valid"], paths["test"], {"sunglasses": paths["poisoned"]})
        loaded = load_inputs(inputs)
        loaded_at = time.perf_counter() - started
        run_finetune(loaded, {"threshold": 1.0, "lr": 0.001, "epochs": epochs, "layers": [], "seed": 0}, report)
        return {"load_s": loaded_at, "points_s": times, "training_s": training}
    import keras

    bad, report_ = load_model(MODEL, "deepid-csaw")

    def read(path):
        return load_dataset(inspect_dataset(path, report_.input_shape, report_.n_classes))

    loaded = Loaded(
        bad, report_, 255.0, read(paths["valid"]), read(paths["test"]), {"sunglasses": read(paths["poisoned"])}
    )
    loaded_at = time.perf_counter() - started
    model = keras.models.clone_model(bad)
    model.set_weights(bad.get_weights())
    model.compile(keras.optimizers.Adam(0.001), "sparse_categorical_crossentropy", metrics=["accuracy"])
    report(0, loaded.measure(model))
    inputs = scale_pixels(loaded.valid[0], 255.0)
    for epoch in range(1, epochs + 1):
        fit_started = time.perf_counter()
        model.fit(inputs, loaded.valid[1], batch_size=32, epochs=1, shuffle=True, verbose=0)
        seconds = time.perf_counter() - fit_started  # before the measurement, as ours reports it
        report(epoch, loaded.measure(model) | {"seconds": seconds})
    return {"load_s": loaded_at, "points_s": times, "training_s": training}


def child(step: str, naive: bool, paths: dict, epochs: int) -> None:
    """Runs in the child process: get to the idle state, note the size, do the step, print sizes as JSON."""
    result = {}
    if step in ("check", "preview"):
        web_idle()
        idle = rss_now()
        (check if step == "check" else preview)(paths["valid"], naive)
    else:
        import tensorflow as tf  # noqa: F401

        from defenses.models import load_model

        load_model(MODEL, "deepid-csaw")  # loaded once before the idle size, as a worker's imports would be
        idle = rss_now()
        result = worker_run(paths, epochs, naive)
    print(json.dumps({"idle": idle, "peak": rss_peak()} | result))


def measure(step: str, naive: bool, paths: dict, epochs: int) -> dict:
    command = [sys.executable, "-m", "bench.memory", "--child", step, "--epochs", str(epochs)]
    command += ["--naive"] * naive + ["--paths", json.dumps({k: str(v) for k, v in paths.items()})]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def print_study_cost(ours: dict, epochs: int) -> None:
    """What the seed report's whole study costs one worker on this machine, from this run's own timings:
    as the planner shares it, and as separate runs, one per point of each figure and table (the report's way)."""
    from defenses.methods import training_epochs
    from defenses.planner import SEED_STUDY, naive_training_epochs, plan_study

    spaces = list(SEED_STUDY.values())
    study = plan_study(spaces)
    points = ours["points_s"]
    per_epoch = (points[-1] - points[0]) / epochs
    per_run = points[0]  # load, prune, measure position 0: paid once per run
    ways = {
        "planned": (len(study.jobs), training_epochs(study)),
        "separate runs": (sum(space.size() for space in spaces), sum(map(naive_training_epochs, spaces))),
    }
    for name, (runs, trained) in ways.items():
        hours = (trained * per_epoch + runs * per_run) / 3600
        print(
            f"  the seed's whole study, one worker, {name}: {runs} runs, {trained} training epochs"
            f" x {per_epoch:.1f} s + {runs} x {per_run:.0f} s = {hours:.1f} h"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--valid", type=int, default=11547)
    parser.add_argument("--test", type=int, default=12830)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--child", choices=("check", "preview", "worker"))
    parser.add_argument("--naive", action="store_true")
    parser.add_argument("--paths")
    parser.add_argument("--steps", default="check,preview,worker", help="comma-separated: check, preview, worker")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.naive, {k: Path(v) for k, v in json.loads(args.paths).items()}, args.epochs)
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    paths = {
        "valid": write_set(CACHE / f"valid-{args.valid}.h5", args.valid, "valid"),
        "test": write_set(CACHE / f"test-{args.test}.h5", args.test, "test"),
        "poisoned": write_set(CACHE / f"sunglasses-{args.test}.h5", args.test, "poison-test", "sunglasses"),
    }
    print(
        f"sets ready in {time.perf_counter() - started:.0f} s: "
        + ", ".join(f"{name} {mib(path.stat().st_size)}" for name, path in paths.items())
    )
    print(f"{'step':<28}{'file':>10}{'idle':>11}{'ours: peak-idle':>17}{'naive: peak-idle':>18}{'naive/ours':>12}")
    for step in args.steps.split(","):
        file = "valid"
        ours, naive = measure(step, False, paths, args.epochs), measure(step, True, paths, args.epochs)
        grown = {name: run["peak"] - run["idle"] for name, run in (("ours", ours), ("naive", naive))}
        label = {"check": "upload check (web)", "preview": "dataset preview (web)", "worker": "fine-prune run (worker)"}
        print(
            f"{label[step]:<28}{mib(paths[file].stat().st_size):>10}{mib(ours['idle']):>11}"
            f"{mib(grown['ours']):>17}{mib(grown['naive']):>18}{grown['naive'] / max(grown['ours'], 1):>12.2f}"
        )
        if step == "worker":
            for name, run in (("ours", ours), ("naive", naive)):
                points = run["points_s"]
                epochs = [b - a for a, b in zip(points, points[1:], strict=False)]
                print(
                    f"  {name}: peak {mib(run['peak'])} in all; sets loaded in {run['load_s']:.0f} s, pruned point "
                    f"measured at {points[0] - run['load_s']:.0f} s, then per epoch (fine-tune {args.valid} images "
                    f"+ measure {2 * args.test}): "
                    + ", ".join(f"{s:.0f} s" for s in epochs)
                    + " (training alone: "
                    + ", ".join(f"{s:.1f} s" for s in run["training_s"])
                    + ")"
                )
            print_study_cost(ours, args.epochs)


if __name__ == "__main__":
    main()
