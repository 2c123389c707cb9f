"""Run.family: the run's key without its epoch count, so a longer run serves a shorter request. Runs stored
before this migration get theirs from the first experiment that links them (frozen copies of the formulas
of Run.key_for, Run.team_scoped and planner.Job.key as they are at this migration)."""

import hashlib
import json

from django.db import migrations, models

PREFIX_KINDS = ("finetune", "nad", "nc-unlearn", "ft-sam")


def metric_name(dataset) -> str:
    name = dataset.trigger or dataset.name
    return f"{name} (validation)" if dataset.role == "poisoned-valid" else name


def family_of(run, experiment) -> str:
    config = {name: value for name, value in run.config.items() if name != "epochs"}
    job_key = hashlib.sha256(json.dumps([run.kind, config], sort_keys=True).encode()).hexdigest()[:32]
    fingerprint = {
        "badnet": [experiment.badnet.sha256, experiment.badnet.arch, experiment.badnet.divisor],
        "valid": experiment.valid.sha256,
        "test": experiment.test.sha256,
        "poisoned": sorted([metric_name(d), d.sha256] for d in experiment.poisoned.all()),
    }
    work = hashlib.sha256(json.dumps([job_key, fingerprint], sort_keys=True).encode()).hexdigest()
    return hashlib.sha256(f"team {int(run.team_id)}: {work}".encode()).hexdigest()


def fill_families(apps, schema_editor):
    Run = apps.get_model("lab", "Run")
    for run in Run.objects.filter(kind__in=PREFIX_KINDS, family=""):
        experiment = run.experiments.filter(team_id=run.team_id).first()
        if experiment is not None:
            run.family = family_of(run, experiment)
            run.save(update_fields=["family"])


class Migration(migrations.Migration):
    dependencies = [
        ("lab", "0007_trigger_scans_strip"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="family",
            field=models.CharField(
                blank=True,
                db_index=True,
                help_text="the key without the epoch count (JobKind.epoch_prefix)",
                max_length=64,
            ),
        ),
        migrations.RunPython(fill_families, migrations.RunPython.noop),
    ]
