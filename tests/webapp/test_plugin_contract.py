"""The plug-in contract (issue 14): a defense is one module. A toy defense registered here, with no other
edit, appears in the experiment form and the API schema, runs (the real task, in this process) and has its
chart."""

import re
import tempfile
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from defenses.jobs import Job, Plan
from defenses.methods import Column, JobKind, Method, Parameter, Versus, register, unregister, values
from tests.defenses.tiny import tiny_badnet_files
from tests.lab.factories import experiment_row, team_with_user
from webapp.celery_app import EXECUTE_RUN, task
from webapp.lab.models import Experiment, Run

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

STRENGTHS = Parameter("strengths", "Toy strengths", float, (0.5,), 0.0, 1.0, help="how hard the toy tries")


def run_toy(loaded, config, report_point, should_stop=None, artifact_dir=None):
    """The BadNet's own numbers, as if the toy had done nothing, at its one position."""
    from defenses.metrics import evaluate, percent_equal, predict_labels

    metrics = evaluate(loaded.bad, loaded.divisor, loaded.clean, loaded.poisoned).as_dict()
    valid = percent_equal(predict_labels(loaded.bad, loaded.valid[0], loaded.divisor), loaded.valid[1])
    report_point(0, metrics | {"valid_acc": valid, "before": loaded.baseline(), "strength": config["strength"]})


def plan_toy(space: dict) -> Plan:
    jobs = [Job("toy-job", {"strength": strength}) for strength in values(space, STRENGTHS)]
    return Plan(jobs, {(job.config["strength"],): (index, 0) for index, job in enumerate(jobs)})


TOY = Method(
    name="toy",
    title="Toy",
    paper="none: a test's",
    summary="does nothing, at several strengths",
    parameters=(STRENGTHS,),
    columns=(Column("strength", "toy strength", "s {}"),),
    plan=plan_toy,
    charts=(Versus("strength"),),
    jobs=(JobKind("toy-job", run_toy, positions=lambda config, report: 1, describe=lambda c: f"toy {c['strength']}"),),
)


@pytest.fixture
def toy():
    register(TOY)
    yield TOY
    unregister("toy")


def test_a_registered_defense_is_in_the_form_the_schema_a_run_and_a_chart(toy, client):
    team, user = team_with_user()
    template = experiment_row(team, user, tiny_badnet_files(Path(tempfile.mkdtemp()) / "tiny"), {"epochs": [1]})
    client.force_login(user)

    form = client.get("/experiments/new/").content.decode()
    assert re.search(r'<option value="toy">toy: does nothing', form)
    assert 'name="strengths"' in form and 'data-methods="toy"' in form

    token = {"HTTP_AUTHORIZATION": f"Token {Token.objects.create(user=user).key}"}
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json", **token).json()
    body = schema["components"]["schemas"]["ExperimentCreate"]["properties"]
    assert "toy" in body["defense"]["enum"] and body["strengths"]["items"]["maximum"] == 1.0

    payload = {"name": "toy study", "defense": "toy", "strengths": [0.2, 0.9], "badnet": template.badnet.pk}
    payload |= {"valid": template.valid.pk, "test": template.test.pk, "poisoned": [template.poisoned.get().pk]}
    created = client.post("/api/experiments/", payload, content_type="application/json", **token)
    assert created.status_code == 201, created.json()
    experiment = Experiment.objects.get(name="toy study")
    assert experiment.space == {"defense": "toy", "strengths": [0.2, 0.9], "holdout": 0.2}  # the API's default
    for run in experiment.runs.all():
        assert task(EXECUTE_RUN)(run.pk) == "done"  # the worker's task, run here
    assert set(experiment.runs.values_list("status", flat=True)) == {Run.DONE}

    charts = client.get(f"/experiments/{experiment.pk}/figures").json()["charts"]
    ca = next(t for t in charts["vs-strength"]["figure"]["data"] if t["name"].startswith("CA"))
    assert ca["x"] == [0.2, 0.9] and ca["y"][0] == ca["y"][1] > 80  # the untouched tiny BadNet's CA, twice
    page = client.get(f"/experiments/{experiment.pk}/").content.decode()
    assert "toy 0.2" in page  # the run's configuration in the toy's own words
