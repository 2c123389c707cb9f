"""Issue 13: datasets record their image size and label range (so a set is fitted to a BadNet without reading
its file), and experiments their clean-accuracy floor (default 5 points).

Sets stored before this are read once here, through the same door as an upload (inspect_dataset: structure and
labels, no pixels); a set that the door refuses now keeps empty fields, its page says why and `manage.py
audit_files` lists it. Reversible: going back drops the new columns.
"""

from django.db import migrations, models


def record_dataset_facts(apps, schema_editor):
    from defenses.data import DataError, inspect_dataset
    from webapp.lab.limits import dataset_limits

    Dataset = apps.get_model("lab", "Dataset")
    for dataset in Dataset.objects.filter(height__isnull=True):
        try:
            info = inspect_dataset(dataset.file.path, image_shape=None, limits=dataset_limits())
        except (DataError, OSError):
            continue
        # webapp.lab.services.dataset_facts, frozen
        dataset.height, dataset.width = info.image_shape[0], info.image_shape[1]
        dataset.label_min, dataset.label_max = int(info.labels.min()), int(info.labels.max())
        dataset.classes_present = len(set(info.labels.tolist()))
        dataset.save(update_fields=["height", "width", "label_min", "label_max", "classes_present"])


class Migration(migrations.Migration):
    dependencies = [
        ("lab", "0003_runs_per_team"),
    ]

    operations = [
        migrations.AddField(
            model_name="dataset",
            name="classes_present",
            field=models.PositiveIntegerField(help_text="distinct labels in the set", null=True),
        ),
        migrations.AddField(
            model_name="dataset",
            name="height",
            field=models.PositiveIntegerField(null=True),
        ),
        migrations.AddField(
            model_name="dataset",
            name="label_max",
            field=models.IntegerField(null=True),
        ),
        migrations.AddField(
            model_name="dataset",
            name="label_min",
            field=models.IntegerField(null=True),
        ),
        migrations.AddField(
            model_name="dataset",
            name="width",
            field=models.PositiveIntegerField(null=True),
        ),
        migrations.AddField(
            model_name="experiment",
            name="max_ca_drop",
            field=models.FloatField(default=5.0),
        ),
        migrations.RunPython(record_dataset_facts, migrations.RunPython.noop),
    ]
