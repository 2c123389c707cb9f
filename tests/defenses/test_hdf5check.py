"""The HDF5 door: every hostile file is refused with its reason before a value is read, no foreign byte
reaches a message, and a shape bomb costs no more memory than an empty set."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from defenses.data import DataError, DatasetLimits, inspect_dataset, validate_dataset
from defenses.hdf5check import MAX_OBJECTS, HDF5Refused, check_structure
from defenses.modelcheck import ModelRefused, check_model_file
from tests import hostile
from tests.defenses.tiny import tiny_badnet_files


@pytest.fixture
def secret(tmp_path):
    return hostile.secret_file(tmp_path)


@pytest.fixture
def secret_h5(tmp_path):
    """Another HDF5 file on the server (say, another team's upload)."""
    return hostile.plain_dataset(tmp_path / "other_team.h5")


def refusal(path, **kwargs) -> str:
    with pytest.raises(DataError) as caught:
        inspect_dataset(path, image_shape=None, **kwargs)
    message = str(caught.value)
    assert hostile.SECRET[:16].decode() not in message and path.name in message
    return message


def test_external_raw_storage_is_refused_and_the_secret_never_read(tmp_path, secret):
    assert "external files" in refusal(hostile.external_storage(tmp_path / "evil.h5", secret))


def test_external_and_soft_links_and_virtual_datasets_are_refused(tmp_path, secret_h5):
    assert "external link at /data" in refusal(hostile.external_link(tmp_path / "ext.h5", secret_h5))
    assert "soft link at /data" in refusal(hostile.soft_link(tmp_path / "soft.h5"))
    assert "virtual dataset at /data" in refusal(hostile.virtual_dataset(tmp_path / "vds.h5", secret_h5))


def test_a_shape_bomb_is_refused_from_its_metadata(tmp_path):
    bomb = hostile.shape_bomb(tmp_path / "bomb.h5")
    assert bomb.stat().st_size < 64 * 2**10
    assert "declares" in refusal(bomb) and "shape bomb" in refusal(bomb)
    # Under the caps but never written: the stored-size rule refuses it all the same.
    small_bomb = hostile.shape_bomb(tmp_path / "small_bomb.h5", images=20_000)
    message = refusal(small_bomb, limits=DatasetLimits(max_images=10**6))
    assert "stores 0" in message and "shape bomb" in message


def test_a_shape_bomb_costs_no_memory(tmp_path):
    """Peak memory of a fresh process that checks the bomb, beside one that checks a small good set."""
    bomb, good = hostile.shape_bomb(tmp_path / "bomb.h5"), hostile.plain_dataset(tmp_path / "good.h5")
    script = """
import resource, sys
from defenses.data import DataError, inspect_dataset
try:
    inspect_dataset(sys.argv[1], image_shape=None)
except DataError as error:
    print("refused", error, file=sys.stderr)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

    def peak_kib(path) -> int:
        done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
        return int(done.stdout.split()[-1])

    assert peak_kib(bomb) < peak_kib(good) + 20 * 1024  # within 20 MiB of a 8-image set; it was 8.7 GB


@pytest.mark.slow
def test_the_cli_refuses_hostile_sets_with_exit_2_and_bounded_memory(tmp_path, secret):
    files = tiny_badnet_files(tmp_path / "tiny")
    script = """
import resource, subprocess, sys
done = subprocess.run([sys.executable, "-m", "defenses", *sys.argv[1:]], capture_output=True, text=True)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(done.stderr)
"""
    for hostile_set in (
        hostile.shape_bomb(tmp_path / "bomb.h5"),
        hostile.external_storage(tmp_path / "ext.h5", secret),
    ):
        args = ["evaluate", "--model", files["model"], "--test", hostile_set]
        done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True)
        first, _, stderr = done.stdout.partition("\n")
        code, peak_kib = map(int, first.split())
        assert code == 2 and f"refused: {hostile_set.name}" in stderr, done.stdout
        assert hostile.SECRET[:16].decode() not in done.stdout
        assert peak_kib < 3 * 2**20  # the largest process is the model's sandbox (TensorFlow); it was 17 GB


@pytest.mark.parametrize(
    ("value", "row"), [(float("nan"), 3), (float("inf"), 0), (-1.0, 7), (256.0, 5)], ids=["nan", "inf", "neg", "big"]
)
def test_validation_reads_every_pixel(tmp_path, value, row):
    path = hostile.with_pixels(tmp_path / "bad.h5", row, value)
    inspect_dataset(path, image_shape=None)  # the structure is fine
    with pytest.raises(DataError, match=f"bad.h5: image {row} has pixel values"):
        validate_dataset(path)


def test_validation_checks_the_badnets_classes_and_image_size(tmp_path):
    labels = hostile.plain_dataset(tmp_path / "labels.h5", labels=[0, 1, 2, 9, 0, 1, 2, 3])
    with pytest.raises(DataError, match=r"labels.h5: labels range 0..9, outside the model's classes 0..3"):
        validate_dataset(labels, n_classes=4)
    small = hostile.plain_dataset(tmp_path / "small.h5", side=(32, 32))
    with pytest.raises(DataError, match="small.h5: images are 32x32x3; the model expects 55x47x3"):
        validate_dataset(small, image_shape=(55, 47, 3))
    assert validate_dataset(hostile.plain_dataset(tmp_path / "good.h5"), (55, 47, 3), 4).count == 8


def test_caps_on_images_and_image_size(tmp_path):
    path = hostile.plain_dataset(tmp_path / "set.h5", count=8)
    with pytest.raises(DataError, match="holds 8 images; the cap is 5"):
        inspect_dataset(path, image_shape=None, limits=DatasetLimits(max_images=5))
    with pytest.raises(DataError, match="images over 1,000 pixels are refused"):
        inspect_dataset(path, image_shape=None, limits=DatasetLimits(max_image_pixels=1000))


def write(path, build):
    with h5py.File(path, "w") as h5:
        build(h5)
    return path


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda h5: h5.create_dataset("w", data=np.ones((64, 64)), scaleoffset=2), "filter 6"),
        (
            lambda h5: h5.create_dataset("w", data=np.array([b"abc"], dtype=object), dtype=h5py.string_dtype()),
            "only numbers",
        ),
        (lambda h5: h5.create_dataset("w", data=np.zeros(3, dtype=[("a", "i4"), ("b", "f4")])), "only numbers"),
        (lambda h5: h5.create_dataset("w", shape=(2**24,), dtype="f8", chunks=(2**24,)), "chunks over"),
        (lambda h5: h5.__setitem__("t", np.dtype("f4")), "Datatype at /t"),
    ],
    ids=["scaleoffset", "strings", "compound", "huge-chunk", "named-type"],
)
def test_unusual_filters_dtypes_and_chunks_are_refused(tmp_path, build, reason):
    path = write(tmp_path / "odd.h5", build)
    with h5py.File(path, "r") as h5, pytest.raises(HDF5Refused, match=reason):
        check_structure(h5, path.name, path.stat().st_size, 10**9)


def test_gzip_lzf_shuffle_and_fletcher32_are_accepted(tmp_path):
    def build(h5):
        h5.create_dataset("a", data=np.arange(5000.0), compression="gzip", shuffle=True, fletcher32=True)
        h5.create_dataset("b", data=np.arange(5000.0), compression="lzf")

    path = write(tmp_path / "ok.h5", build)
    with h5py.File(path, "r") as h5:
        facts = check_structure(h5, path.name, path.stat().st_size, 10**9)
    assert facts["/a"].shape == (5000,) and facts["/b"].declared_bytes == 40_000


def test_hard_link_cycles_end_at_the_object_cap(tmp_path):
    def build(h5):
        h5["loop/w"] = np.zeros(3)
        h5["loop/again"] = h5["loop"]  # a hard link to its own parent group

    path = write(tmp_path / "cycle.h5", build)
    with h5py.File(path, "r") as h5, pytest.raises(HDF5Refused, match=f"more than 32 deep|{MAX_OBJECTS:,} objects"):
        check_structure(h5, path.name, path.stat().st_size, 10**9)


def test_model_files_pass_the_same_door(tmp_path, secret):
    """A weights file whose array lives in external storage, or a shape bomb, is refused as a model too."""
    evil = tmp_path / "weights.h5"
    with h5py.File(evil, "w") as h5:
        h5.attrs["layer_names"] = [b"dense"]
        h5.create_dataset(
            "dense/kernel",
            shape=(len(hostile.SECRET),),
            dtype="uint8",
            external=[(str(secret), 0, len(hostile.SECRET))],
        )
    with pytest.raises(ModelRefused, match="external files"):
        check_model_file(evil)
    bomb = tmp_path / "bomb_weights.h5"
    with h5py.File(bomb, "w") as h5:
        h5.create_dataset("dense/kernel", shape=(40_000, 1000), dtype="f4", chunks=(1000, 1000), compression="gzip")
    with pytest.raises(ModelRefused, match="shape bomb"):
        check_model_file(bomb)


def test_the_real_csaw_files_pass(csaw_fixtures):
    for path in sorted((csaw_fixtures / "models").glob("*.h5")):
        facts = check_model_file(path)
        assert sum(int(np.prod(shape)) for shape in facts.weight_shapes.values()) > 0, path.name
    assert json.dumps(facts.config)  # the Keras 2 full model's config was read


def test_a_chunk_layout_that_makes_every_read_the_whole_set_is_refused(tmp_path):
    bomb = hostile.chunk_bomb(tmp_path / "chunks.h5")
    assert bomb.stat().st_size < 8 * 2**20
    assert "every read would decompress 3,000 images at once" in refusal(bomb)


def test_a_compression_bomb_is_refused_before_it_is_inflated(tmp_path):
    bomb = hostile.compression_bomb(tmp_path / "zeros.h5")
    assert bomb.stat().st_size < 2**20  # 124 MB of float64 pixels
    assert "no compression expands that much" in refusal(bomb)  # images compress < 10:1; the cap is 100:1


def test_declared_pixels_over_the_byte_cap_are_refused(tmp_path):
    path = hostile.default_chunked(tmp_path / "set.h5", count=300)
    assert "the cap is 0.0 GiB" in refusal(path, limits=DatasetLimits(max_bytes=2**20))


def test_a_set_with_hundreds_of_extra_objects_is_refused(tmp_path):
    assert "more than 64 objects" in refusal(hostile.many_objects(tmp_path / "many.h5"))


def test_millions_of_tiny_chunks_are_refused(tmp_path):
    def build(h5):
        h5.create_dataset("data", shape=(4000, 3, 55, 47), dtype="u1", chunks=(1, 1, 1, 1))

    path = write(tmp_path / "tiny_chunks.h5", build)
    with h5py.File(path, "r") as h5, pytest.raises(HDF5Refused, match="more than 1,000,000 of them"):
        check_structure(h5, path.name, path.stat().st_size, 10**9)


def test_the_upload_scan_of_a_default_chunked_set_holds_a_chunk_not_the_set(tmp_path):
    """h5py's own chunks for a CSAW-layout set span hundreds of images: the scan reads chunk by chunk."""
    import tracemalloc

    path = hostile.default_chunked(tmp_path / "set.h5")  # 2000 float64 images: 124 MB of pixels
    tracemalloc.start()
    info = validate_dataset(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert info.count == 2000 and info.band_rows > 100
    assert peak < 8 * 2**20, peak  # numpy's arrays are traced: a few MB, whatever the set's size
    with h5py.File(path, "a") as h5:
        h5["data"][1234, 2, 40, 3] = np.nan
    with pytest.raises(DataError, match="image 1234 has pixel values"):
        validate_dataset(path)
