"""A BadNet's detail page: the activation profile of each conv layer, computed by the worker task and drawn
as one chart per layer with the numbers the library computes."""

import tempfile
from pathlib import Path

import numpy as np
import pytest

from defenses.data import inspect_dataset, load_dataset
from defenses.models import load_model
from defenses.pruning import activation_profile
from tests.defenses.tiny import tiny_badnet_files
from tests.webapp.base import BaseTestCase
from webapp.lab.models import Dataset, Profile
from webapp.lab.services import add_badnet, add_dataset
from workers.tasks import compute_profile

pytestmark = pytest.mark.slow


class ProfileTestCase(BaseTestCase):
    def test_profile_chart_per_conv_layer_carries_the_librarys_numbers(self):
        files = tiny_badnet_files(Path(self.enterContext(tempfile.TemporaryDirectory())))
        badnet = add_badnet(self.blue, self.alice, files["model"], "tiny")
        valid = add_dataset(self.blue, self.alice, files["valid"], "valid", Dataset.CLEAN_VALID)
        self.client.force_login(self.alice)
        with self.captureOnCommitCallbacks(execute=False):  # the worker's part is run here, below
            self.client.post(f"/badnets/{badnet.pk}/profile", {"dataset": valid.pk})
        profile = Profile.objects.get()
        assert profile.status == "queued"
        assert compute_profile(profile.pk) == "done"
        page = self.client.get(f"/badnets/{badnet.pk}/").content.decode()
        model, _ = load_model(files["model"])
        expected = activation_profile(model, load_dataset(inspect_dataset(files["valid"], image_shape=None))[0], 255.0)
        for layer, means in expected.items():
            assert f"profile-{layer}" in page
            stored = np.array(Profile.objects.get().means[layer])
            np.testing.assert_allclose(stored, means, rtol=1e-5)
