"""Datasets in the CSAW-HackML-2020 HDF5 layout, images, and the one input-scaling rule.

A dataset file holds `data` (N, 3, H, W) channels-first as published, or (N, H, W, 3), pixel values 0..255
as float or uint8, and `label` (N,) integers. Everything here returns channels-last float32 pixels 0..255;
`scale_pixels` is the only place where pixels become network inputs.
"""

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import h5py
import numpy as np

from defenses.hdf5check import HDF5Refused, check_structure

IMAGE_SHAPE = (55, 47, 3)  # height, width, channels of a CSAW-HackML-2020 face crop
DEFAULT_BATCH = 1024
MAX_IMAGE_PIXELS = 1024 * 1024  # set for 55x47 face crops (400x their area), far below Pillow's 89 MP bomb default
IMAGE_FORMATS = ("PNG", "JPEG")


class DataError(ValueError):
    """A dataset or image a user gave cannot be used; the message says what is wrong and what to do."""


# What h5py raises on a damaged file (heap, B-tree, attribute or name bytes), rather than one error class;
# found by fuzzing (tests/fuzz).
HDF5_DAMAGE = (OSError, KeyError, RuntimeError, ValueError, TypeError, UnicodeDecodeError, OverflowError)


@contextmanager
def reading(path: Path):
    """Turn h5py's errors on a damaged file into a DataError naming it."""
    try:
        yield
    except DataError:
        raise
    except HDF5_DAMAGE as error:
        raise DataError(
            f"{path.name} is a damaged HDF5 file ({type(error).__name__}: {error}); export it again."
        ) from None


@dataclass(frozen=True)
class DatasetInfo:
    path: Path
    count: int
    image_shape: tuple[int, int, int]  # height, width, channels
    channels_first: bool
    labels: np.ndarray
    band_rows: int = 0  # images per chunk along the first axis (0: not chunked); reads go band by band


def scale_pixels(pixels: np.ndarray, divisor: float) -> np.ndarray:
    """Network input from 0..255 pixels: divide by 255 for models trained on 0..1, by 1 for raw models.

    The single scaling rule of Prunelab: upload checks, training, the image form and the exported eval.py
    all call this function, so a PNG and a JPEG of one picture reach the network identically.
    """
    return np.asarray(pixels, dtype=np.float32) / np.float32(divisor)


def _layout(shape: tuple[int, ...], path: Path) -> tuple[bool, tuple[int, int, int]]:
    if len(shape) != 4:
        raise DataError(f"{path.name}: 'data' has shape {shape}; expected 4 dimensions (N, 3, H, W) or (N, H, W, 3).")
    if shape[3] == 3:
        return False, (shape[1], shape[2], 3)
    if shape[1] == 3:
        return True, (shape[2], shape[3], 3)
    raise DataError(f"{path.name}: 'data' has shape {shape}; neither axis 1 nor axis 3 holds the 3 colour channels.")


@dataclass(frozen=True)
class DatasetLimits:
    """Caps on a dataset file, checked from its metadata before any value is read. The defaults admit the
    published CSAW-HackML-2020 sets (12830 images of 55x47, 0.8 GB as float64) many times over."""

    max_images: int = 200_000
    max_image_pixels: int = 256 * 256  # height x width of one image
    # The pixels' declared size: what checking the set costs to read and decompress (about 3 s a GB).
    max_bytes: int = 4 * 2**30

    @property
    def max_elements(self) -> int:
        return self.max_images * self.max_image_pixels * 3


# A dataset file is two arrays: far fewer objects than a model, and images compress less than 10:1
# (measured: synthetic faces as float64 with shuffle and gzip 9, 7.5:1), so 100:1 is no image data.
DATASET_MAX_OBJECTS = 64
DATASET_MAX_EXPANSION = 100
# Reading any image decompresses the whole band of chunks that holds it: a band (the chunk's extent along the
# first axis, times the rest of each image) must fit in this much memory as float32. h5py's default chunks
# for CSAW sets make bands of 25 MB (float64, 802 images) and 45 MB (uint8, 1444 images).
MAX_BAND_BYTES = 64 * 2**20


def inspect_dataset(
    path: str | Path,
    image_shape: tuple[int, int, int] | None = IMAGE_SHAPE,
    n_classes: int | None = None,
    limits: DatasetLimits = DatasetLimits(),
) -> DatasetInfo:
    """Validate a dataset file's structure and labels without reading its pixels.

    The file passes the HDF5 door first (`hdf5check`: no links, external storage or virtual datasets, no
    shape bombs), so no byte outside the file is ever read. Raises DataError naming the file and the problem:
    not HDF5, unsafe structure, missing keys, wrong rank or image size, too many or too large images, empty,
    label count mismatch, non-integer labels or labels outside 0..n_classes-1.
    """
    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise DataError(f"{path.name} is not a readable HDF5 file ({error}). Upload the .h5 dataset file.") from None
    with handle, reading(path):
        try:
            facts = check_structure(
                handle, path.name, path.stat().st_size, limits.max_elements, DATASET_MAX_OBJECTS, DATASET_MAX_EXPANSION
            )
        except HDF5Refused as refusal:
            raise DataError(str(refusal)) from None
        missing = [key for key in ("data", "label") if f"/{key}" not in facts]
        if missing:
            raise DataError(
                f"{path.name} has no dataset {' or '.join(map(repr, missing))}; a CSAW dataset has "
                f"'data' (N, 3, 55, 47) and 'label' (N,). Keys found: {sorted(handle.keys())}."
            )
        data, label = handle["data"], handle["label"]
        channels_first, shape = _layout(data.shape, path)
        count = data.shape[0]
        _check_size(count, shape, image_shape, limits, path)
        if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
            raise DataError(f"{path.name}: 'data' has type {data.dtype}; expected uint8 or float pixels.")
        if facts["/data"].declared_bytes > limits.max_bytes:
            raise DataError(
                f"{path.name}: 'data' declares {facts['/data'].declared_bytes / 2**30:.1f} GiB of pixels; "
                f"the cap is {limits.max_bytes / 2**30:.1f} GiB. Store the pixels as uint8, split the "
                "set, or ask an operator to raise PRUNELAB_MAX_DATASET_BYTES."
            )
        band_rows = _band_rows(data, shape, path)
        labels = _read_labels(label, count, path)
    if labels.min() < 0:
        raise DataError(f"{path.name}: label {labels.min()} is negative; labels are class numbers 0..N-1.")
    if n_classes is not None and labels.max() >= n_classes:
        raise DataError(
            f"{path.name}: labels range {labels.min()}..{labels.max()}, outside the model's classes 0..{n_classes - 1}."
        )
    return DatasetInfo(
        path=path, count=count, image_shape=shape, channels_first=channels_first, labels=labels, band_rows=band_rows
    )


def _band_rows(data: h5py.Dataset, shape: tuple[int, int, int], path: Path) -> int:
    """Images per band of chunks (0 when not chunked); a band over MAX_BAND_BYTES is refused: reading any
    image of it would cost the whole band, and a file chunked (N, 1, 1, 1) would make every read the whole set."""
    if data.chunks is None:
        return 0
    rows = int(data.chunks[0])
    band = rows * math.prod(shape) * 4
    if band > MAX_BAND_BYTES:
        most = MAX_BAND_BYTES // (math.prod(shape) * 4)
        raise DataError(
            f"{path.name}: 'data' is chunked {data.chunks}: every read would decompress {rows:,} "
            f"images at once ({band / 2**20:.0f} MiB). Save it again with h5py's default chunks, or "
            f"chunks of at most {most:,} images along the first axis."
        )
    return rows


def _check_size(count: int, shape: tuple[int, int, int], image_shape, limits: DatasetLimits, path: Path) -> None:
    if count == 0:
        raise DataError(f"{path.name} holds no images.")
    if count > limits.max_images:
        raise DataError(
            f"{path.name} holds {count:,} images; the cap is {limits.max_images:,}. Split the set, or "
            "ask an operator to raise PRUNELAB_MAX_DATASET_IMAGES."
        )
    if shape[0] * shape[1] > limits.max_image_pixels:
        raise DataError(
            f"{path.name}: images are {shape[0]}x{shape[1]}; images over {limits.max_image_pixels:,} "
            "pixels are refused."
        )
    if image_shape is not None and shape != tuple(image_shape):
        raise DataError(
            f"{path.name}: images are {shape[0]}x{shape[1]}x{shape[2]}; "
            f"the model expects {image_shape[0]}x{image_shape[1]}x{image_shape[2]}."
        )


def _read_labels(label: h5py.Dataset, count: int, path: Path) -> np.ndarray:
    if label.shape not in ((count,), (count, 1)):
        raise DataError(f"{path.name}: 'label' has shape {label.shape}; expected ({count},), one per image.")
    values = np.asarray(label[()]).reshape(-1)
    if np.issubdtype(values.dtype, np.floating):
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise DataError(f"{path.name}: 'label' holds non-integer values; labels are class numbers.")
    elif not np.issubdtype(values.dtype, np.integer):
        raise DataError(f"{path.name}: 'label' has type {values.dtype}; labels are class numbers.")
    return values.astype(np.int64)


def iter_batches(info: DatasetInfo, batch_size: int = DEFAULT_BATCH) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (pixels NHWC float32 0..255, labels) batches, reading the file slice by slice (bounded memory).
    Slices follow the file's bands of chunks (a whole number of them, at least one), so that every chunk is
    decompressed once.

    Raises DataError on NaN, infinite or out-of-range pixels, naming the first bad row.
    """
    if info.band_rows:
        batch_size = max(1, batch_size // info.band_rows) * info.band_rows
    with reading(info.path), h5py.File(info.path, "r") as handle:
        data = handle["data"]
        for start in range(0, info.count, batch_size):
            batch = np.asarray(data[start : start + batch_size], dtype=np.float32)
            if info.channels_first:
                batch = batch.transpose(0, 2, 3, 1)
            _check_pixels(batch, start, info.path)
            yield np.ascontiguousarray(batch), info.labels[start : start + batch_size]


def _check_pixels(batch: np.ndarray, start: int, path: Path) -> None:
    bad = ~np.isfinite(batch) | (batch < 0) | (batch > 255)
    if bad.any():
        row = start + int(np.argwhere(bad.reshape(len(batch), -1).any(axis=1))[0][0])
        raise DataError(f"{path.name}: image {row} has pixel values that are NaN, infinite or outside 0..255.")


SCAN_BYTES = 4 * 2**20  # what one block of the upload scan of an unchunked set reads from the file


def validate_dataset(
    path: str | Path,
    image_shape: tuple[int, int, int] | None = None,
    n_classes: int | None = None,
    limits: DatasetLimits = DatasetLimits(),
) -> DatasetInfo:
    """`inspect_dataset`, then every pixel read once and checked (finite, 0..255), so a bad set is refused at
    the door rather than in a run. Memory stays at a few MB whatever the file's size: a chunked set is read one
    chunk at a time (chunks are at most MAX_CHUNK_BYTES, h5py's own at most 1 MiB), an unchunked one in blocks
    of about SCAN_BYTES; every stored byte is decompressed once."""
    info = inspect_dataset(path, image_shape, n_classes, limits)
    with reading(info.path), h5py.File(info.path, "r") as handle:
        data = handle["data"]
        for block in _scan_blocks(data, info):
            values = np.asarray(data[block])
            bad = ~np.isfinite(values) | (values < 0) | (values > 255)
            if bad.any():
                row = block[0].start + int(np.argwhere(bad)[0][0])
                raise DataError(
                    f"{info.path.name}: image {row} has pixel values that are NaN, infinite or outside 0..255."
                )
    return info


def _scan_blocks(data: h5py.Dataset, info: DatasetInfo) -> Iterator[tuple[slice, ...]]:
    """The selections that read `data` once: its chunks, or row blocks of about SCAN_BYTES."""
    if data.chunks is not None:
        yield from data.iter_chunks()
        return
    rows = max(1, SCAN_BYTES // (math.prod(info.image_shape) * data.dtype.itemsize))
    for start in range(0, info.count, rows):
        yield (slice(start, min(start + rows, info.count)),)


def load_dataset(
    info: DatasetInfo, batch_size: int = DEFAULT_BATCH, compact: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The whole set in memory as (pixels NHWC 0..255, labels), for sets a job reads many times (fine-tuning
    on the clean validation set, measuring every epoch on the test sets). Pixels are float32; with `compact`,
    a set whose pixels are all whole numbers (the published CSAW float64 files are) is held as uint8, a
    quarter of the memory, for sets that are scaled batch by batch (defenses.metrics, defenses.finetune)."""
    pixels = np.empty((info.count, *info.image_shape), dtype=np.uint8 if compact else np.float32)
    start = 0
    for batch, _ in iter_batches(info, batch_size):  # its batches follow the file's chunks, not batch_size
        if pixels.dtype == np.uint8 and not np.array_equal(batch, np.round(batch)):
            pixels = pixels.astype(np.float32)  # fractional pixels: keep them exact
        pixels[start : start + len(batch)] = batch
        start += len(batch)
    return pixels, info.labels.copy()


@dataclass(frozen=True)
class LoadedImage:
    pixels: np.ndarray  # height x width x 3, float32 0..255
    note: str  # what was done to fit the model ("" when nothing)


def load_image(source: str | Path | BinaryIO, size: tuple[int, int] = IMAGE_SHAPE[:2]) -> LoadedImage:
    """A PNG or JPEG as RGB pixels of `size` (height, width), resized when needed (the note says so).

    Only the PNG and JPEG decoders are tried; images over MAX_IMAGE_PIXELS are refused before decoding.
    """
    from PIL import Image, UnidentifiedImageError

    name = str(source) if isinstance(source, str | Path) else getattr(source, "name", "the uploaded image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source, formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise DataError(f"{Path(name).name} is not a PNG or JPEG image. Use a .png or .jpg file.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{Path(name).name} declares an enormous size (a decompression bomb); refused.") from None
    except (OSError, SyntaxError, ValueError) as error:  # a broken header: Pillow's decoders raise all three
        raise DataError(f"{Path(name).name} could not be read ({error}); is the file complete?") from None
    with image:
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise DataError(
                f"{Path(name).name} declares {image.width}x{image.height} pixels; "
                f"images over {MAX_IMAGE_PIXELS:,} pixels are refused. Upload the face crop itself."
            )
        notes = []
        try:
            if getattr(image, "n_frames", 1) > 1:
                notes.append("animated image: first frame used")
            rgb = image.convert("RGB")
        except (OSError, SyntaxError, ValueError) as error:  # a broken chunk in the pixels: "broken PNG file"
            raise DataError(f"{Path(name).name} could not be decoded ({error}); is the file complete?") from None
    height, width = size
    if rgb.size != (width, height):
        notes.append(f"resized from {rgb.width}x{rgb.height} to {width}x{height}")
        rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
    return LoadedImage(pixels=np.asarray(rgb, dtype=np.float32), note="; ".join(notes))


def sample_pixels(info: DatasetInfo, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` images (uint8 NHWC) and labels, read without loading the rest of the file."""
    with reading(info.path), h5py.File(info.path, "r") as handle:
        batch = np.asarray(handle["data"][:count], dtype=np.float32)
    batch = batch.transpose(0, 2, 3, 1) if info.channels_first else batch
    _check_pixels(batch, 0, info.path)
    return np.ascontiguousarray(batch.round().astype(np.uint8)), info.labels[:count].copy()


def tile(pixels: np.ndarray, columns: int = 8, gap: int = 2) -> np.ndarray:
    """Images (N, H, W, 3) uint8 laid out in a grid with white gaps: a dataset's preview."""
    count, height, width, _ = pixels.shape
    rows = max(1, -(-count // columns))
    grid = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, np.uint8)
    for index, image in enumerate(pixels):
        top, left = (index // columns) * (height + gap), (index % columns) * (width + gap)
        grid[top : top + height, left : left + width] = image
    return grid


DEFAULT_HOLDOUT = 0.2  # share of the clean validation set kept from every repair step, for selection alone


def holdout_split(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a clean validation set's rows into (the rows a repair may use, the held-out rows that only
    selection reads), deterministically from `seed`, stratified by label as far as the counts allow: each
    label gives the whole part of share x its count, and the rows still owed to reach round(share x N) are
    taken from the labels with the largest remainders (ties drawn at random). Both parts are sorted indices;
    neither is empty when the set has two rows or more."""
    labels = np.asarray(labels)
    if not 0.0 < share < 1.0:
        raise ValueError(f"the held-out share must be between 0 and 1, got {share}")
    if len(labels) < 2:
        raise ValueError(
            f"a clean validation set of {len(labels)} image(s) cannot be split: held-out selection needs one image "
            "to repair with and one to choose on"
        )
    rng = np.random.default_rng([seed, 0x401D])
    classes, inverse = np.unique(labels, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(classes))
    wanted = min(max(int(round(share * len(labels))), 1), len(labels) - 1)
    exact = share * counts
    taken = np.floor(exact).astype(int)
    owed = wanted - int(taken.sum())
    if owed > 0:  # largest remainders first, ties in a random order
        order = np.lexsort((rng.random(len(classes)), -(exact - taken)))
        taken[order[:owed]] += 1
    held = [rng.permutation(np.flatnonzero(inverse == c))[:n] for c, n in enumerate(taken)]
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=int)
    return np.setdiff1d(np.arange(len(labels)), held_out), held_out
