"""Serve plotly.js from the installed plotly package (no CDN, no copy in the repository): the one file
`vendor/plotly.min.js`, so plotly.py and plotly.js are always the versions that belong together."""

from pathlib import Path

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

PLOTLY_DIR = Path(plotly.__file__).resolve().parent / "package_data"
SERVED = {"vendor/plotly.min.js": "plotly.min.js"}


class VendorFinder(BaseFinder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.storage = FileSystemStorage(location=PLOTLY_DIR)
        self.storage.prefix = "vendor"

    def check(self, **kwargs):
        return []

    def find(self, path, find_all=False, **kwargs):
        if path not in SERVED:
            # [] even for a single find, as Django's own finders do: finders.find() wraps any other falsy
            # answer into [None], which whitenoise (autorefresh, i.e. DEBUG) then os.stat()s: a 500 for
            # every missing /static/ path.
            return []
        found = str(PLOTLY_DIR / SERVED[path])
        return [found] if find_all else found

    def list(self, ignore_patterns):
        for name in SERVED.values():
            yield name, self.storage
