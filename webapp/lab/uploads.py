"""Uploaded files on their way in: size limits, a private temporary copy under the user's own file name (so the
library's refusals name the file the user chose) that is removed whatever happens, and resumable uploads
(the tus protocol's storage side; the protocol itself is webapp/lab/tus.py).

A resumable upload is an Upload row and one file, MEDIA_ROOT/team-N/uploads/<uuid>.part, with the server
account's permissions: the user's file name is kept as data only. Bytes are appended at the stored offset, one
request at a time (a lock on the file); a finished upload is taken by one form (page, API or import) and gone
from then on, whatever the checks say: when a check refuses the file, nothing of it is left."""

import fcntl
import os
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from webapp.lab import storage
from webapp.lab.models import Upload, printable

MODEL_SUFFIXES = (".h5", ".hdf5", ".keras")
DATASET_SUFFIXES = (".h5", ".hdf5")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
UPLOAD_SUFFIXES = {Upload.DATASET: (DATASET_SUFFIXES, "dataset file"), Upload.BADNET: (MODEL_SUFFIXES, "model file")}
GONE = "this upload is gone (used, deleted, or expired after a day untouched). Upload the file again."
READ_BYTES = 2**20  # a PATCH body is read and written in pieces of this size, never held whole


def safe_name(name: str) -> str:
    """The file's base name with only harmless characters: it becomes a temporary path, never a stored one."""
    base = Path(name).name.strip() or "upload"
    return re.sub(r"[^A-Za-z0-9._=-]", "_", base)[-120:]


def check_upload(uploaded, suffixes: tuple[str, ...], limit: int | None = None, what: str = "file") -> None:
    """Refuse a wrong type or an oversize upload with advice; raises ValidationError. `uploaded` is anything
    with a name and a size: a file of a request, or a resumable Upload."""
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
    """The row `store(path, cleaned_data)` makes from a valid form's file (sent with the request, or a finished
    resumable upload), or None: a `refused` error (the library's verdict on the file) becomes the file field's
    error and nothing is stored. A resumable upload is used up either way (AlreadyStored included)."""
    upload = form.cleaned_data.get("upload")
    try:
        with taken(upload) if upload else local_copy(form.cleaned_data["file"]) as path:
            return store(path, form.cleaned_data)
    except UploadGone as gone:
        form.add_error("upload", str(gone))
    except refused as refusal:
        form.add_error("file", f"Refused: {refusal}")
    except OSError as failed:  # the server's disk (full), not the file: the user is told, not shown a 500
        name = upload.filename if upload else form.cleaned_data["file"].name
        form.add_error(
            "file",
            f"{name} could not be stored ({failed.strerror or failed}); nothing of it was kept. Try again later, or "
            "tell an operator: the server may need disk space.",
        )
    if upload:  # the page shown again must not offer the upload that is gone
        form.cleaned_data["upload"] = None
        if hasattr(form.data, "copy"):
            form.data = form.data.copy()
            form.data["upload"] = ""
    return None


# Resumable uploads


class UploadRefused(Exception):
    """A resumable upload request that cannot be served: its HTTP status and what to do, in words."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class UploadGone(Exception):
    """A finished upload another request took first (it is being checked, or was used)."""


def uploads_folder(team_id: int) -> Path:
    """The team's uploads folder, made with the stored files' own permissions (the server account's alone)."""
    mode = settings.FILE_UPLOAD_DIRECTORY_PERMISSIONS or 0o700
    folder = Path(settings.MEDIA_ROOT) / f"team-{team_id}" / "uploads"
    for level in (folder.parent.parent, folder.parent, folder):
        if not level.is_dir():
            level.mkdir(mode=mode, parents=True, exist_ok=True)
            level.chmod(mode)  # mkdir's mode passes through the umask
    return folder


def clean_filename(name: str) -> str:
    """The name a client declared, as data: its last path part (a browser's or a script's folders are nobody's
    business), without control characters; 'upload' when nothing is left."""
    base = printable(name.replace("\\", "/")).split("/")[-1].strip()
    return base[-255:] or "upload"


def open_upload(user, team, kind: str, filename: str, length: int) -> Upload:
    """A new resumable upload of `length` bytes, its empty file made. Refused (UploadRefused, nothing made) for a
    wrong kind or type, a size over the cap, or a user who has too many unfinished uploads or bytes already.
    Uploads untouched for a day are removed first, so that a user's abandoned ones stop counting."""
    expire_uploads()
    filename = clean_filename(filename)
    if kind not in UPLOAD_SUFFIXES:
        raise UploadRefused(400, f"{filename}: say what the file is: Upload-Metadata kind 'dataset' or 'badnet'.")
    suffixes, what = UPLOAD_SUFFIXES[kind]
    if length > settings.MAX_UPLOAD_BYTES:
        raise UploadRefused(
            413,
            f"{filename} is {filesizeformat(length)}; the limit is {filesizeformat(settings.MAX_UPLOAD_BYTES)}. "
            "Upload a smaller file, or ask an operator to raise PRUNELAB_MAX_UPLOAD_BYTES.",
        )
    try:
        check_upload(Upload(filename=filename, length=length), suffixes, what=what)
    except ValidationError as wrong:
        raise UploadRefused(400, wrong.messages[0]) from None
    upload_id = uuid.uuid4()
    with transaction.atomic():
        # one creation per user at a time (the row lock; SQLite's immediate transactions serialize anyway), so two
        # requests at once cannot both pass the caps below
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        mine = Upload.objects.filter(owner=user)
        if mine.count() >= settings.MAX_OPEN_UPLOADS:
            raise UploadRefused(
                403,
                f"{filename}: you have {settings.MAX_OPEN_UPLOADS} unfinished uploads already. Finish them, "
                "delete them (DELETE their URL), or wait: an upload untouched for a day is removed.",
            )
        held = mine.aggregate(total=Sum("length"))["total"] or 0
        if held + length > settings.MAX_OPEN_UPLOAD_BYTES:
            raise UploadRefused(
                403,
                f"{filename} ({filesizeformat(length)}) with your unfinished uploads ({filesizeformat(held)}) is "
                f"over the {filesizeformat(settings.MAX_OPEN_UPLOAD_BYTES)} one account may have on the way. "
                "Finish or delete those first (DELETE their URL).",
            )
        refused = storage.refusal(team, user, length, filename)
        if refused:
            raise UploadRefused(507 if "disk free" in refused else 403, refused)
        folder = uploads_folder(team.pk)
        path = folder / f"{upload_id.hex}.part"
        # O_EXCL: never an existing file, never through a link someone left there
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, settings.FILE_UPLOAD_PERMISSIONS or 0o600))
        return Upload.objects.create(
            id=upload_id,
            owner=user,
            team=team,
            kind=kind,
            filename=filename,
            length=length,
            path=str(path.relative_to(settings.MEDIA_ROOT)),
        )


def upload_of(user, upload_id) -> Upload | None:
    """The user's own upload, in a team they are still in; None for anyone else's (the caller says 404)."""
    return Upload.objects.filter(pk=upload_id, owner=user, team__membership__user=user).first()


def append(upload: Upload, offset: int, length: int, body) -> Upload:
    """Write the `length` bytes of `body` (a file-like request body) at `offset`, which must be where the upload
    stands (409 otherwise); the upload may not grow past its declared length (413). One request writes at a
    time (423 for a second). Bytes that arrive before a connection breaks are kept and counted: the client asks
    HEAD for the offset and sends the rest from there. A write the disk refuses (full) is a 507, and nothing of
    that request counts."""
    name = upload.filename
    if offset + length > upload.length:
        raise UploadRefused(
            413,
            f"{name}: {length:,} bytes at offset {offset:,} pass the declared length of {upload.length:,} bytes. "
            "Send only the rest of the file.",
        )
    try:
        # unbuffered: a write the disk refuses fails there, not again in a flush when the file is closed
        handle = open(upload.file_path, "r+b", buffering=0)  # noqa: SIM115 (held across the lock and the writes below)
    except FileNotFoundError:
        raise UploadRefused(404, f"{name}: {GONE}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UploadRefused(
                423, f"{name}: another request is writing to this upload. Wait for it, ask HEAD for the offset."
            ) from None
        stored = Upload.objects.filter(pk=upload.pk).values_list("offset", flat=True).first()
        if stored is None:
            raise UploadRefused(404, f"{name}: {GONE}")
        if offset != stored:
            raise UploadRefused(
                409,
                f"{name}: the upload stands at byte {stored:,}, this request starts at {offset:,}. "
                "Ask HEAD for Upload-Offset and send from there.",
            )
        written = 0
        handle.seek(offset)
        try:
            while written < length:
                try:
                    piece = body.read(min(READ_BYTES, length - written))
                except OSError:
                    break  # the connection broke: what arrived is kept
                if not piece:
                    break  # the connection ended before its Content-Length
                view = memoryview(piece)
                while view:  # a raw write may take only part of the piece
                    view = view[handle.write(view) :]
                written += len(piece)
            if offset + written == upload.length:
                os.fsync(handle.fileno())  # a finished file is checked next: every byte on disk first
        except OSError as failed:
            # the disk's fault, not the connection's (ENOSPC): what was written may not all be there, so nothing of
            # this request counts, and the answer is an error the clients pause on, not a 204 they repeat at once
            raise UploadRefused(
                507,
                f"{name}: the server could not store the bytes ({failed.strerror or failed}). Try again later: the "
                "upload resumes from its offset (HEAD). If it goes on, tell an operator: it may need disk space.",
            ) from None
        now = timezone.now()
        Upload.objects.filter(pk=upload.pk, offset=offset).update(offset=offset + written, updated=now)
    upload.offset, upload.updated = offset + written, now
    return upload


def remove(upload: Upload) -> None:
    """The upload and its bytes (termination, expiry)."""
    Upload.objects.filter(pk=upload.pk).delete()
    upload.file_path.unlink(missing_ok=True)


def expire_uploads(now=None) -> int:
    """Remove every upload untouched for UPLOAD_EXPIRY_SECONDS (finished or not); their number."""
    limit = (now or timezone.now()) - timedelta(seconds=settings.UPLOAD_EXPIRY_SECONDS)
    old = list(Upload.objects.filter(updated__lt=limit))
    for upload in old:
        remove(upload)
    return len(old)


def stray_files(now=None) -> list[Path]:
    """Files and folders in the uploads folders that no upload holds and that are older than the expiry: what a
    process killed during a check, or a row deleted by hand, left behind."""
    limit = ((now or timezone.now()) - timedelta(seconds=settings.UPLOAD_EXPIRY_SECONDS)).timestamp()
    held = {str(Path(settings.MEDIA_ROOT) / path) for path in Upload.objects.values_list("path", flat=True)}
    found = []
    for folder in Path(settings.MEDIA_ROOT).glob("team-*/uploads"):
        for item in folder.iterdir():
            if str(item) not in held and item.lstat().st_mtime < limit:
                found.append(item)
    return found


def finished_upload(upload_id, user, team, kind: str) -> Upload:
    """The user's finished upload of `kind` in `team`, for a form; ValidationError with advice otherwise."""
    upload = Upload.objects.filter(pk=upload_id, owner=user, team=team).first() if user else None
    if upload is None:
        raise ValidationError(
            f"There is no upload {upload_id} of yours in {team}: it was used or deleted, expired (after a day "
            "untouched), or belongs to another team. Upload the file again."
        )
    if upload.kind != kind:
        raise ValidationError(
            f"{upload.filename} was uploaded as a {upload.get_kind_display()} file, not as a "
            f"{dict(Upload.KINDS)[kind]} file. Upload it again here."
        )
    if not upload.complete:
        raise ValidationError(
            f"{upload.filename} has not arrived yet: {upload.offset:,} of {upload.length:,} bytes. Send the rest "
            "(HEAD its URL for the offset), then submit again."
        )
    return upload


@contextmanager
def taken(upload: Upload):
    """A finished upload's file, under the user's file name in a private folder beside it, for the checks and
    the services; the upload is gone from the moment it is taken (its row deleted, its file moved, then
    removed on exit), so a second request for the same upload gets UploadGone and nothing is half-stored."""
    folder = Path(tempfile.mkdtemp(prefix="check-", dir=uploads_folder(upload.team_id)))
    try:
        path = folder / safe_name(upload.filename)
        try:
            os.rename(upload.file_path, path)  # one filesystem: a rename, not a copy; only one request wins it
        except FileNotFoundError:
            raise UploadGone(
                f"{upload.filename} is being checked by another request, or was used already. Look for it in the "
                "list, or upload the file again."
            ) from None
        Upload.objects.filter(pk=upload.pk).delete()
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)
