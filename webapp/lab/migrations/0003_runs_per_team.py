"""Issue 12: a run's key includes its team, and no experiment keeps a link to another team's run.

Before, the reuse key was the work alone (job + file hashes), so a team that uploaded the same public files
as another got the other team's runs linked to its experiment: it saw their results and its Cancel stopped
their work. This migration, chosen over leaving the old keys in place (with team-less keys every existing
experiment would find none of its runs under the new rule and look empty, and the next identical
experiment would compute everything again):

1. For each experiment linked to a run of another team, unlinks that run and links a run of the
   experiment's own team in its place, made *cancelled* with a reason: its results are not copied (that
   would share work across teams), and the experiment page's "Re-run failed and cancelled runs" computes
   it for the team. Its inputs are the experiment's own files.
2. Rewrites every pre-existing run's key to its team-scoped key, with the same formula as
   Run.team_scoped (frozen here: a migration must not change when the model does).

Not reversible: the team-less key cannot be told from the scoped one, and the copies' results were never
there to give back. Going back means restoring the database from before the upgrade.
"""

import hashlib
from pathlib import Path

from django.db import migrations, models
from django.utils import timezone

REASON = (
    "This run was shared with another team before Prunelab scoped runs to teams (issue 12); its results "
    "belong to that team. Press 'Re-run failed and cancelled runs' to compute it for this team."
)


def team_scoped(work_key: str, team_id: int) -> str:
    return hashlib.sha256(f"team {int(team_id)}: {work_key}".encode()).hexdigest()


def metric_name(dataset) -> str:
    name = dataset.trigger or dataset.name
    return f"{name} (validation)" if dataset.role == "poisoned-valid" else name


def inputs_of(experiment) -> dict:
    """webapp.lab.services.run_inputs, frozen."""
    poisoned = list(experiment.poisoned.all())
    files = [experiment.badnet, experiment.valid, experiment.test, *poisoned]
    return {
        "model": experiment.badnet.file.path,
        "arch": experiment.badnet.arch or None,
        "divisor": experiment.badnet.divisor,
        "valid": experiment.valid.file.path,
        "test": experiment.test.file.path,
        "poisoned": {metric_name(d): d.file.path for d in poisoned},
        "names": {Path(row.file.name).name: row.original_name for row in files},
    }


def scope_runs_to_teams(apps, schema_editor):
    Run = apps.get_model("lab", "Run")
    Experiment = apps.get_model("lab", "Experiment")
    before = {pk: (key, team_id) for pk, key, team_id in Run.objects.values_list("pk", "key", "team_id")}
    for experiment in Experiment.objects.select_related("badnet", "valid", "test").order_by("pk"):
        foreign = list(experiment.runs.exclude(team_id=experiment.team_id))
        for run in foreign:
            own, _ = Run.objects.get_or_create(
                key=team_scoped(before[run.pk][0], experiment.team_id),
                defaults={
                    "team_id": experiment.team_id,
                    "badnet_id": experiment.badnet_id,
                    "kind": run.kind,
                    "config": run.config,
                    "inputs": inputs_of(experiment),
                    "queue": experiment.queue,
                    "status": "cancelled",
                    "error": REASON,
                    "finished_at": timezone.now(),
                },
            )
            experiment.runs.remove(run)
            experiment.runs.add(own)
    for pk, (key, team_id) in before.items():
        Run.objects.filter(pk=pk).update(key=team_scoped(key, team_id))


class Migration(migrations.Migration):
    dependencies = [("lab", "0002_goodnets_profiles")]

    operations = [
        migrations.AlterField(
            model_name="run",
            name="key",
            field=models.CharField(
                help_text="job key + data fingerprint + team: the reuse rule", max_length=64, unique=True
            ),
        ),
        migrations.RunPython(scope_runs_to_teams, elidable=False),  # no reverse: see the docstring
    ]
