from django.apps import AppConfig


class LabConfig(AppConfig):
    name = "webapp.lab"
    label = "lab"
    verbose_name = "Prunelab"

    def ready(self):
        from django.conf import settings

        from defenses.models import remember_verdicts

        remember_verdicts(settings.MODEL_VERDICT_DIR)
