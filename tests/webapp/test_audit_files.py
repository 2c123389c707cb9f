"""`manage.py audit_files` finds files stored before a door was closed: a dataset in external storage that an
older version accepted is listed with its reason; clean rows pass. It lists the media no row holds too, and
removes them when asked."""

import io
import os
import tempfile
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command

from tests import hostile
from tests.webapp.base import BaseTestCase
from webapp.lab.models import Dataset


class AuditFilesTestCase(BaseTestCase):
    def test_a_hostile_set_stored_by_an_older_version_is_listed(self):
        self.dataset()  # a clean 30-image set
        folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        evil = hostile.external_storage(folder / "evil.h5", hostile.secret_file(folder))
        row = Dataset.objects.create(
            team=self.red,
            owner=self.bob,
            name="evil",
            role=Dataset.CLEAN_TEST,
            count=8,
            file=ContentFile(evil.read_bytes(), name="evil.h5"),
            original_name="evil.h5",
            sha256="e" * 64,
        )
        out = io.StringIO()
        with pytest.raises(CommandError, match="1 of 2 stored files fail today's checks"):
            call_command("audit_files", stdout=out)
        assert f"Dataset {row.pk} 'evil' of team {self.red.pk}:" in out.getvalue()
        assert "in external files" in out.getvalue()

    def test_clean_rows_pass(self):
        self.dataset()
        out = io.StringIO()
        call_command("audit_files", stdout=out)
        assert "All 1 stored files pass today's checks." in out.getvalue()

    def test_the_page_of_such_a_set_says_why_it_cannot_be_used(self):
        folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        bomb = hostile.shape_bomb(folder / "bomb.h5")
        row = Dataset.objects.create(
            team=self.blue,
            owner=self.alice,
            name="bomb",
            role=Dataset.CLEAN_TEST,
            count=8,
            file=ContentFile(bomb.read_bytes(), name="bomb.h5"),
            original_name="bomb.h5",
            sha256="b" * 64,
        )
        self.client.force_login(self.alice)
        page = self.client.get(f"/datasets/{row.pk}/")
        assert page.status_code == 200 and "This set cannot be used:" in page.content.decode()
        assert "shape bomb" in page.content.decode() and "preview.png" not in page.content.decode()
        assert self.client.get(f"/datasets/{row.pk}/preview.png").status_code == 400


class OrphanedMediaTestCase(BaseTestCase):
    def test_files_and_folders_no_row_holds_are_listed_then_removed_and_rows_files_stay(self):
        kept = self.dataset()
        media = Path(settings.MEDIA_ROOT)
        lost = [
            media / f"team-{self.blue.pk}" / "dataset" / "0123abcd.h5",  # a file whose row never came
            media / f"team-{self.blue.pk}" / "runs" / "99999" / "repaired_net.keras",  # a deleted run's folder
            media / f"team-{self.red.pk}" / "bundles" / "goodnet-4242" / "bundle.zip",  # a deleted GoodNet's bundle
        ]
        fresh = media / f"team-{self.blue.pk}" / "goodnet" / "being-made.keras"  # its row may be on its way
        for path in [*lost, fresh]:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * 1000)
        hour_ago = time.time() - 3600
        for path in lost:
            os.utime(path, (hour_ago, hour_ago))
            os.utime(path.parent, (hour_ago, hour_ago))
        out = io.StringIO()
        call_command("audit_files", stdout=out)
        text = out.getvalue()
        listed = {line.split(" (")[0].removeprefix("Orphaned: ") for line in text.splitlines() if "Orphaned" in line}
        assert listed == {str(lost[0]), str(lost[1].parent), str(lost[2].parent)}, text
        assert "3 files or folders (2.9\xa0KB) belong to no row" in text and "All 1 stored files pass" in text
        call_command("audit_files", "--remove-orphans", stdout=io.StringIO())
        assert not any(path.exists() for path in lost)
        assert fresh.exists() and Path(kept.file.path).exists()
