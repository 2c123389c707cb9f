from django.urls import path, register_converter
from django.urls.converters import IntConverter

from webapp.lab.views import compare, deletion, detection, experiments, files, goodnets, leaderboards, runs, teams


class RowIdConverter(IntConverter):
    """A row id: at most 18 digits, so an id past SQLite's and PostgreSQL's 64-bit integers is a 404, not an
    overflow inside the database driver (a 500)."""

    regex = "[0-9]{1,18}"


register_converter(RowIdConverter, "id")


class ChartFileConverter:
    """What a chart can be downloaded as from the server (webapp/lab/exports.py)."""

    regex = "csv|pdf"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(ChartFileConverter, "chartfile")

urlpatterns = [
    path("teams/", teams.teams, name="teams"),
    path("teams/<id:team_id>/", teams.team, name="team"),
    path("teams/<id:team_id>/switch", teams.switch_team, name="switch-team"),
    path("teams/<id:team_id>/invitation", teams.answer_invitation, name="answer-invitation"),
    path("teams/<id:team_id>/leave", teams.leave_team, name="leave-team"),
    path("teams/<id:team_id>/members/<id:user_id>/remove", teams.remove_member, name="remove-member"),
    path("teams/<id:team_id>/members/<id:user_id>/admin", teams.make_admin, name="make-admin"),
    path("token/", teams.api_token, name="api-token"),
    path("demo-status", teams.demo_status, name="demo-status"),
    path("badnets/", files.badnets, name="badnets"),
    path("badnets/<id:pk>/", files.badnet, name="badnet"),
    path("badnets/<id:pk>/profile", files.badnet_profile, name="badnet-profile"),
    path("badnets/<id:pk>/profiles", files.badnet_profiles, name="badnet-profiles"),
    path("badnets/<id:pk>/charts/<slug:slug>.<chartfile:fmt>", files.badnet_chart, name="badnet-chart"),
    path("badnets/<id:pk>/scan", detection.badnet_scan, name="badnet-scan"),
    path("badnets/<id:pk>/scans", detection.badnet_scans, name="badnet-scans"),
    path("datasets/", files.datasets, name="datasets"),
    path("datasets/<id:pk>/", files.dataset, name="dataset"),
    path("datasets/<id:pk>/preview.png", files.dataset_preview, name="dataset-preview"),
    path("datasets/<id:pk>/badnets", files.dataset_badnets, name="dataset-badnets"),
    path("experiments/", experiments.experiments, name="dashboard"),
    path("experiments/new/", experiments.new_experiment, name="new-experiment"),
    path("experiments/plan", experiments.plan_preview, name="plan-preview"),
    path("experiments/<id:pk>/", experiments.experiment, name="experiment"),
    path("experiments/<id:pk>/progress", experiments.experiment_progress, name="experiment-progress"),
    path("experiments/<id:pk>/figures", experiments.experiment_figures, name="experiment-figures"),
    path("experiments/<id:pk>/report", experiments.experiment_report, name="experiment-report"),
    path("experiments/<id:pk>/charts/<slug:slug>.<chartfile:fmt>", experiments.experiment_chart, name="chart"),
    path("experiments/<id:pk>/points.csv", experiments.experiment_export, {"fmt": "csv"}, name="experiment-csv"),
    path("experiments/<id:pk>/points.json", experiments.experiment_export, {"fmt": "json"}, name="experiment-json"),
    path("experiments/<id:pk>/cancel", experiments.experiment_cancel, name="experiment-cancel"),
    path("experiments/<id:pk>/rerun", experiments.experiment_rerun, name="experiment-rerun"),
    path("experiments/<id:pk>/tags", experiments.experiment_tags, name="experiment-tags"),
    path("experiments/<id:pk>/archive", experiments.experiment_archive, name="experiment-archive"),
    path("runs/<id:pk>/", runs.run, name="run"),
    path("runs/<id:pk>/points.csv", runs.run_csv, name="run-csv"),
    path("runs/<id:pk>/charts/<slug:slug>.pdf", runs.run_chart_pdf, name="run-chart-pdf"),
    path("runs/<id:pk>/network-at", runs.run_network_at, name="run-network-at"),
    path("runs/<id:pk>/repaired.keras", runs.run_repaired, name="run-repaired"),
    path("runs/<id:pk>/repaired-keras2.h5", runs.run_repaired_keras2, name="run-repaired-keras2"),
    path(
        "runs/<id:pk>/repaired-keras2-weights.h5",
        runs.run_repaired_keras2,
        {"weights": True},
        name="run-repaired-keras2-weights",
    ),
    path("badnets/<id:pk>/leaderboard", leaderboards.new_leaderboard, name="new-leaderboard"),
    path("leaderboards/<id:pk>/", leaderboards.leaderboard, name="leaderboard"),
    path("leaderboards/<id:pk>/table", leaderboards.leaderboard_table, name="leaderboard-table"),
    path("leaderboards/<id:pk>/goodnet", leaderboards.leaderboard_goodnet, name="leaderboard-goodnet"),
    path("compare/", compare.compare, name="compare"),
    path("goodnets/", goodnets.goodnets, name="goodnets"),
    path("goodnets/from-run", goodnets.goodnet_from_run, name="goodnet-from-run"),
    path("goodnets/upload", goodnets.goodnet_upload, name="goodnet-upload"),
    path("goodnets/<id:pk>/", goodnets.goodnet, name="goodnet"),
    path("goodnets/<id:pk>/strip", goodnets.goodnet_strip, name="goodnet-strip"),
    path("goodnets/<id:pk>/detector", goodnets.goodnet_detector, name="goodnet-detector"),
    path("goodnets/<id:pk>/charts/<slug:slug>.<chartfile:fmt>", goodnets.goodnet_chart, name="goodnet-chart"),
    path("goodnets/<id:pk>/bundle.zip", goodnets.goodnet_bundle, name="goodnet-bundle"),
    path("classify/", goodnets.classify, name="classify"),
    *[
        path(f"{kind}s/<id:pk>/delete", deletion.delete_row, {"kind": kind}, name=f"{kind}-delete")
        for kind in deletion.KINDS
    ],
]
