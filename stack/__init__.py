"""The embedded stack behind `make run` and the test suite: a Redis server, a Celery worker and the
Django server as child processes of one supervisor, stopped together."""
