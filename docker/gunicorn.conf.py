"""gunicorn for the web container (and tests/docker/test_containers.py, which runs the same file).
The first image test of a network imports TensorFlow and loads the network: hence the long timeout."""

import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
timeout = 180
graceful_timeout = 30
accesslog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "*")  # the reverse proxy sets X-Forwarded-Proto
