"""Fuzzing the readers of untrusted input with hypothesis: random and mutated images, dataset files and model
files. Every case ends in a clear refusal (DataError / ModelRefused, naming the file) or a correct result
(right shape, pixels in 0..255, labels that are class numbers): never another exception."""

import contextlib
import io
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from defenses.data import DataError, inspect_dataset, load_dataset, load_image
from defenses.modelcheck import ModelRefused, check_model_file
from tests.conftest import FIXTURES
from tests.defenses.tiny import tiny_data, write_dataset

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def encoded(mode: str, size: tuple[int, int], fmt: str, **options) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


SEEDS = [
    encoded("RGB", (47, 55), "PNG"),
    encoded("RGB", (47, 55), "JPEG"),
    encoded("L", (30, 20), "PNG"),
    encoded("CMYK", (47, 55), "JPEG"),
    encoded("P", (47, 55), "PNG"),
    encoded("RGBA", (60, 60), "PNG"),
]


def mutated(seed: bytes, data) -> bytes:
    """A seed file with bytes flipped, a chunk cut out, or truncated: what a broken upload looks like."""
    raw = bytearray(seed)
    for _ in range(data.draw(st.integers(0, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    start = data.draw(st.integers(0, len(raw)))
    cut = data.draw(st.integers(0, max(0, len(raw) - start)))
    return bytes(raw[:start] + raw[start + cut :])


def assert_face_crop(image) -> None:
    assert image.pixels.shape == (55, 47, 3) and image.pixels.dtype == np.float32
    assert image.pixels.min() >= 0 and image.pixels.max() <= 255


@FUZZ
@given(data=st.data(), seed=st.sampled_from(range(len(SEEDS))))
def test_mutated_images_are_read_or_refused(data, seed):
    try:
        assert_face_crop(load_image(io.BytesIO(mutated(SEEDS[seed], data)), (55, 47)))
    except DataError as refusal:
        assert str(refusal).startswith("the uploaded image ")  # a BytesIO has no name: the message says so


@FUZZ
@given(raw=st.binary(max_size=4096))
def test_random_bytes_are_refused_as_images(raw):
    with contextlib.suppress(DataError):  # random bytes are almost never an image; when they are, a valid one
        assert_face_crop(load_image(io.BytesIO(raw), (55, 47)))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "1"])
def test_every_pillow_mode_becomes_a_face_crop(mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    array = np.linspace(0, 65535 if mode == "I;16" else 255, 55 * 47).reshape(55, 47)
    if mode == "I;16":  # a 16-bit greyscale PNG
        image = Image.fromarray(array.astype(np.uint16))
        assert image.mode == mode
    else:
        image = Image.fromarray(array.astype(np.uint8), "L").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    buffer.seek(0)
    assert_face_crop(load_image(buffer, (55, 47)))


def test_an_animated_png_uses_its_first_frame_and_says_so():
    frames = [Image.new("RGB", (47, 55), colour) for colour in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "PNG", save_all=True, append_images=frames[1:])
    buffer.seek(0)
    image = load_image(buffer, (55, 47))
    assert image.note == "animated image: first frame used" and tuple(image.pixels[0, 0]) == (255, 0, 0)


def test_a_png_html_polyglot_is_decoded_as_pixels_only():
    polyglot = encoded("RGB", (47, 55), "PNG") + b"<html><script>alert(document.cookie)</script></html>"
    assert_face_crop(load_image(io.BytesIO(polyglot), (55, 47)))  # trailing bytes never reach a page


dataset_arrays = st.fixed_dictionaries(
    {
        "shape": st.sampled_from(
            [(4, 3, 12, 10), (4, 12, 10, 3), (4, 12, 10), (0, 3, 12, 10), (4, 5, 12, 10), (2, 3, 55, 47)]
        ),
        "dtype": st.sampled_from(["uint8", "float32", "float64", "int16", "bool"]),
        "fill": st.sampled_from([0.0, 255.0, -1.0, 300.0, float("nan"), float("inf")]),
        "labels": st.lists(st.integers(-3, 2000), min_size=0, max_size=6),
        "label_dtype": st.sampled_from(["int64", "float32", "uint8"]),
        "keys": st.sampled_from([("data", "label"), ("data",), ("label",), ("x", "y")]),
    }
)


@FUZZ
@given(spec=dataset_arrays)
def test_generated_dataset_files_are_read_or_refused(spec, tmp_path):
    path = tmp_path / "set.h5"
    with h5py.File(path, "w") as handle:
        if "data" in spec["keys"]:
            with np.errstate(invalid="ignore"):
                handle["data"] = np.full(spec["shape"], spec["fill"]).astype(spec["dtype"])
        if "label" in spec["keys"]:
            handle["label"] = np.array(spec["labels"]).astype(spec["label_dtype"])
    try:
        info = inspect_dataset(path, image_shape=None, n_classes=1283)
        pixels, labels = load_dataset(info)
    except DataError as refusal:
        assert "set.h5" in str(refusal)
        return
    assert pixels.shape[0] == labels.shape[0] > 0 and pixels.shape[-1] == 3
    assert np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 255
    assert labels.min() >= 0 and labels.max() < 1283


@pytest.fixture(scope="module")
def dataset_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        return write_dataset(Path(folder) / "seed.h5", *tiny_data(6)).read_bytes()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_dataset_files_are_read_or_refused(data, dataset_bytes, tmp_path):
    path = tmp_path / "mutated.h5"
    path.write_bytes(mutated(dataset_bytes, data))
    try:
        pixels, labels = load_dataset(inspect_dataset(path, image_shape=None, n_classes=4))
    except DataError as refusal:
        assert "mutated.h5" in str(refusal)
        return
    assert len(pixels) == len(labels) and np.isfinite(pixels).all()


MODEL_SEEDS = [
    FIXTURES / "models" / "keras2_full_model_repaired_sunglasses.h5",
    FIXTURES / "models" / "sunglasses_bd_weights.h5",
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), seed=st.sampled_from(MODEL_SEEDS))
def test_mutated_model_files_pass_the_allow_list_or_are_refused(data, seed, tmp_path):
    """The allow-list parser meets the bytes first; what it lets through is still loaded in the sandbox only."""
    path = tmp_path / "model.h5"
    raw = bytearray(seed.read_bytes())
    # Flip bytes in the first 64 KiB, where the superblock, object headers and the config attribute live.
    for _ in range(data.draw(st.integers(1, 16))):
        raw[data.draw(st.integers(0, min(len(raw), 65536) - 1))] = data.draw(st.integers(0, 255))
    path.write_bytes(bytes(raw))
    try:
        check_model_file(path)
    except ModelRefused as refusal:
        assert "model.h5" in str(refusal) or str(refusal)
