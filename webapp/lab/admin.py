from django.contrib import admin

from webapp.lab import models

admin.site.register(models.Team)
admin.site.register(models.Membership)
admin.site.register(models.BadNet, list_display=["name", "team", "n_classes", "arch", "divisor", "created"])
admin.site.register(models.Dataset, list_display=["name", "team", "role", "trigger", "target", "count"])
admin.site.register(models.Experiment, list_display=["name", "team", "badnet", "queue", "created"])
admin.site.register(models.Run, list_display=["pk", "kind", "status", "progress", "attempts", "worker", "created"])
# unfinished uploads; deleting a row here leaves its file to `manage.py expire_uploads`
admin.site.register(models.Upload, list_display=["filename", "owner", "team", "kind", "offset", "length", "updated"])
