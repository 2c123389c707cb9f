"""`manage.py import_dataset` and `import_badnet`: files already on the server go through the same form rules
and services as an upload (HDF5 door, full validation or the sandbox, the duplicate check); the stored file is a
copy, never the path; a refusal stores nothing and exits non-zero with the reason."""

import io
import os
import tempfile
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from tests import hostile
from tests.conftest import FIXTURES
from tests.defenses.tiny import tiny_data, write_dataset
from tests.webapp.base import BaseTestCase
from webapp.lab.models import BadNet, Dataset

SUNGLASSES = FIXTURES / "models" / "sunglasses_bd_weights.h5"
KERAS2 = FIXTURES / "models" / "keras2_full_model_repaired_sunglasses.h5"


class ImportCommandTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        self.secret = hostile.secret_file(self.folder)

    def run_command(self, name: str, *args) -> str:
        out = io.StringIO()
        call_command(name, *map(str, args), stdout=out, stderr=io.StringIO())
        return out.getvalue()

    def refusal(self, name: str, *args) -> str:
        """What a refused import prints (its stderr and the error it exits with, status 1)."""
        err = io.StringIO()
        with pytest.raises(CommandError) as refused:
            call_command(name, *map(str, args), stdout=io.StringIO(), stderr=err)
        assert refused.value.returncode == 1
        return f"{err.getvalue()}\n{refused.value}"

    def stored_files(self) -> list[Path]:
        return [path for path in Path(settings.MEDIA_ROOT).rglob("*") if path.is_file()]

    def assert_nothing_stored(self):
        assert not Dataset.objects.exists() and not BadNet.objects.exists() and not self.stored_files()

    def test_a_good_set_is_stored_as_a_copy_with_the_options_fields(self):
        path = write_dataset(self.folder / "sunglasses_poisoned_data.h5", *tiny_data(30))
        badnet = self.badnet()
        options = ["--user", "alice", "--team", "blue", "--role", Dataset.POISONED_TEST, "--name", "sunglasses test"]
        options += ["--trigger", "sunglasses", "--target", 0, "--badnet", badnet.pk]
        out = self.run_command("import_dataset", path, *options)
        dataset = Dataset.objects.get()
        assert out.startswith(f"Stored dataset {dataset.pk} 'sunglasses test' in team blue: 30 images of 12x10")
        fields = (dataset.name, dataset.role, dataset.trigger, dataset.target, dataset.count)
        assert fields == ("sunglasses test", Dataset.POISONED_TEST, "sunglasses", 0, 30)
        assert (dataset.team, dataset.owner, dataset.original_name) == (self.blue, self.alice, path.name)
        stored = Path(dataset.file.path)
        assert stored.read_bytes() == path.read_bytes() and not stored.is_symlink()
        assert stored.stat().st_ino != path.stat().st_ino and stored.is_relative_to(settings.MEDIA_ROOT)
        path.unlink()  # the stored copy does not depend on the file it came from
        assert stored.exists()

    def test_several_files_default_to_their_own_names_and_the_users_first_team(self):
        valid = write_dataset(self.folder / "clean_validation_data.h5", *tiny_data(20, seed=1))
        test = write_dataset(self.folder / "clean_test_data.h5", *tiny_data(20, seed=2))
        out = self.run_command("import_dataset", valid, test, "--user", "alice", "--role", Dataset.CLEAN_TEST)
        assert out.count("Stored dataset") == 2
        assert set(Dataset.objects.values_list("name", "team__name")) == {
            ("clean_validation_data", "blue"),
            ("clean_test_data", "blue"),
        }

    def test_hostile_files_are_refused_with_their_reason_and_nothing_is_stored(self):
        other = hostile.plain_dataset(self.folder / "other_team.h5")
        hostile_files = {
            hostile.external_link(self.folder / "ext_link.h5", other): "external link at /data",
            hostile.external_storage(self.folder / "ext.h5", self.secret): "external files",
            hostile.shape_bomb(self.folder / "bomb.h5"): "shape bomb",
            hostile.with_pixels(self.folder / "nan.h5", 2, float("nan")): "nan.h5: image 2 has pixel values",
        }
        for path, reason in hostile_files.items():
            said = self.refusal("import_dataset", path, "--user", "alice", "--role", Dataset.CLEAN_TEST)
            assert f"{path}: Refused: {path.name}" in said and reason in said, (path.name, said)
            assert "1 of 1 file(s) refused; nothing of them was stored" in said
            assert hostile.SECRET[:16].decode() not in said
            self.assert_nothing_stored()

    def test_a_refusal_among_several_files_stores_the_good_ones_and_exits_non_zero(self):
        good = write_dataset(self.folder / "good.h5", *tiny_data(10))
        said = self.refusal(
            "import_dataset", good, self.folder / "missing.h5", "--user", "alice", "--role", "clean-test"
        )
        assert f"{self.folder / 'missing.h5'}: no such file" in said and "1 of 2 file(s) refused" in said
        assert list(Dataset.objects.values_list("original_name", flat=True)) == ["good.h5"]

    def test_a_missing_path_a_folder_and_wrong_options_are_refused_with_advice(self):
        role = ["--role", Dataset.CLEAN_TEST]
        assert "no such file" in self.refusal("import_dataset", self.folder / "nope.h5", "--user", "alice", *role)
        assert "not a plain file" in self.refusal("import_dataset", self.folder, "--user", "alice", *role)
        path = write_dataset(self.folder / "set.h5", *tiny_data(10))
        assert "There is no user 'carol'" in self.refusal("import_dataset", path, "--user", "carol", *role)
        # a team the user is not in, by name or by id
        for team in ("red", str(self.red.pk)):
            said = self.refusal("import_dataset", path, "--user", "alice", "--team", team, *role)
            assert "alice is not a member of a team" in said
        poisoned = self.refusal("import_dataset", path, "--user", "alice", "--role", Dataset.POISONED_TEST)
        assert "--trigger: A poisoned set needs the name of its trigger" in poisoned
        other_badnet, mine = self.badnet(self.red, "reds"), self.badnet(self.blue, "blues")
        said = self.refusal("import_dataset", path, "--user", "alice", *role, "--badnet", other_badnet.pk)
        # another team's BadNet is not one of the choices; the refusal names the team's own
        assert (
            f"--badnet {other_badnet.pk}: team blue has no BadNet {other_badnet.pk}; its BadNets are {mine.pk} 'blues'."
            in said
        )
        notes = self.folder / "notes.txt"
        notes.write_text("hello")
        assert "notes.txt is not a dataset file" in self.refusal("import_dataset", notes, "--user", "alice", *role)
        assert not Dataset.objects.exists() and not [path for path in self.stored_files() if "dataset" in str(path)]

    def test_links_special_files_and_the_servers_own_storage_are_refused(self):
        """An attack review: the command followed a symbolic link, so a link left in a folder that someone asks an
        operator to import (an scp drop) stored another team's set in the asker's team; it read any file the
        server may read, and opened what it had judged a plain file (a FIFO swapped in blocks for ever)."""
        role = ["--role", Dataset.CLEAN_TEST]
        reds = self.dataset(team=self.red, name="red-secret-set")
        theirs = Path(reds.file.path)
        link = self.folder / "big_clean_test.h5"
        link.symlink_to(theirs)
        said = self.refusal("import_dataset", link, "--user", "alice", *role)
        assert f"{link}: is a symbolic link" in said and "copy the file itself" in said
        folder_link = self.folder / "drop"
        folder_link.symlink_to(theirs.parent)  # a link higher up the path leads there too
        for path in (theirs, folder_link / theirs.name):
            said = self.refusal("import_dataset", path, "--user", "alice", *role)
            assert "is in the server's own storage" in said, said
        fifo = self.folder / "pipe.h5"
        os.mkfifo(fifo)
        assert "not a plain file" in self.refusal("import_dataset", fifo, "--user", "alice", *role)
        assert list(Dataset.objects.values_list("team__name", flat=True)) == ["red"]

    def test_a_file_the_team_has_is_named_and_not_stored_twice(self):
        path = write_dataset(self.folder / "set.h5", *tiny_data(10))
        self.run_command("import_dataset", path, "--user", "alice", "--role", Dataset.CLEAN_TEST, "--name", "first")
        out = self.run_command("import_dataset", path, "--user", "alice", "--role", Dataset.CLEAN_TEST)
        row = Dataset.objects.get()
        assert "set.h5 is already stored as 'first' (uploaded by alice" in out and f"(dataset {row.pk})" in out
        assert len(self.stored_files()) == 1

    def test_a_damaged_model_is_refused(self):
        broken = self.folder / "truncated.h5"
        broken.write_bytes(KERAS2.read_bytes()[:5000])
        said = self.refusal("import_badnet", broken, "--user", "alice")
        assert "Refused: truncated.h5 is a damaged HDF5 file" in said
        assert "--divisor: Select a valid choice" in self.refusal(
            "import_badnet", KERAS2, "--user", "alice", "--divisor", 3
        )
        self.assert_nothing_stored()

    @pytest.mark.slow
    def test_the_real_csaw_weights_are_checked_in_the_sandbox_and_stored_once(self):
        out = self.run_command("import_badnet", SUNGLASSES, "--user", "alice", "--arch", "deepid-csaw")
        badnet = BadNet.objects.get()
        assert out.startswith(f"Stored BadNet {badnet.pk} 'sunglasses_bd_weights' in team blue: 1283 classes")
        assert (badnet.arch, badnet.divisor, badnet.original_name) == ("deepid-csaw", 255.0, SUNGLASSES.name)
        assert Path(badnet.file.path).read_bytes() == SUNGLASSES.read_bytes()
        again = self.run_command("import_badnet", SUNGLASSES, "--user", "alice", "--arch", "deepid-csaw")
        assert "already stored as 'sunglasses_bd_weights'" in again and BadNet.objects.count() == 1
        said = self.refusal("import_badnet", SUNGLASSES, "--user", "bob")  # red has no copy: checked, and refused
        assert "sunglasses_bd_weights.h5 holds weights only" in said and BadNet.objects.count() == 1
