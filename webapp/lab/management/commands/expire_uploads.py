"""Remove resumable uploads untouched for PRUNELAB_UPLOAD_EXPIRY_SECONDS (a day), and whatever an interrupted
check or a hand-deleted row left in the uploads folders. Every new upload removes expired ones already; this is
for a cron job on a quiet server, and for the stray files."""

import shutil

from django.core.management.base import BaseCommand

from webapp.lab.uploads import expire_uploads, stray_files


class Command(BaseCommand):
    help = "Remove expired resumable uploads and stray files in the uploads folders."

    def handle(self, *args, **options):
        expired = expire_uploads()
        strays = stray_files()
        for path in strays:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self.stdout.write(f"Removed {expired} expired upload(s) and {len(strays)} stray file(s) or folder(s).")
