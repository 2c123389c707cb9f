"""Hostile HDF5 files, built by the tests themselves: each one would, if its values were read, show bytes of
another file on the server (a "secret") or allocate far more memory than the file holds."""

from pathlib import Path

import h5py
import numpy as np

SECRET = b"PRUNELAB-SECRET-" + bytes(range(65, 91)) * 40  # what an attacker wants to read back


def secret_file(folder: Path) -> Path:
    path = folder / "secret_key"
    path.write_bytes(SECRET)
    return path


def plain_arrays(count: int = 8, side: tuple[int, int] = (55, 47)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, 3, *side), dtype=np.uint8), np.arange(count) % 4


def external_storage(path: Path, secret: Path) -> Path:
    """'label' lives in HDF5 external raw storage: its values are the secret file's bytes."""
    pixels, _ = plain_arrays(len(SECRET))
    with h5py.File(path, "w") as h5:
        h5["data"] = pixels
        h5.create_dataset("label", shape=(len(SECRET),), dtype="uint8", external=[(str(secret), 0, len(SECRET))])
    return path


def external_link(path: Path, secret_h5: Path) -> Path:
    """'data' is an external link into another HDF5 file on the server."""
    _, labels = plain_arrays()
    with h5py.File(path, "w") as h5:
        h5["data"] = h5py.ExternalLink(str(secret_h5), "/data")
        h5["label"] = labels
    return path


def soft_link(path: Path) -> Path:
    """'data' is a soft link to an array stored elsewhere in the file."""
    pixels, labels = plain_arrays()
    with h5py.File(path, "w") as h5:
        h5["hidden/pixels"] = pixels
        h5["data"] = h5py.SoftLink("/hidden/pixels")
        h5["label"] = labels
    return path


def virtual_dataset(path: Path, secret_h5: Path) -> Path:
    """'data' is a virtual dataset mapping another HDF5 file's array."""
    pixels, labels = plain_arrays()
    layout = h5py.VirtualLayout(shape=pixels.shape, dtype=pixels.dtype)
    layout[:] = h5py.VirtualSource(str(secret_h5), "data", shape=pixels.shape)
    with h5py.File(path, "w") as h5:
        h5.create_virtual_dataset("data", layout)
        h5["label"] = labels
    return path


def shape_bomb(path: Path, images: int = 10**9) -> Path:
    """A few kilobytes declaring `images` face crops: nothing is written, so every read is fill values."""
    with h5py.File(path, "w") as h5:
        h5.create_dataset("data", shape=(images, 3, 55, 47), dtype="float64", chunks=(1, 3, 55, 47), compression="gzip")
        h5.create_dataset("label", shape=(images,), dtype="int64", chunks=(4096,), compression="gzip")
    return path


def with_pixels(path: Path, row: int, value: float) -> Path:
    """A good set but for one pixel of image `row` (NaN, infinite, negative or over 255)."""
    pixels, labels = plain_arrays()
    pixels = pixels.astype(np.float32)
    pixels[row, 1, 10, 10] = value
    with h5py.File(path, "w") as h5:
        h5["data"] = pixels
        h5["label"] = labels
    return path


def plain_dataset(path: Path, count: int = 8, labels=None, side: tuple[int, int] = (55, 47)) -> Path:
    pixels, default_labels = plain_arrays(count, side)
    with h5py.File(path, "w") as h5:
        h5["data"] = pixels
        h5["label"] = default_labels if labels is None else np.asarray(labels)
    return path


def chunk_bomb(path: Path, images: int = 3000) -> Path:
    """A real file (pixels 0 or 1: a few MB, compressing like images do) chunked (N, 1, 1, 1): each chunk
    holds one pixel of every image, so reading any image decompresses the whole set. Such a file once made
    the upload scan hold 2.4 GB."""
    pixels = np.random.default_rng(0).integers(0, 2, (images, 3, 55, 47), dtype=np.uint8)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("data", data=pixels, chunks=(images, 1, 1, 1), compression="gzip")
        h5["label"] = np.zeros(images, np.int64)
    return path


def compression_bomb(path: Path, images: int = 2000) -> Path:
    """Written zeros under gzip: about 1000:1, a file of KBs declaring far more pixels to decompress (CPU,
    not memory); at the caps, 200,000 such images were 12.4 GB to inflate from 13.7 MB."""
    with h5py.File(path, "w") as h5:
        h5.create_dataset("data", data=np.zeros((images, 3, 55, 47)), compression="gzip")
        h5["label"] = np.zeros(images, np.int64)
    return path


def many_objects(path: Path, count: int = 500) -> Path:
    """A good set plus hundreds of tiny arrays: every look at the file walks them all."""
    plain_dataset(path)
    with h5py.File(path, "a") as h5:
        for number in range(count):
            h5[f"extra/{number}"] = np.zeros(1)
    return path


def default_chunked(path: Path, count: int = 2000) -> Path:
    """A legitimate set as h5py writes it with gzip and its own chunk guess (bands of hundreds of images,
    a few pixels wide), float64 as CSAW published them."""
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as h5:
        pixels = rng.integers(0, 256, (count, 3, 55, 47)).astype(np.float64)
        h5.create_dataset("data", data=pixels, compression="gzip")
        h5["label"] = np.arange(count) % 10
    return path
