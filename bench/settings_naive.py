"""bench/page_load.py's "naive way": static files as Prunelab served them before issue 13 (straight from the
finders, uncompressed, revalidated on every load), everything else as `make run`."""

from webapp.settings.local import *  # noqa: F403
from webapp.settings.local import INSTALLED_APPS

# runserver's own static handler, as make run served static files then (uncompressed, no cache lifetime)
INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "whitenoise.runserver_nostatic"]
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
WHITENOISE_MAX_AGE = 0
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
