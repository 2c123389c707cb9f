"""Hostile values in forms, the live preview, query strings and API bodies: each is a 400 that says what was
wrong, never a 500, and a huge parameter grid is refused from its lengths before it is built (issue 12)."""

import h5py
import numpy as np
from django.core.files.base import ContentFile
from rest_framework.authtoken.models import Token

from tests.webapp.base import BaseTestCase
from webapp.lab.models import Dataset, Experiment

# 300 x 300 x 20 = 1.8 million points: every axis is under the cap, the product is not (it once took the
# server 22 s to build this grid before its size was checked, and /health/live waited behind it)
HUGE = {
    "thresholds": ", ".join(f"{i / 150:.4f}" for i in range(300)),
    "learning_rates": ", ".join(f"{(i + 1) / 300:.5f}" for i in range(300)),
    "epochs": ", ".join(str(i) for i in range(20)),
}
HUGE_MESSAGE = "This grid has 1,800,000 points"


class HostileInputTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        self.client.force_login(self.alice)
        self.auth = {"HTTP_AUTHORIZATION": f"Token {Token.objects.create(user=self.alice).key}"}
        self.valid, self.test = self.dataset(name="v"), self.dataset(Dataset.CLEAN_TEST, name="t")
        self.poisoned = self.dataset(Dataset.POISONED_TEST, name="p", trigger="sunglasses")
        self.net = self.badnet()

    def form_data(self, **changes) -> dict:
        data = {
            "name": "grid",
            "badnet": self.net.pk,
            "valid": self.valid.pk,
            "test": self.test.pk,
            "poisoned": [self.poisoned.pk],
            "defense": "fine-prune",
            "thresholds": "0.8, 1",
            "learning_rates": "0.001",
            "epochs": "3",
            "layers": "",
            "seed": 0,
            "max_drop": 4,
            "queue": "cpu",
        }
        return data | changes

    def api_payload(self, **changes) -> dict:
        data = self.form_data(**changes)
        for key in ("thresholds", "learning_rates", "epochs"):
            if key not in changes:
                data[key] = [float(v) if key != "epochs" else int(v) for v in data[key].split(",")]
        return data

    def post_api(self, url, body, **extra):
        return self.client.post(url, body, content_type="application/json", **self.auth, **extra)

    # 1. grid size from the lengths
    def test_a_huge_grid_is_refused_by_the_form_the_preview_and_the_api(self):
        page = self.client.post("/experiments/new/", self.form_data(**HUGE))
        assert page.status_code == 400 and HUGE_MESSAGE in page.content.decode()
        preview = self.client.post("/experiments/plan", self.form_data(**HUGE))
        assert HUGE_MESSAGE in preview.content.decode() and "points from" not in preview.content.decode()
        huge_lists = {key: [float(v) for v in text.split(",")] for key, text in HUGE.items()}
        api = self.post_api("/api/experiments/", self.api_payload(**huge_lists))
        assert api.status_code == 400 and HUGE_MESSAGE in api.json()["errors"]["__all__"][0]["message"]
        assert not Experiment.objects.exists()

    def test_an_axis_or_a_text_too_long_is_refused_before_its_values_are_made(self):
        for changes, message in [
            ({"thresholds": ",".join(["1"] * 401)}, "401 values for threshold; the limit is 400"),
            ({"epochs": "0:1000000000000:1"}, "more than 400 values"),
            ({"learning_rates": "1e-300:1:1e-300"}, "more than 400 values"),
            ({"thresholds": "-1e308:1e308:1"}, "more than 400 values"),  # overflows to inf
            ({"thresholds": "0:2"}, "is not a range like"),
            ({"thresholds": "1" * 9000}, "has 9,000 characters; the limit is 8,000"),
            ({"layers": "a," * 5000}, "has 10,000 characters; the limit is 8,000"),
        ]:
            response = self.client.post("/experiments/new/", self.form_data(**changes))
            assert response.status_code == 400 and message in response.content.decode(), changes

    def test_a_range_includes_its_stop_and_never_goes_past_it(self):
        data = self.form_data(thresholds="0:1:0.35", epochs="0")
        response = self.client.post("/experiments/plan", data)
        assert "<b>3</b> points" in response.content.decode()  # 0, 0.35, 0.7 (not 1.05)
        assert (
            "<b>11</b> points"
            in self.client.post("/experiments/plan", data | {"thresholds": "0:1:0.1"}).content.decode()
        )

    # 2. numbers that are not finite
    def test_infinite_and_nan_values_are_refused_in_the_form_preview_and_api(self):
        cases = [
            ("epochs", "inf", "'inf' is not a finite number"),
            ("epochs", "1e400", "'1e400' is not a finite"),
            ("thresholds", "nan", "'nan' is not a finite number"),
            ("learning_rates", "inf", "not a finite"),
            ("learning_rates", "0:nan:1", "not a finite number"),
            ("epochs", "-inf", "not a finite"),
        ]
        for field, value, message in cases:
            page = self.client.post("/experiments/new/", self.form_data(**{field: value}))
            assert page.status_code == 400 and message.replace("'", "&#x27;") in page.content.decode(), value
            preview = self.client.post("/experiments/plan", self.form_data(**{field: value}))
            assert preview.status_code == 200 and message.replace("'", "&#x27;") in preview.content.decode(), value
            api = self.post_api("/api/experiments/", self.api_payload(**{field: value}))
            assert api.status_code == 400 and message in api.json()["errors"][field][0]["message"], value
        # JSON has no inf or nan; a number too large for a float arrives as inf and is refused the same way
        api = self.post_api("/api/experiments/", '{"name": "x", "epochs": [1e400]}')
        assert api.status_code == 400 and "not a finite number" in api.json()["errors"]["epochs"][0]["message"]
        assert not Experiment.objects.exists()

    def test_a_huge_seed_is_refused(self):
        response = self.client.post("/experiments/new/", self.form_data(seed="9" * 20))
        assert response.status_code == 400 and "between 0 and 4294967295" in response.content.decode()

    # 2. JSON bodies that are not objects
    def test_every_post_endpoint_refuses_a_json_body_that_is_not_an_object(self):
        for url in ("/api/experiments/", "/api/badnets/", "/api/datasets/", "/api/classify/"):
            for body, kind in (("[]", "a list"), ('"abc"', "a string"), ("42", "a number"), ("null", "null")):
                response = self.post_api(url, body)
                assert response.status_code == 400, (url, body)
                assert response.json()["detail"].startswith(f"The JSON body is {kind}; send one object"), (url, body)

    def test_cancel_needs_no_body_and_refuses_one_that_is_not_an_object(self):
        # The body may name the team the call acts for (api.team_for), so it is parsed like any other.
        experiment = Experiment.objects.create(
            team=self.blue, owner=self.alice, name="e", badnet=self.net, valid=self.valid, test=self.test, space={}
        )
        response = self.post_api(f"/api/experiments/{experiment.pk}/cancel/", "")
        assert response.status_code == 200 and response.json() == {"cancelled": 0}
        response = self.post_api(f"/api/experiments/{experiment.pk}/cancel/", "[]")
        assert response.status_code == 400 and response.json()["detail"].startswith("The JSON body is a list")

    # 2. sample numbers
    def test_sample_numbers_outside_the_set_are_refused_on_the_page_and_the_api(self):
        data = {"network": f"badnet-{self.net.pk}", "sample_dataset": self.valid.pk}
        for indices, message in [
            ("-1", "Image numbers start at 0"),
            ("inf", "is not a finite number"),
            ("30", "v has 30 images, numbered 0 to 29; there is no image 30"),
            ("1, 1e9", "there is no image 1000000000"),
            (",".join(map(str, range(17))), "At most 16 image numbers"),
        ]:
            page = self.client.post("/classify/", data | {"sample_indices": indices})
            assert page.status_code == 400 and message.replace("'", "&#x27;") in page.content.decode(), indices
            api = self.client.post("/api/classify/", data | {"sample_indices": indices}, **self.auth)
            assert api.status_code == 400, indices
            assert message in api.json()["errors"]["sample_indices"][0]["message"], indices

    # 2. ids from query strings and forms
    def test_ids_from_query_strings_and_forms_that_are_not_row_numbers_are_a_400(self):
        for query in ("badnet=" + "9" * 20, "badnet=%C2%B2", "badnet=abc", "run=" + "9" * 20, "run=%C2%B2", "run=-1"):
            response = self.client.get(f"/compare/?{query}")
            assert response.status_code == 400 and "choose one from the list" in response.content.decode(), query
        assert self.client.get(f"/compare/?badnet={self.net.pk}").status_code == 200
        for dataset in ("9" * 20, "abc", ""):
            response = self.client.post(f"/badnets/{self.net.pk}/profile", {"dataset": dataset})
            assert response.status_code == 400 and "is not a valid dataset number" in response.content.decode(), dataset
        # pages whose ids travel in the path or through ModelChoiceField already answer 404 / 400
        assert self.client.get("/experiments/" + "9" * 20 + "/").status_code == 404
        assert self.client.get("/api/experiments/" + "9" * 20 + "/", **self.auth).status_code == 404
        assert self.client.post("/classify/", {"network": "goodnet-" + "9" * 20}).status_code == 400
        assert self.client.post("/classify/", {"sample_dataset": "9" * 20}).status_code == 400
        assert self.client.get("/experiments/new/?badnet=" + "9" * 20).status_code == 200
        response = self.client.post(
            "/datasets/", {"name": "x", "role": Dataset.POISONED_TEST, "trigger": "t", "target": "9" * 20}
        )
        assert response.status_code == 400 and "less than or equal to 2147483647" in response.content.decode()

    # 2. a stored set that cannot be drawn
    def test_the_preview_of_a_set_with_nan_pixels_is_a_400_that_says_why(self):
        folder = self.enterContext(__import__("tempfile").TemporaryDirectory())
        path = f"{folder}/nan.h5"
        with h5py.File(path, "w") as handle:
            handle["data"] = np.full((3, 3, 12, 10), np.nan, np.float32)
            handle["label"] = np.zeros(3, np.int64)
        with open(path, "rb") as handle:
            stored = Dataset.objects.create(
                team=self.blue,
                owner=self.alice,
                name="nan",
                role=Dataset.CLEAN_TEST,
                count=3,
                file=ContentFile(handle.read(), name="nan.h5"),
                original_name="nan.h5",
                sha256="n" * 64,
            )
        response = self.client.get(f"/datasets/{stored.pk}/preview.png")
        assert response.status_code == 400 and response["Content-Type"].startswith("text/plain")
        text = response.content.decode()
        assert text.startswith("No preview of nan: ") and "image 0 has pixel values that are NaN" in text

    # found by tests/webapp/test_api_schema_fuzz.py
    def test_list_pages_with_wild_limits_and_offsets_are_answered(self):
        for query in ("limit=25010620994324208287744&offset=-618", "offset=" + "9" * 30, "limit=-1&offset=%C2%B2"):
            response = self.client.get(f"/api/datasets/?{query}", **self.auth)
            assert response.status_code == 200 and response.json()["count"] == 3, query
        assert len(self.client.get("/api/datasets/?limit=" + "9" * 30, **self.auth).json()["results"]) == 3

    def test_an_id_beyond_64_bits_in_a_list_of_rows_is_not_a_choice(self):
        for poisoned in ([self.poisoned.pk, 10**30], [-(10**30)]):
            response = self.post_api("/api/experiments/", self.api_payload(poisoned=poisoned))
            message = response.json()["errors"]["poisoned"][0]["message"]
            assert response.status_code == 400 and "is not one of the available choices" in message, poisoned
        page = self.client.post("/experiments/new/", self.form_data(poisoned=["9" * 30]))
        assert page.status_code == 400 and "is not one of the available choices" in page.content.decode()
