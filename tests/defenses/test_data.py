"""CSAW dataset files and images: both layouts load identically, and every broken input is refused
with a message that names the file and the problem."""

import io

import h5py
import numpy as np
import pytest
from PIL import Image

from defenses.data import DataError, inspect_dataset, iter_batches, load_dataset, load_image, scale_pixels
from tests.defenses.tiny import SHAPE, png_declaring, tiny_data, write_dataset


def test_channels_first_and_last_give_the_same_pixels(tmp_path):
    pixels, labels = tiny_data(30)
    first = load_dataset(inspect_dataset(write_dataset(tmp_path / "cf.h5", pixels, labels), SHAPE))
    last = load_dataset(inspect_dataset(write_dataset(tmp_path / "cl.h5", pixels, labels, False), SHAPE))
    np.testing.assert_array_equal(first[0], pixels)
    np.testing.assert_array_equal(last[0], pixels)
    np.testing.assert_array_equal(first[1], labels)


def test_uint8_data_streams_in_batches(tmp_path):
    pixels, labels = tiny_data(25)
    path = write_dataset(tmp_path / "u8.h5", pixels.astype(np.uint8), labels)
    batches = list(iter_batches(inspect_dataset(path, SHAPE), batch_size=10))
    assert [len(b[0]) for b in batches] == [10, 10, 5]
    assert batches[0][0].dtype == np.float32 and batches[0][0].shape[1:] == SHAPE


def write_raw(path, **arrays):
    with h5py.File(path, "w") as handle:
        for key, value in arrays.items():
            handle[key] = value
    return path


GOOD = np.zeros((4, 3, 12, 10), np.uint8)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"data": GOOD}, "no dataset 'label'"),
        ({"images": GOOD, "labels": np.zeros(4)}, "no dataset 'data' or 'label'"),
        ({"data": np.zeros((4, 12, 10)), "label": np.zeros(4)}, "expected 4 dimensions"),
        ({"data": np.zeros((4, 5, 12, 10)), "label": np.zeros(4)}, "colour channels"),
        ({"data": np.zeros((4, 3, 20, 10)), "label": np.zeros(4)}, "images are 20x10x3; the model expects 12x10x3"),
        ({"data": np.zeros((0, 3, 12, 10)), "label": np.zeros(0)}, "holds no images"),
        ({"data": GOOD, "label": np.zeros(3)}, "expected \\(4,\\), one per image"),
        ({"data": GOOD, "label": np.array([0, 1, 2.5, 3])}, "non-integer"),
        ({"data": GOOD, "label": np.array([0, 1, 2, 9])}, "labels range 0..9, outside the model's classes 0..3"),
        ({"data": GOOD, "label": np.array([0, -1, 2, 3])}, "label -1 is negative"),
    ],
)
def test_broken_datasets_are_refused_with_the_reason(tmp_path, arrays, message):
    path = write_raw(tmp_path / "broken.h5", **arrays)
    with pytest.raises(DataError, match=message) as refusal:
        inspect_dataset(path, SHAPE, n_classes=4)
    assert "broken.h5" in str(refusal.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -3.0, 300.0])
def test_bad_pixel_values_are_refused_with_the_row(tmp_path, bad):
    data = np.zeros((5, 3, 12, 10), np.float32)
    data[3, 1, 2, 2] = bad
    path = write_raw(tmp_path / "nan.h5", data=data, label=np.zeros(5))
    with pytest.raises(DataError, match="image 3 has pixel values"):
        load_dataset(inspect_dataset(path, SHAPE))


def test_not_hdf5_is_refused(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not a dataset")
    with pytest.raises(DataError, match="notes.h5 is not a readable HDF5 file"):
        inspect_dataset(path)


def encode(pixels: np.ndarray, fmt: str, **options) -> io.BytesIO:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, fmt, **options)
    buffer.seek(0)
    return buffer


def test_png_and_jpeg_both_become_0_to_255_floats():
    rows, cols = np.mgrid[0:55, 0:47]
    pixels = np.stack([rows * 4, cols * 5, 255 - rows * 4], axis=-1)  # smooth, as faces are: JPEG keeps it
    png, jpeg = load_image(encode(pixels, "PNG")), load_image(encode(pixels, "JPEG", quality=100, subsampling=0))
    assert png.pixels.dtype == jpeg.pixels.dtype == np.float32
    np.testing.assert_array_equal(png.pixels, pixels)
    assert png.pixels.max() > 1 and jpeg.pixels.max() > 1  # never 0..1 for one format and 0..255 for the other
    assert np.abs(jpeg.pixels - pixels).mean() < 2
    assert png.note == ""


def test_other_sizes_are_resized_and_the_note_says_so():
    image = load_image(encode(np.zeros((110, 94, 3)), "PNG"))
    assert image.pixels.shape == (55, 47, 3)
    assert image.note == "resized from 94x110 to 47x55"


def test_images_other_than_png_or_jpeg_and_bombs_are_refused():
    with pytest.raises(DataError, match="not a PNG or JPEG"):
        load_image(encode(np.zeros((55, 47, 3)), "GIF"))
    with pytest.raises(DataError, match="not a PNG or JPEG"):
        load_image(io.BytesIO(b"<html><script>alert(1)</script></html>"))
    with pytest.raises(DataError, match="decompression bomb"):
        load_image(io.BytesIO(png_declaring(20000, 20000)))
    with pytest.raises(DataError, match="declares 5000x5000 pixels"):
        load_image(io.BytesIO(png_declaring(5000, 5000)))


def test_scaling_is_one_division():
    assert scale_pixels(np.array([0, 51, 255]), 255.0).tolist() == pytest.approx([0.0, 0.2, 1.0])
    assert scale_pixels(np.array([0, 51, 255]), 1.0).tolist() == [0.0, 51.0, 255.0]


def test_a_set_chunked_by_h5py_loads_whatever_its_chunk_rows(tmp_path):
    """h5py's own chunks for a 3000-image float64 set hold 188 images: batches follow them (bands of
    chunks), and the whole set loads equal to the file (a second attack review found every run of such an
    ordinary set failing, when batches stopped being 1024 rows)."""
    from tests.hostile import default_chunked

    path = default_chunked(tmp_path / "gzip.h5", count=3000)
    info = inspect_dataset(path, image_shape=None)
    assert info.band_rows and 1024 % info.band_rows != 0
    pixels, labels = load_dataset(info)
    with h5py.File(path, "r") as h5:
        expected = h5["data"][()].transpose(0, 2, 3, 1)
    assert pixels.shape == (3000, 55, 47, 3) and np.array_equal(pixels, expected) and len(labels) == 3000
    assert sum(len(batch) for batch, _ in iter_batches(info, 1000)) == 3000


def test_a_compact_load_holds_whole_number_pixels_as_uint8_and_keeps_fractions_exact(tmp_path):
    pixels, labels = tiny_data(40)
    pixels = pixels.round()  # whole numbers, as the published CSAW float64 files hold
    whole = write_dataset(tmp_path / "whole.h5", pixels.astype(np.float64), labels)
    compact, _ = load_dataset(inspect_dataset(whole, SHAPE), compact=True)
    assert compact.dtype == np.uint8 and compact.nbytes * 4 == load_dataset(inspect_dataset(whole, SHAPE))[0].nbytes
    np.testing.assert_array_equal(scale_pixels(compact, 255.0), scale_pixels(pixels, 255.0))

    fractional = pixels.astype(np.float64)
    fractional[-1, 0, 0, 0] = 100.25  # one fraction in the last batch: the whole set stays float32
    path = write_dataset(tmp_path / "fraction.h5", fractional, labels)
    kept, _ = load_dataset(inspect_dataset(path, SHAPE), batch_size=8, compact=True)
    assert kept.dtype == np.float32
    np.testing.assert_array_equal(kept, fractional.astype(np.float32))
