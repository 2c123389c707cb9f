from django.contrib import admin
from rest_framework.authtoken.models import TokenProxy

from webapp.lab import models

admin.site.register(models.Team)
admin.site.register(models.Membership)
admin.site.register(models.BadNet, list_display=["name", "team", "n_classes", "arch", "divisor", "created"])
admin.site.register(models.Dataset, list_display=["name", "team", "role", "trigger", "target", "count"])
admin.site.register(models.Experiment, list_display=["name", "team", "badnet", "queue", "created"])
admin.site.register(models.Run, list_display=["pk", "kind", "status", "progress", "attempts", "worker", "created"])
# unfinished uploads; deleting a row here leaves its file to `manage.py expire_uploads`
admin.site.register(models.Upload, list_display=["filename", "owner", "team", "kind", "offset", "length", "updated"])


class TokenPrefixAdmin(admin.ModelAdmin):
    """API tokens by owner and the first characters only. A token's key is its primary key, so Django's own
    pages (links, the delete checkboxes) would print it: whoever reads the admin could act as any user. No
    links, no actions, nothing to add or change; a user replaces their own token on its page."""

    list_display = ["prefix", "user", "created"]
    list_display_links = None
    actions = None

    @admin.display(description="token")
    def prefix(self, token: TokenProxy) -> str:
        return f"{token.key[:4]}…"

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        return False  # ?key__startswith=a0 would answer one character of a key at a time

    def get_search_results(self, request, queryset, search_term):
        return queryset, False

    def get_ordering(self, request):
        return ["user__username"]  # never by key: the order of rows would tell about keys too

    def has_view_permission(self, request, obj=None) -> bool:
        return obj is None and super().has_view_permission(request)  # the list, never one token's page

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


admin.site.unregister(TokenProxy)
admin.site.register(TokenProxy, TokenPrefixAdmin)
