from django.urls import path

from webapp.lab.views import compare, deletion, experiments, files, goodnets, runs, teams

urlpatterns = [
    path("teams/", teams.teams, name="teams"),
    path("teams/<int:team_id>/", teams.team, name="team"),
    path("teams/<int:team_id>/switch", teams.switch_team, name="switch-team"),
    path("teams/<int:team_id>/invitation", teams.answer_invitation, name="answer-invitation"),
    path("teams/<int:team_id>/leave", teams.leave_team, name="leave-team"),
    path("teams/<int:team_id>/members/<int:user_id>/remove", teams.remove_member, name="remove-member"),
    path("teams/<int:team_id>/members/<int:user_id>/admin", teams.make_admin, name="make-admin"),
    path("token/", teams.api_token, name="api-token"),
    path("demo-status", teams.demo_status, name="demo-status"),
    path("badnets/", files.badnets, name="badnets"),
    path("badnets/<int:pk>/", files.badnet, name="badnet"),
    path("badnets/<int:pk>/profile", files.badnet_profile, name="badnet-profile"),
    path("badnets/<int:pk>/profiles", files.badnet_profiles, name="badnet-profiles"),
    path("datasets/", files.datasets, name="datasets"),
    path("datasets/<int:pk>/", files.dataset, name="dataset"),
    path("datasets/<int:pk>/preview.png", files.dataset_preview, name="dataset-preview"),
    path("experiments/", experiments.experiments, name="dashboard"),
    path("experiments/new/", experiments.new_experiment, name="new-experiment"),
    path("experiments/plan", experiments.plan_preview, name="plan-preview"),
    path("experiments/<int:pk>/", experiments.experiment, name="experiment"),
    path("experiments/<int:pk>/progress", experiments.experiment_progress, name="experiment-progress"),
    path("experiments/<int:pk>/figures", experiments.experiment_figures, name="experiment-figures"),
    path("experiments/<int:pk>/charts/<slug:slug>.csv", experiments.chart_csv, name="chart-csv"),
    path("experiments/<int:pk>/points.csv", experiments.experiment_export, {"fmt": "csv"}, name="experiment-csv"),
    path("experiments/<int:pk>/points.json", experiments.experiment_export, {"fmt": "json"}, name="experiment-json"),
    path("experiments/<int:pk>/cancel", experiments.experiment_cancel, name="experiment-cancel"),
    path("experiments/<int:pk>/rerun", experiments.experiment_rerun, name="experiment-rerun"),
    path("runs/<int:pk>/", runs.run, name="run"),
    path("runs/<int:pk>/points.csv", runs.run_csv, name="run-csv"),
    path("runs/<int:pk>/repaired.keras", runs.run_repaired, name="run-repaired"),
    path("compare/", compare.compare, name="compare"),
    path("goodnets/", goodnets.goodnets, name="goodnets"),
    path("goodnets/from-run", goodnets.goodnet_from_run, name="goodnet-from-run"),
    path("goodnets/upload", goodnets.goodnet_upload, name="goodnet-upload"),
    path("goodnets/<int:pk>/bundle.zip", goodnets.goodnet_bundle, name="goodnet-bundle"),
    path("classify/", goodnets.classify, name="classify"),
    *[
        path(f"{kind}s/<int:pk>/delete", deletion.delete_row, {"kind": kind}, name=f"{kind}-delete")
        for kind in deletion.KINDS
    ],
]
