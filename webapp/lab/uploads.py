"""Uploaded files on their way in: size limits, and a private temporary copy under the user's own file
name (so the library's refusals name the file the user chose) that is removed whatever happens."""

import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat

MODEL_SUFFIXES = (".h5", ".hdf5", ".keras")
DATASET_SUFFIXES = (".h5", ".hdf5")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def safe_name(name: str) -> str:
    """The file's base name with only harmless characters: it becomes a temporary path, never a stored one."""
    base = Path(name).name.strip() or "upload"
    return re.sub(r"[^A-Za-z0-9._=-]", "_", base)[-120:]


def check_upload(uploaded, suffixes: tuple[str, ...], limit: int | None = None, what: str = "file") -> None:
    """Refuse a wrong type or an oversize upload with advice; raises ValidationError."""
    limit = limit or settings.MAX_UPLOAD_BYTES
    suffix = Path(uploaded.name).suffix.lower()
    if suffix not in suffixes:
        raise ValidationError(
            f"{uploaded.name} is not a {what} ({' or '.join(suffixes)} expected). Choose the right file."
        )
    if uploaded.size > limit:
        size, most = filesizeformat(uploaded.size), filesizeformat(limit)
        raise ValidationError(
            f"{uploaded.name} is {size}; the limit is {most}. Upload a smaller file, or ask "
            "an operator to raise PRUNELAB_MAX_UPLOAD_BYTES."
        )
    if uploaded.size == 0:
        raise ValidationError(f"{uploaded.name} is empty. Choose the file again; the upload may have failed.")


@contextmanager
def local_copy(uploaded):
    """A path holding the upload's bytes, named as the user named the file; removed on exit."""
    folder = Path(tempfile.mkdtemp(prefix="prunelab-upload-"))
    try:
        path = folder / safe_name(uploaded.name)
        with open(path, "wb") as out:
            for chunk in uploaded.chunks():
                out.write(chunk)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def store_checked(form, store, refused: type[Exception]):
    """The row `store(path, cleaned_data)` makes from a valid form's uploaded file, or None: a `refused`
    error (the library's verdict on the file) becomes the file field's error and nothing is stored."""
    try:
        with local_copy(form.cleaned_data["file"]) as path:
            return store(path, form.cleaned_data)
    except refused as refusal:
        form.add_error("file", f"Refused: {refusal}")
        return None
