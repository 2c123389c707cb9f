"""The JSON API (token or session auth): the same objects and rules as the pages. Input is validated by the
pages' own forms and stored by the same services, so a rule lives in one place; serializers only shape
output. Every query is limited to the caller's teams: another team's row is a 404."""

from collections.abc import Mapping

from django.db.models import QuerySet
from django.http import QueryDict
from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action, api_view, throttle_classes
from rest_framework.exceptions import APIException, NotFound
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter

from defenses.data import DataError
from defenses.methods import LAYERS, METHODS, PARAMETERS
from defenses.modelcheck import ModelRefused
from webapp.core.throttles import ClassifyThrottle
from webapp.lab import budgets, inference, tus
from webapp.lab.access import first_team, teams_of
from webapp.lab.forms import HOLDOUT_PERCENT, MAX_SEARCH_BUDGET, BadNetForm, ClassifyForm, DatasetForm, ExperimentForm
from webapp.lab.models import BadNet, Dataset, Experiment, GoodNet, Run, Team
from webapp.lab.parsing import MAX_POINTS, as_text
from webapp.lab.results import experiment_rows, experiment_selection, progress
from webapp.lab.services import AlreadyStored, cancel, create_experiment, store_badnet, store_dataset


class BadNetSerializer(serializers.ModelSerializer):
    class Meta:
        model = BadNet
        fields = ["id", "team", "name", "original_name", "sha256", "arch", "divisor", "n_classes", "report", "created"]


class DatasetSerializer(serializers.ModelSerializer):
    class Meta:
        model = Dataset
        fields = [
            "id",
            "team",
            "name",
            "role",
            "trigger",
            "target",
            "original_name",
            "sha256",
            "count",
            "height",
            "width",
            "label_min",
            "label_max",
            "classes_present",
            "created",
        ]


class RunSerializer(serializers.ModelSerializer):
    class Meta:
        model = Run
        fields = [
            "id",
            "team",
            "kind",
            "config",
            "queue",
            "status",
            "progress",
            "attempts",
            "worker",
            "error",
            "started_at",
            "finished_at",
        ]


class ExperimentSerializer(serializers.ModelSerializer):
    runs = RunSerializer(many=True, read_only=True)
    owner = serializers.CharField(source="owner.username", read_only=True)

    class Meta:
        model = Experiment
        fields = [
            "id",
            "team",
            "owner",
            "name",
            "badnet",
            "valid",
            "test",
            "poisoned",
            "space",
            "max_ca_drop",
            "queue",
            "runs",
            "created",
        ]


class GoodNetSerializer(serializers.ModelSerializer):
    class Meta:
        model = GoodNet
        fields = ["id", "team", "name", "badnet", "run", "original_name", "sha256", "created"]


def already_stored(duplicate, serializer) -> Response:
    """409: the team already has this file; the answer carries the stored row."""
    return Response(
        {
            "errors": {"file": [{"message": str(duplicate), "code": "already-stored"}]},
            "existing": serializer(duplicate.row).data,
        },
        status=status.HTTP_409_CONFLICT,
    )


def form_error(form) -> Response:
    return Response({"errors": form.errors.get_json_data()}, status=status.HTTP_400_BAD_REQUEST)


TEAM_PARAMETER = OpenApiParameter(
    "team",
    int,
    description="The id of one of your teams (the `team` field of your rows). Create calls store into "
    "it (default: the team you joined first; also accepted as a form or JSON field); other calls see only its rows. A "
    "malformed id is a 400, a team you are not in a 404.",
)


class BadTeam(APIException):
    """A `team` value that is not one team id: 400, in the same shape as a form's errors."""

    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, message: str):
        super().__init__({"errors": {"team": [{"message": message, "code": "invalid"}]}})


def team_for(request, default_first: bool = True) -> Team | None:
    """The team the request acts for, the one place the API decides it: the `team` named in the body (form or
    JSON) or the query string, else the team the caller joined first (None when not `default_first`). A malformed
    value is a 400 (BadTeam) and a team the caller is not in, or no such team, a 404, each with a reason."""
    data = request.data if isinstance(request.data, Mapping) else {}
    where, wanted = "field", data.get("team")
    if isinstance(data, QueryDict) and len(data.getlist("team")) > 1:
        raise BadTeam("Give one team, not several.")
    if wanted in (None, ""):
        if len(request.query_params.getlist("team")) > 1:
            raise BadTeam("Give one team, not several.")
        where, wanted = "parameter", request.query_params.get("team")
    teams = teams_of(request.user)
    if wanted in (None, ""):
        if not default_first:
            return None
        team = first_team(request.user)
        if team is None:
            raise NotFound(
                "You belong to no team yet: create one on the Teams page, or ask a team admin to invite you."
            )
        return team
    if (
        isinstance(wanted, bool)
        or not (isinstance(wanted, int) or (isinstance(wanted, str) and wanted.isascii() and wanted.isdigit()))
        or len(str(wanted)) > 18
    ):
        shown = repr(wanted) if len(repr(wanted)) <= 40 else f"{repr(wanted)[:37]}..."
        raise BadTeam(
            f"The team {where} is {shown}: give the id (a whole number) of one of your teams, as the "
            "`team` field of your rows shows it."
        )
    team = teams.filter(pk=int(wanted)).first()
    if team is None:
        raise NotFound(f"You are not a member of team {int(wanted)}, or there is no such team.")
    return team


@extend_schema(parameters=[TEAM_PARAMETER])
class TeamScoped(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Rows of the caller's teams, or of the one team that `?team=ID` names."""

    def get_queryset(self) -> QuerySet:
        team = team_for(self.request, default_first=False)
        rows = self.queryset.filter(team=team) if team else self.queryset.filter(team__in=teams_of(self.request.user))
        return rows.order_by("-pk")


UPLOAD_HELP = (
    "The id of a finished resumable upload of yours in this team, instead of `file`: send big files (up to "
    "the server's Tus-Max-Size) with any tus 1.0.0 client to /api/uploads/ (tuspy: TusClient(url, headers="
    "{'Authorization': 'Token <key>'}).uploader(path, chunk_size=8 * 2**20, metadata={'filename': name, 'kind': "
    "KIND}).upload()), then give the last part of its URL here. The upload is used up by this call, stored or "
    "refused. A path on the server is never taken."
)
FILE_HELP = "The file itself (multipart), up to the server's upload limit; or give `upload` instead."


def create_body(name: str, kind: str, fields: dict) -> dict:
    """The request body of a create call: the file sent along (multipart), or a finished upload's id (any)."""
    help_text = UPLOAD_HELP.replace("KIND", repr(kind))
    sent = {
        "file": serializers.FileField(required=False, help_text=FILE_HELP),
        "upload": serializers.UUIDField(required=False, help_text=help_text),
    }
    team = {"team": serializers.IntegerField(required=False, help_text=TEAM_PARAMETER.description)}
    multipart = inline_serializer(f"{name}Upload", sent | fields | team)
    upload = {"upload": serializers.UUIDField(help_text=help_text)}
    referenced = inline_serializer(f"{name}FromUpload", upload | fields | team)
    return {"multipart/form-data": multipart, "application/json": referenced}


BADNET_FIELDS = {
    "name": serializers.CharField(max_length=100),
    "arch": serializers.ChoiceField(choices=["", "deepid-csaw"], required=False),
    "divisor": serializers.ChoiceField(choices=BadNet.SCALES, required=False, help_text="input scaling: 255 or 1"),
}
DATASET_FIELDS = {
    "name": serializers.CharField(max_length=100),
    "role": serializers.ChoiceField(choices=Dataset.ROLES),  # the model's own choices: one enum in the schema
    "trigger": serializers.CharField(max_length=60, required=False, help_text="poisoned sets: the trigger's name"),
    "target": serializers.IntegerField(required=False, min_value=0, help_text="poisoned sets: the attacker's label"),
    "badnet": serializers.IntegerField(required=False, help_text="check image size and labels against this BadNet"),
}


@extend_schema(methods=["POST"], request=create_body("BadNet", "badnet", BADNET_FIELDS))
class BadNetViewSet(mixins.CreateModelMixin, TeamScoped):
    """BadNets. POST multipart: name, file, arch ('' or 'deepid-csaw'), divisor (255 or 1); or, for a big file,
    `upload` (a finished resumable upload's id) in place of `file`, as multipart or JSON."""

    queryset = BadNet.objects.all()
    serializer_class = BadNetSerializer

    def create(self, request, *args, **kwargs):
        team = team_for(request)
        form = BadNetForm(request.data, request.FILES, team=team, user=request.user)
        try:
            badnet = form.is_valid() and store_badnet(form, team, request.user)
        except AlreadyStored as duplicate:
            return already_stored(duplicate, BadNetSerializer)
        if not badnet:
            return form_error(form)
        return Response(BadNetSerializer(badnet).data, status=status.HTTP_201_CREATED)


@extend_schema(methods=["POST"], request=create_body("Dataset", "dataset", DATASET_FIELDS))
class DatasetViewSet(mixins.CreateModelMixin, TeamScoped):
    """Datasets. POST multipart: name, file, role, trigger, target, badnet (optional: check against it); or, for
    a big file, `upload` (a finished resumable upload's id) in place of `file`, as multipart or JSON."""

    queryset = Dataset.objects.all()
    serializer_class = DatasetSerializer

    def create(self, request, *args, **kwargs):
        team = team_for(request)
        form = DatasetForm(team, request.data, request.FILES, user=request.user)
        try:
            dataset = form.is_valid() and store_dataset(form, team, request.user)
        except AlreadyStored as duplicate:
            return already_stored(duplicate, DatasetSerializer)
        if not dataset:
            return form_error(form)
        return Response(DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)


def experiment_form_data(payload) -> QueryDict:
    """API JSON as the page form's fields: a list for an axis parameter (thresholds, learning rates, ...) or
    for layers becomes the text the form reads; every defense's parameters are taken (defenses.methods)."""
    common = ("name", "badnet", "valid", "test", "defense", "max_ca_drop", "holdout", "budget", "queue")
    data = {key: payload.get(key) for key in common if payload.get(key) is not None}
    data.setdefault("defense", "fine-prune")
    data.setdefault("max_ca_drop", 5.0)
    data.setdefault("queue", "cpu")
    for name, parameter in PARAMETERS.items():
        value = payload.get(name)
        if isinstance(value, list | tuple):
            data[name] = as_text(value) if parameter.kind != LAYERS else ", ".join(map(str, value))
        elif value is not None:
            data[name] = str(value)
    form_data = QueryDict(mutable=True)
    form_data.update(data)
    poisoned = payload.get("poisoned") or []
    form_data.setlist("poisoned", [str(pk) for pk in (poisoned if isinstance(poisoned, list) else [poisoned])])
    return form_data


def parameter_schema(parameter) -> dict:
    """The JSON schema of one defense parameter: a list of numbers (an axis of the grid), one number, or
    conv layer names."""
    if parameter.kind == LAYERS:
        return {"type": "array", "items": {"type": "string"}, "description": parameter.help}
    number = {"type": "integer" if parameter.kind is int else "number", "maximum": parameter.high}
    number |= {"minimum": parameter.low} | ({"exclusiveMinimum": True} if parameter.low_open else {})  # OpenAPI 3.0
    used = ", ".join(m.name for m in METHODS.values() if parameter in m.parameters)
    described = {"description": f"{parameter.label} ({used}). {parameter.help}".strip()}
    return ({"type": "array", "items": number, "maxItems": MAX_POINTS} if parameter.axis else number) | described


def experiment_body_schema(result, generator, request, public):
    """drf-spectacular hook: the body of POST /api/experiments/, with every registered defense (defenses.methods)
    and its parameters, made when the schema is asked for (a defense registered later is in it too)."""
    common = {
        "name": {"type": "string", "maxLength": 100},
        "badnet": {"type": "integer"},
        "valid": {"type": "integer"},
        "test": {"type": "integer"},
        "poisoned": {"type": "array", "items": {"type": "integer"}},
        "defense": {"type": "string", "enum": list(METHODS), "default": "fine-prune"},
        "max_ca_drop": {"type": "number", "minimum": 0, "maximum": 100, "default": 5.0},
        "holdout": {
            "type": "number",
            "minimum": 5,
            "maximum": 50,
            "default": HOLDOUT_PERCENT,
            "description": "percent of the clean validation set held out from the repair; selection reads only it",
        },
        "budget": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_SEARCH_BUDGET,
            "description": "a search of the defense's parameters within this many fine-tuning-epoch units "
            "instead of the grid of the values given",
        },
        "queue": {"type": "string", "enum": [queue for queue, _ in Experiment.QUEUES]},
        "team": {"type": "integer"},
    }
    parameters = {name: parameter_schema(parameter) for name, parameter in PARAMETERS.items()}
    body = {"type": "object", "properties": common | parameters, "required": ["name", "badnet", "valid", "test"]}
    result.setdefault("components", {}).setdefault("schemas", {})["ExperimentCreate"] = body
    operation = result.get("paths", {}).get("/api/experiments/", {}).get("post")
    if operation is not None:
        reference = {"schema": {"$ref": "#/components/schemas/ExperimentCreate"}}
        operation["requestBody"] = {"content": {"application/json": reference}, "required": True}
    return result


class ExperimentViewSet(mixins.CreateModelMixin, TeamScoped):
    """Experiments. POST JSON: name, badnet, valid, test, poisoned [ids], defense (any of the registered
    defenses) and its parameters (e.g. fine-prune: thresholds [..], learning_rates [..], epochs [..],
    layers [..], seed; the schema lists every defense's), max_ca_drop (the clean-accuracy floor of the "best"
    choice, default 5 points), holdout (percent of the clean validation set only selection reads, default
    20), budget (search within this many fine-tuning-epoch units instead of the grid), queue; the runs are
    queued at once. Every set must fit the BadNet (image
    size, labels, target): a refusal names the set and why."""

    queryset = Experiment.objects.prefetch_related("runs")
    serializer_class = ExperimentSerializer

    def create(self, request, *args, **kwargs):
        team = team_for(request)
        form = ExperimentForm(team, experiment_form_data(request.data), user=request.user)
        if not form.is_valid():
            return form_error(form)
        try:
            experiment = create_experiment(team, request.user, form.cleaned_data)
        except budgets.OverBudget as refusal:  # another request took the budget since the form's check
            form.add_error(None, str(refusal))
            return form_error(form)
        return Response(ExperimentSerializer(experiment).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        responses=inline_serializer(
            "Results",
            {
                "rule": serializers.CharField(),
                "best": serializers.DictField(allow_null=True),
                "finished": serializers.BooleanField(),
                "points": serializers.ListField(),
            },
        )
    )
    @action(detail=True)
    def results(self, request, pk=None):
        """Every (T, LR, epochs) point with CA, ASR per trigger, score, held-out CA (`valid_acc`, read on
        `held_out` images) and the selection score; `best` is the point the experiment's rule chose (null when
        no point meets its clean-accuracy floor) and `rule` says the rule in words; a search adds `search`: its
        status, budget, units spent and trained, trials and the parameters' importance."""
        experiment = self.get_object()
        rows = experiment_rows(experiment)
        selection = experiment_selection(experiment, rows)
        body = {
            "rule": selection.rule,
            "best": selection.best,
            "finished": progress(experiment)["finished"],
            "points": rows,
        }
        if experiment.is_search:  # its state: budget, units, trials with their objective by epoch
            state = experiment.search
            body["search"] = {key: state.get(key) for key in ("status", "budget", "spent", "trained", "error")}
            body["search"]["trials"] = state.get("trials", [])
            body["search"]["importance"] = state.get("importance", {})
        return Response(body)

    @extend_schema(request=None, responses=inline_serializer("Cancelled", {"cancelled": serializers.IntegerField()}))
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return Response({"cancelled": cancel(self.get_object())})


class GoodNetViewSet(TeamScoped):
    queryset = GoodNet.objects.all()
    serializer_class = GoodNetSerializer


@extend_schema(
    request={
        "multipart/form-data": inline_serializer(
            "Classify",
            {
                "network": serializers.CharField(help_text="goodnet-ID or badnet-ID"),
                "images": serializers.ListField(child=serializers.FileField()),
                "sample_dataset": serializers.IntegerField(required=False),
                "sample_indices": serializers.CharField(required=False),
            },
        )
    },
    responses=inline_serializer("Answers", {"answers": serializers.ListField()}),
    parameters=[TEAM_PARAMETER],
)
@api_view(["POST"])
@throttle_classes([ClassifyThrottle])
def classify(request):
    """Classes in [0, N] for uploaded images (N: "poisoned" when a GoodNet answers)."""
    form = ClassifyForm(team_for(request), request.data, request.FILES)
    if not form.is_valid():
        return form_error(form)
    try:
        answers = inference.answers_for(form.cleaned_data)
    except (DataError, ModelRefused) as refusal:
        form.add_error(None, f"Refused: {refusal}")
        return form_error(form)
    return Response({"answers": [answer_json(a) for a in answers]})


def answer_json(answer: inference.Answer) -> dict:
    repaired = {"label": answer.repaired.label, "top": answer.repaired.top} if answer.repaired else None
    return {
        "image": answer.image,
        "label": answer.label,
        "poisoned": answer.poisoned,
        "note": answer.note,
        "bad": {"label": answer.bad.label, "top": answer.bad.top},
        "repaired": repaired,
    }


router = DefaultRouter()
router.register("badnets", BadNetViewSet)
router.register("datasets", DatasetViewSet)
router.register("experiments", ExperimentViewSet)
router.register("goodnets", GoodNetViewSet)

urlpatterns = [
    path("classify/", classify, name="api-classify"),
    path("uploads/", tus.Uploads.as_view(), name="uploads"),
    path("uploads/<uuid:pk>", tus.UploadDetail.as_view(), name="upload"),
    *router.urls,
]
