"""The JSON API with token auth: the pages' objects and rules, for scripts and CI."""

import tempfile
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token

from tests.defenses.tiny import tiny_data, write_dataset
from tests.webapp.base import BaseTestCase
from tests.webapp.test_experiment import GRID, grid_metrics
from webapp.lab.models import Dataset, Experiment


class ApiTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.auth = {"HTTP_AUTHORIZATION": f"Token {Token.objects.create(user=self.alice).key}"}

    def test_a_token_is_needed(self):
        anonymous = self.client.get("/api/badnets/")
        assert anonymous.status_code == 401 and anonymous["WWW-Authenticate"] == "Token"
        assert self.client.get("/api/badnets/", HTTP_AUTHORIZATION="Token nope").status_code == 401
        assert self.client.get("/api/badnets/", **self.auth).json() == {
            "count": 0,
            "next": None,
            "previous": None,
            "results": [],
        }

    def test_a_dataset_upload_is_validated_like_the_page(self):
        folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        good = write_dataset(folder / "valid.h5", *tiny_data(12))
        form = {"name": "v", "role": Dataset.CLEAN_VALID, "file": SimpleUploadedFile("valid.h5", good.read_bytes())}
        created = self.client.post("/api/datasets/", form, **self.auth)
        assert created.status_code == 201 and created.json()["count"] == 12 and created.json()["team"] == self.blue.pk
        form["file"] = SimpleUploadedFile("bad.h5", b"not hdf5")
        refused = self.client.post("/api/datasets/", form, **self.auth)
        assert (
            refused.status_code == 400
            and "bad.h5 is not a readable HDF5" in refused.json()["errors"]["file"][0]["message"]
        )
        assert self.client.post("/api/datasets/", form | {"team": self.red.pk}, **self.auth).status_code == 404
        assert Dataset.objects.count() == 1

    def test_submit_status_and_results(self):
        template = self.experiment(GRID)
        payload = {
            "name": "api",
            "badnet": template.badnet.pk,
            "valid": template.valid.pk,
            "test": template.test.pk,
            "poisoned": [template.poisoned.get().pk],
            "thresholds": [0.5, 1.0],
            "learning_rates": [0.001, 0.01],
            "epochs": [1, 2],
        }
        created = self.client.post("/api/experiments/", payload, content_type="application/json", **self.auth)
        assert created.status_code == 201, created.json()
        body = created.json()
        assert len(body["runs"]) == 4 and {run["status"] for run in body["runs"]} == {"queued"}
        experiment = Experiment.objects.get(pk=body["id"])
        self.finish(experiment, grid_metrics)
        results = self.client.get(f"/api/experiments/{experiment.pk}/results/", **self.auth).json()
        assert results["finished"] and len(results["points"]) == 8
        point = next(p for p in results["points"] if (p["threshold"], p["lr"], p["epochs"]) == (1.0, 0.01, 2))
        assert (point["ca"], point["asr sunglasses"], point["score"]) == (
            83.0,
            20.0,
            81.5,
        )  # grid_metrics at T 1, LR 0.01, 2 epochs

    def test_a_search_needs_no_grid_values_and_its_results_say_what_was_held_out(self):
        template = self.experiment(GRID)
        payload = {
            "name": "api search",
            "badnet": template.badnet.pk,
            "valid": template.valid.pk,
            "test": template.test.pk,
            "poisoned": [template.poisoned.get().pk],
            "budget": 10,
            "holdout": 25,
        }
        with self.captureOnCommitCallbacks(execute=False):
            created = self.client.post("/api/experiments/", payload, content_type="application/json", **self.auth)
        assert created.status_code == 201, created.json()
        experiment = Experiment.objects.get(pk=created.json()["id"])
        assert experiment.space["search"] == {"budget": 10} and experiment.space["holdout"] == 0.25
        self.finish(experiment, grid_metrics)
        results = self.client.get(f"/api/experiments/{experiment.pk}/results/", **self.auth).json()
        assert results["search"]["status"] == "done" and results["search"]["budget"] == 10
        assert len(results["search"]["trials"]) == 1 and results["points"][0]["held_out"] == "25%"
        assert "read on a held-out 25% of the clean validation set" in results["rule"]

    def test_invalid_submissions_say_what_is_wrong(self):
        template = self.experiment(GRID)
        payload = {
            "name": "api",
            "badnet": template.badnet.pk,
            "valid": template.valid.pk,
            "test": template.test.pk,
            "poisoned": [],
            "thresholds": [5],
            "learning_rates": [0.001],
            "epochs": [1],
        }
        refused = self.client.post("/api/experiments/", payload, content_type="application/json", **self.auth)
        errors = refused.json()["errors"]
        assert refused.status_code == 400 and "between 0 and 2" in errors["thresholds"][0]["message"]

    def test_the_openapi_schema_describes_the_endpoints(self):
        schema = self.client.get("/api/schema/", HTTP_ACCEPT="application/json", **self.auth).json()
        assert {"/api/badnets/", "/api/experiments/{id}/results/", "/api/classify/"} <= set(schema["paths"])
        assert "tokenAuth" in schema["components"]["securitySchemes"]
