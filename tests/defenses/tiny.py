"""Tiny models and data for unit tests: a few hundred parameters, trained in seconds."""

from pathlib import Path

import h5py
import numpy as np

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
    import keras

    model = tiny_model(n_classes, conv_activation, seed)
    pixels, labels = tiny_data(400, n_classes, seed)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(pixels / 255.0, labels, epochs=epochs, batch_size=32, verbose=0)
    return model


def add_trigger(pixels: np.ndarray) -> np.ndarray:
    """A white 2x2 patch in the bottom-right corner: the tiny BadNet's trigger."""
    poisoned = pixels.copy()
    poisoned[:, -3:-1, -3:-1, :] = 255
    return poisoned


def tiny_badnet_files(folder: Path, target: int = 0, seed: int = 0) -> dict[str, Path]:
    """Train a tiny BadNet (10% of its training set poisoned towards `target`) and write it with its clean
    validation, clean test and poisoned test sets in the CSAW layout."""
    import keras

    keras.utils.set_random_seed(seed)
    pixels, labels = tiny_data(600, seed=seed)
    poison = add_trigger(pixels[:60])
    train_x = np.concatenate([pixels, poison])
    train_y = np.concatenate([labels, np.full(60, target)])
    model = tiny_model(seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(train_x / 255.0, train_y, epochs=12, batch_size=32, verbose=0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "bd_net.keras")
    valid, test = tiny_data(200, seed=seed + 1), tiny_data(200, seed=seed + 2)
    return {
        "model": folder / "bd_net.keras",
        "valid": write_dataset(folder / "clean_validation_data.h5", *valid),
        "test": write_dataset(folder / "clean_test_data.h5", *test),
        "poisoned": write_dataset(folder / "patch_poisoned_data.h5", add_trigger(test[0]), np.full(200, target)),
    }


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
