"""Tiny models and data for unit tests: a few hundred parameters, trained in seconds, and trained once: the
trained networks are kept on disk under a hash of this file (tests/cache.py)."""

from pathlib import Path

import h5py
import numpy as np

from tests.cache import cached_folder, copy_into

THIS = [Path(__file__)]

SHAPE = (12, 10, 3)


def tiny_model(n_classes: int = 4, conv_activation: str = "relu", seed: int = 0):
    """Two conv layers, a pool and a softmax head: the smallest network with the shape of a CSAW BadNet."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=SHAPE, name="input")
    x = layers.Conv2D(6, 3, activation=conv_activation, name="conv_a")(inputs)
    x = layers.MaxPooling2D(2, name="pool_a")(x)
    x = layers.Conv2D(8, 2, activation=conv_activation, name="conv_b")(x)
    x = layers.Flatten(name="flat")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs)


def tiny_data(count: int, n_classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each class is a colour blob at its own place plus noise, so a tiny network can learn it."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, count)
    pixels = rng.uniform(0, 60, (count, *SHAPE)).astype(np.float32)
    for i, label in enumerate(labels):
        row, col = 1 + 2 * (label % 4), 1 + 2 * (label // 4)
        pixels[i, row : row + 3, col : col + 4, label % 3] = 230
    return pixels, labels


def write_dataset(path: Path, pixels: np.ndarray, labels: np.ndarray, channels_first: bool = True) -> Path:
    """A CSAW-layout HDF5 file: data (N, 3, H, W) as published, or channels-last."""
    with h5py.File(path, "w") as handle:
        handle["data"] = pixels.transpose(0, 3, 1, 2) if channels_first else pixels
        handle["label"] = labels
    return path


def trained_tiny_model(n_classes: int = 4, epochs: int = 8, conv_activation: str = "relu", seed: int = 0):
    """tiny_model trained on tiny_data (a fresh copy each call: a test may prune or train it)."""
    import keras

    def train(folder: Path) -> None:
        model = tiny_model(n_classes, conv_activation, seed)
        pixels, labels = tiny_data(400, n_classes, seed)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
        model.fit(pixels / 255.0, labels, epochs=epochs, batch_size=32, verbose=0)
        model.save(folder / "model.keras")

    arguments = {"n_classes": n_classes, "epochs": epochs, "activation": conv_activation, "seed": seed}
    return keras.models.load_model(cached_folder("tiny-model", THIS, arguments, train) / "model.keras")


def add_trigger(pixels: np.ndarray) -> np.ndarray:
    """A white 2x2 patch in the bottom-right corner: the tiny BadNet's trigger."""
    poisoned = pixels.copy()
    poisoned[:, -3:-1, -3:-1, :] = 255
    return poisoned


def tiny_badnet_files(folder: Path, target: int = 0, seed: int = 0) -> dict[str, Path]:
    """A tiny BadNet (10% of its training set poisoned towards `target`) with its clean validation, clean test
    and poisoned test sets in the CSAW layout, copied into `folder` (trained once, then kept)."""
    kept = cached_folder(
        "tiny-badnet", THIS, {"target": target, "seed": seed}, lambda out: write_tiny_badnet(out, target, seed)
    )
    copy_into(kept, folder)
    return {role: folder / name for role, name in TINY_BADNET_FILES.items()}


TINY_BADNET_FILES = {
    "model": "bd_net.keras",
    "valid": "clean_validation_data.h5",
    "test": "clean_test_data.h5",
    "poisoned": "patch_poisoned_data.h5",
}


def write_tiny_badnet(folder: Path, target: int, seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)
    pixels, labels = tiny_data(600, seed=seed)
    poison = add_trigger(pixels[:60])
    train_x = np.concatenate([pixels, poison])
    train_y = np.concatenate([labels, np.full(60, target)])
    model = tiny_model(seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(train_x / 255.0, train_y, epochs=12, batch_size=32, verbose=0)
    files = {role: folder / name for role, name in TINY_BADNET_FILES.items()}
    model.save(files["model"])
    valid, test = tiny_data(200, seed=seed + 1), tiny_data(200, seed=seed + 2)
    write_dataset(files["valid"], *valid)
    write_dataset(files["test"], *test)
    write_dataset(files["poisoned"], add_trigger(test[0]), np.full(200, target))


def png_declaring(width: int, height: int) -> bytes:
    """A one-pixel PNG whose header declares width x height: a decompression bomb's shape."""
    import io
    import zlib

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    png = buffer.getvalue()
    header = png[12:16] + width.to_bytes(4, "big") + height.to_bytes(4, "big") + png[24:29]  # IHDR
    return png[:12] + header + zlib.crc32(header).to_bytes(4, "big") + png[33:]


def palette_data(count: int, n_classes: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each class is a flat colour of a 3 x 3 x 3 palette (40, 140 or 240 per channel) plus noise: a class can
    only be reached by repainting most of the image, so the clean labels' reversed triggers are large."""
    import itertools

    rng = np.random.default_rng(seed)
    colours = np.array(list(itertools.product([40, 140, 240], repeat=3))[:n_classes], dtype=np.float32)
    labels = rng.integers(0, n_classes, count)
    pixels = colours[labels][:, None, None, :] + rng.normal(0, 25, (count, *SHAPE))
    return np.clip(pixels, 0, 255).astype(np.float32), labels


def palette_badnet(n_classes: int = 24, target: int = 0, seed: int = 0):
    """A small conv network trained on palette_data with 15 % of its training set stamped with the white 2x2
    patch (add_trigger) and relabelled `target`: CA and ASR about 100 %, in about 6 s (once: then kept). Returns
    the model and a clean validation set."""
    import keras

    arguments = {"n_classes": n_classes, "target": target, "seed": seed}
    kept = cached_folder(
        "palette-badnet", THIS, arguments, lambda out: train_palette_badnet(out, n_classes, target, seed)
    )
    return keras.models.load_model(kept / "bd_net.keras"), palette_data(20 * n_classes, n_classes, seed + 10)


def train_palette_badnet(folder: Path, n_classes: int, target: int, seed: int) -> None:
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    pixels, labels = palette_data(100 * n_classes, n_classes, seed)
    poisoned = len(pixels) * 15 // 100
    train_x = np.concatenate([pixels, add_trigger(pixels[:poisoned])])
    train_y = np.concatenate([labels, np.full(poisoned, target)])
    inputs = keras.Input(shape=SHAPE, name="input")
    x = layers.Conv2D(8, 3, activation="relu", name="conv_a")(inputs)
    x = layers.MaxPooling2D(2, name="pool_a")(x)
    x = layers.Conv2D(16, 3, activation="relu", name="conv_b")(x)
    x = layers.Flatten(name="flat")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="output")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss="sparse_categorical_crossentropy")
    model.fit(train_x / 255.0, train_y, epochs=20, batch_size=32, verbose=0)
    model.save(folder / "bd_net.keras")


def tiny_preset(out: Path) -> Path:
    """The synthetic `tiny` preset as `python -m defenses synth --preset tiny` writes it (its four BadNets, the
    clean network, the sets, synth.json), copied into `out`: built once (about 90 s) under a hash of the code
    that makes it. Each network is seeded alone, so it is the same network whichever others are built."""
    from defenses import data, export, models, synthetic

    sources = [Path(module.__file__) for module in (synthetic, models, export, data)]
    kept = cached_folder("tiny-preset", sources, {}, lambda folder: synthetic.build_benchmark("tiny", folder))
    return copy_into(kept, out)
