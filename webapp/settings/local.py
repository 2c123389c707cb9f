"""`make run`: the embedded stack on one machine, for one person trying Prunelab."""

from .base import *  # noqa: F403
from .base import env_bool

DEBUG = env_bool("DJANGO_DEBUG", True)
