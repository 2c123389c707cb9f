"""The media storage: Django's file system storage, except that a copy which fails half-way (a full disk) is
removed. Django leaves the half-written file under its new name, with no row to find it by, so each failure
would keep holding the space that ran out."""

from pathlib import Path

from django.core.files.storage import FileSystemStorage


class WholeFilesStorage(FileSystemStorage):
    def _save(self, name, content):
        try:
            return super()._save(name, content)
        except Exception:
            # Storage.save chose `name` as free (stored names are uuids), so what is there now is this copy's part
            Path(self.path(name)).unlink(missing_ok=True)
            raise
