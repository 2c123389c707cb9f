"""schemathesis against the API: /api/schema/ (drf-spectacular) is loaded from the WSGI app, and requests are
generated for every operation, valid and invalid ones (hypothesis, deterministic), with the token of a user
whose team has a few rows. No answer may be a 5xx: every bad input is a 400 (or 401/404/405) that says why."""

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.webapp.base import BaseTestCase
from tests.webapp.test_experiment import GRID, grid_metrics
from webapp.lab.models import GoodNet

pytestmark = pytest.mark.slow  # about a minute: several hundred requests through the whole stack

# per operation and generation mode: about 1,500 requests in all, 20-30 s on 2 cores
EXAMPLES = 40


class ApiSchemaFuzzTestCase(BaseTestCase):
    def setUp(self):
        super().setUp()
        experiment = self.experiment(GRID)  # a BadNet, four datasets, an experiment ...
        runs = self.finish(experiment, grid_metrics)  # ... its finished runs and a GoodNet of one
        goodnet = GoodNet.objects.create(
            team=self.blue, owner=self.alice, name="g", badnet=experiment.badnet, run=runs[0], sha256="g" * 64
        )
        # every {id} is also tried with a row of the team, so details, results and cancel do real work (valid
        # requests only: with the path fixed, a GET has nothing left to make invalid)
        self.rows = {
            "/api/badnets/": experiment.badnet.pk,
            "/api/datasets/": experiment.valid.pk,
            "/api/experiments/": experiment.pk,
            "/api/goodnets/": goodnet.pk,
        }
        self.headers = {"Authorization": f"Token {Token.objects.create(user=self.alice).key}"}
        # Django's WSGI handler closes the database connection after each request, which would end this test's
        # transaction; the test client disconnects the same handlers for the same reason.
        for signal in (request_started, request_finished):
            signal.disconnect(close_old_connections)
            self.addCleanup(signal.connect, close_old_connections)

    def test_no_operation_answers_with_a_server_error(self):
        schema = schemathesis.openapi.from_wsgi("/api/schema/", WSGIHandler(), headers=self.headers)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 8  # lists, details, create, results, cancel, classify
        for operation in operations:
            strategies = [operation.as_strategy(mode) for mode in GenerationMode]
            if "{id}" in operation.path:
                row = {"id": self.rows[operation.path.split("{id}")[0]]}
                strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=row))
            for strategy in strategies:

                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    derandomize=True,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=strategy)
                def check(case):
                    response = case.call(headers=self.headers)
                    case.validate_response(response, checks=[not_a_server_error], headers=self.headers)

                check()
