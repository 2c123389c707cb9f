"""`make run`: the embedded stack on one machine. DEBUG stays off unless DJANGO_DEBUG=1 asks for it: a debug
page shows the process environment and settings to anyone who can make an error (a stranger's bad Host header
is enough), and `make run` may well be reachable by people who are not the operator."""

from .base import *  # noqa: F403
from .base import env_bool

DEBUG = env_bool("DJANGO_DEBUG", False)
