"""Shared set-up for benchmarks: the real sunglasses BadNet and a CSAW-sized set made from the real crops."""

import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures" / "csaw"


def real_badnet():
    from defenses.models import load_model

    return load_model(FIXTURES / "models" / "sunglasses_bd_weights.h5", "deepid-csaw")[0]


def jittered_crops(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` images from the 8 real face crops with brightness, shift and noise jitter, labelled with the
    BadNet's own answers on the unjittered crops (only the timing and the equality of results matter)."""
    from defenses.data import load_image

    paths = sorted((FIXTURES / "images").glob("*.png"))
    crops = np.stack([load_image(path).pixels for path in paths])
    labels = np.array([int(path.stem.split("=")[1]) for path in paths])
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(crops), count)
    images = np.roll(crops[pick], rng.integers(-2, 3), axis=2) * rng.uniform(0.8, 1.2, (count, 1, 1, 1))
    images = np.clip(images + rng.normal(0, 6, images.shape), 0, 255).astype(np.float32)
    return images, labels[pick]


@contextmanager
def timed(results: dict, name: str):
    start = time.perf_counter()
    yield
    results[name] = time.perf_counter() - start
