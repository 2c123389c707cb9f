"""Test inputs that take seconds to make (trained tiny BadNets, the tiny benchmark preset) are made once and
kept on disk under a hash of the code that makes them and of the arguments; later calls, in this session or
the next, copy or load what was kept. A change to that code (or to the Keras or TensorFlow version) makes a new
key, so no test reads what older code made. `rm -rf var/test-cache` starts afresh."""

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# tests/run.py points all its sessions at one cache (PRUNELAB_TEST_CACHE)
CACHE = Path(
    os.environ.get("PRUNELAB_TEST_CACHE") or Path(os.environ.get("PRUNELAB_VAR_DIR", ROOT / "var")) / "test-cache"
).resolve()


def cached_folder(name: str, sources: list[Path], arguments: dict, build: Callable[[Path], None]) -> Path:
    """The folder `build(folder)` fills for these `arguments`, built the first time and kept. A process that
    asks while another builds it waits for that build (tests/run.py's sessions share the cache)."""
    digest = hashlib.sha256()
    for source in sorted(sources):
        digest.update(source.read_bytes())
    digest.update(f"{version('keras')} {version('tensorflow')} {version('numpy')}".encode())
    digest.update(json.dumps(arguments, sort_keys=True).encode())
    kept = CACHE / f"{name}-{digest.hexdigest()[:16]}"
    if kept.is_dir():
        return kept
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{kept.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when this process ends, whatever happens to it
        if kept.is_dir():  # built by the process we waited for
            return kept
        partial = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=CACHE))
        try:
            build(partial)
            partial.rename(kept)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return kept


def copy_into(kept: Path, folder: Path) -> Path:
    """A test's own copy of a kept folder (tests may change or delete their files)."""
    shutil.copytree(kept, folder, dirs_exist_ok=True)
    return folder
