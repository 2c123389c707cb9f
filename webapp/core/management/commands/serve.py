"""`manage.py serve ADDRESS:PORT --noreload`: the web server of `make run` (webapp/core/devserver.py)."""

from webapp.core.devserver import ServeCommand as Command

__all__ = ["Command"]
