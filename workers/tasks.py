"""Celery tasks. Each is thin: load inputs, call `defenses/`, store results through Django models."""

import socket

from workers.celery_app import app


@app.task(name="prunelab.echo")
def echo(payload: dict) -> dict:
    """Round-trip check for the queue: returns the payload with the answering host's name."""
    return {"payload": payload, "host": socket.gethostname()}
