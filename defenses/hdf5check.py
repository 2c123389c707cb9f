"""The structural door every HDF5 file a user gives passes before any value in it is read: model, weights
or dataset, in the web process, the workers and the CLI alike.

Through HDF5's own features a file can make the library read *other* files (external raw storage, external
links, virtual datasets) or allocate memory it does not contain (a dataset declaring 10^9 images in a few
kilobytes: unwritten storage is read as fill values, and gzip expands up to about 1000x). This module reads
only metadata (links, layouts, filter pipelines, dtypes, shapes and stored sizes) and refuses all of that,
so a hostile file costs milliseconds and no more memory than its metadata.
"""

import math
from dataclasses import dataclass

import h5py

# Filters h5py writes by default: gzip (deflate), shuffle, fletcher32 and lzf. Anything else (szip, scale-offset,
# n-bit, third-party plugins) is refused: plugins are code loaded from disk, and we never need them.
ALLOWED_FILTERS = {
    h5py.h5z.FILTER_DEFLATE: "gzip",
    h5py.h5z.FILTER_SHUFFLE: "shuffle",
    h5py.h5z.FILTER_FLETCHER32: "fletcher32",
    32000: "lzf",
}
# Deflate cannot expand data more than 1032:1 and lzf far less; a dataset declaring more bytes per stored byte
# than this is not compressed data but unwritten space (fill values) or a lie.
MAX_EXPANSION = 1100
# Tiny datasets may legitimately be unwritten (a scalar, an empty optimizer slot): they cost nothing to read.
SMALL_DATASET_BYTES = 64 * 2**10
# Reading one value decompresses its whole chunk: chunks bound the memory of every read. h5py's own chunks are
# at most 1 MiB.
MAX_CHUNK_BYTES = 16 * 2**20
# Each chunk costs a lookup and a decompression of its own: a file of millions of tiny chunks is slow to read
# whatever its size (h5py chunks a CSAW test set, 12830 x 3 x 55 x 47, into about 5,400).
MAX_CHUNKS = 1_000_000
# Hard links can form cycles and diamonds: the walk visits at most this many objects, this deep.
MAX_OBJECTS = 20_000
MAX_DEPTH = 32
ALLOWED_KINDS = {"f": "float", "i": "integer", "u": "unsigned integer", "b": "boolean"}


class HDF5Refused(ValueError):
    """The file's structure is not accepted; the message names the file, the object and the reason."""


@dataclass(frozen=True)
class DatasetFacts:
    """What the door learned about one dataset, without reading it."""

    shape: tuple[int, ...]
    dtype: str
    declared_bytes: int
    stored_bytes: int


def check_structure(
    h5: h5py.File,
    name: str,
    file_bytes: int,
    max_elements: int,
    max_objects: int = MAX_OBJECTS,
    max_expansion: int = MAX_EXPANSION,
) -> dict[str, DatasetFacts]:
    """Walk every object of an open HDF5 file and refuse anything but plain, self-contained numeric arrays.

    Refused (HDF5Refused, naming the file and the object): soft, external or user-defined links at any depth;
    external raw storage; virtual datasets; filters other than gzip, lzf, shuffle and fletcher32; non-numeric
    dtypes (strings, references, compounds); committed datatypes; a dataset declaring more than `max_elements`
    values, more bytes than `max_expansion` times what it stores, chunks over MAX_CHUNK_BYTES or more than
    MAX_CHUNKS of them; more stored bytes than the file holds (`file_bytes`); more than `max_objects` objects or
    MAX_DEPTH levels. (Datasets pass lower object and expansion caps than models: a CSAW set is two arrays of
    images, which compress less than 10:1.)
    Returns every dataset's facts by path ("/group/name").
    """
    facts: dict[str, DatasetFacts] = {}
    visits = 0

    def walk(group: h5py.Group, prefix: str, depth: int) -> None:
        nonlocal visits
        if depth > MAX_DEPTH:
            raise HDF5Refused(f"{name} nests groups more than {MAX_DEPTH} deep at {prefix}; refused.")
        for key in group:
            visits += 1
            if visits > max_objects:
                raise HDF5Refused(f"{name} holds more than {max_objects:,} objects (or links in a cycle); refused.")
            where = f"{prefix}{key}"
            _check_link(group.get(key, getlink=True), where, name)
            item = group[key]
            if isinstance(item, h5py.Group):
                walk(item, f"{where}/", depth + 1)
            elif isinstance(item, h5py.Dataset):
                facts[where] = _check_dataset(item, where, name, file_bytes, max_elements, max_expansion)
            else:
                raise HDF5Refused(
                    f"{name} holds a {type(item).__name__} at {where}; only groups and arrays are accepted."
                )

    walk(h5, "/", 0)
    stored = sum(fact.stored_bytes for fact in facts.values())
    if stored > file_bytes:
        raise HDF5Refused(f"{name} claims {stored:,} stored bytes in a file of {file_bytes:,}; it is damaged.")
    return facts


def _check_link(link, where: str, name: str) -> None:
    if isinstance(link, h5py.HardLink):
        return
    if isinstance(link, h5py.SoftLink):
        raise HDF5Refused(f"{name} has a soft link at {where} (to {link.path}); links are refused.")
    if isinstance(link, h5py.ExternalLink):
        raise HDF5Refused(
            f"{name} has an external link at {where} (to {link.filename}:{link.path}); "
            "a file may not point at other files."
        )
    raise HDF5Refused(f"{name} has a link of an unsupported type at {where}; refused.")


def _check_dataset(
    dataset: h5py.Dataset, where: str, name: str, file_bytes: int, max_elements: int, max_expansion: int
) -> DatasetFacts:
    plist = dataset.id.get_create_plist()
    layout = plist.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        raise HDF5Refused(f"{name} has a virtual dataset at {where}; it would read other files. Refused.")
    if plist.get_external_count():
        raise HDF5Refused(f"{name} stores {where} in external files; a file must hold its own data. Refused.")
    if layout not in (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED, h5py.h5d.COMPACT):
        raise HDF5Refused(f"{name}: {where} has an unknown storage layout ({layout}); refused.")
    for index in range(plist.get_nfilters()):
        code = plist.get_filter(index)[0]
        if code not in ALLOWED_FILTERS:
            raise HDF5Refused(
                f"{name}: {where} uses HDF5 filter {code}; only gzip, lzf, shuffle and fletcher32 are "
                "accepted. Save it again with h5py's defaults."
            )
    dtype = dataset.dtype
    if dtype.kind not in ALLOWED_KINDS or dtype.itemsize > 8:
        raise HDF5Refused(f"{name}: {where} holds {dtype} values; only numbers are accepted.")
    shape = tuple(int(size) for size in (dataset.shape or ()))
    elements = math.prod(shape)
    if elements > max_elements:
        raise HDF5Refused(
            f"{name}: {where} declares {elements:,} values {shape}; the cap is {max_elements:,}. "
            "(A few-kilobyte file declaring millions of images is a 'shape bomb'.)"
        )
    chunks = dataset.chunks
    if chunks is not None and math.prod(chunks) * dtype.itemsize > MAX_CHUNK_BYTES:
        raise HDF5Refused(
            f"{name}: {where} has chunks of {chunks} ({math.prod(chunks) * dtype.itemsize:,} bytes); "
            f"chunks over {MAX_CHUNK_BYTES // 2**20} MiB are refused."
        )
    if (
        chunks is not None
        and math.prod(-(-size // chunk) for size, chunk in zip(shape, chunks, strict=True)) > MAX_CHUNKS
    ):
        raise HDF5Refused(
            f"{name}: {where} is cut into chunks of {chunks}: more than {MAX_CHUNKS:,} of them. Save it again "
            "with h5py's default chunks."
        )
    declared, stored = elements * dtype.itemsize, int(dataset.id.get_storage_size())
    if declared > SMALL_DATASET_BYTES and declared > max_expansion * stored:
        raise HDF5Refused(
            f"{name}: {where} declares {declared:,} bytes but stores {stored:,}; no compression "
            "expands that much, so most of it was never written. Refused as a shape bomb."
        )
    if stored > file_bytes:
        raise HDF5Refused(f"{name}: {where} claims {stored:,} stored bytes in a file of {file_bytes:,}; damaged.")
    return DatasetFacts(shape=shape, dtype=str(dtype), declared_bytes=declared, stored_bytes=stored)
