"""docker/ without a docker engine: the compose file validates, the Dockerfile keeps its rules, the production
settings pass `check --deploy`, and the code paths the containers run (gunicorn with the production settings,
a worker asked for the gpu queue on a machine without a GPU) run here for real."""

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from stack.redis import free_port
from tests.processes import ROOT, wait_for_worker
from workers.start import NO_GPU

DOCKER = ROOT / "docker"
COMPOSE = Path(os.environ.get("PRUNELAB_COMPOSE", "/usr/bin/docker-compose"))


def example_env() -> dict[str, str]:
    """docker/.env.example as a dict: the documented variables, with their placeholder secrets."""
    lines = (DOCKER / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def production_env(tmp_path: Path) -> dict[str, str]:
    """The containers' environment, with this machine's database file and Redis instead of the services'."""
    return (
        dict(os.environ)
        | example_env()
        | {
            "DJANGO_SETTINGS_MODULE": "webapp.settings.production",
            "PRUNELAB_VAR_DIR": str(tmp_path / "var"),
            "PRUNELAB_MEDIA_ROOT": str(tmp_path / "media"),
            "PRUNELAB_STATIC_ROOT": str(tmp_path / "static"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "REDIS_URL": os.environ["REDIS_URL"],
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        }
    )


def manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)


def test_compose_file_validates_and_has_every_service():
    if not COMPOSE.exists():
        pytest.fail(
            f"{COMPOSE} is missing: `make test` installs Debian's docker-compose (apt-get install docker-compose)"
        )
    env = dict(os.environ, PRUNELAB_ENV_FILE=".env.example")
    result = subprocess.run(
        [str(COMPOSE), "-f", str(DOCKER / "compose.yml"), "--profile", "gpu", "config"],
        cwd=DOCKER,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {"web", "worker", "gpu-worker", "redis", "postgres"}
    assert all("healthcheck" in service for service in services.values())
    assert services["gpu-worker"]["profiles"] == ["gpu"]
    assert services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert "--appendonly" in services["redis"]["command"]
    for name in ("web", "worker", "gpu-worker"):
        assert any(str(v).startswith("media:") or v.get("source") == "media" for v in _volumes(services[name])), name
    assert {"media", "redis-data", "postgres-data"} <= set(config["volumes"])


def _volumes(service: dict) -> list:
    return [v if isinstance(v, dict) else str(v) for v in service.get("volumes", [])]


def test_dockerfile_is_pinned_non_root_and_installs_requirements():
    text = (DOCKER / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert bases[0] == "python:3.11.14-slim-bookworm" and all(b in ("app",) or ":" in b for b in bases)
    stages = re.split(r"^FROM\s", text, flags=re.M)[1:]
    for stage in stages:
        users = re.findall(r"^USER\s+(\S+)", stage, re.M)
        assert users and users[-1] not in ("root", "0"), "every stage ends as a non-root user"
    assert "pip install -r requirements.txt" in text and "requirements-dev" not in text
    for source in re.findall(r"^COPY\s+(\S+)\s", text, re.M):
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the project"
    assert "COPY . " not in text and "tests" not in re.findall(r"^COPY\s+(\S+)", text, re.M)


def test_production_settings_pass_check_deploy(tmp_path):
    result = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def get(url: str, **headers) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.mark.slow
def test_gunicorn_serves_the_app_with_production_settings(tmp_path):
    env = production_env(tmp_path)
    for step in (("collectstatic", "--noinput"), ("migrate", "--noinput")):
        assert manage(env, *step).returncode == 0, step
    port = free_port()
    env |= {"GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "2"}
    command = [sys.executable, "-m", "gunicorn", "webapp.wsgi:application", "--config", "docker/gunicorn.conf.py"]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if get(f"{base}/health/live")[0] == 200:
                    break
            except OSError:
                time.sleep(0.3)
        assert get(f"{base}/health/live")[0] == 200  # plain HTTP allowed for health checks only
        status, headers, _ = get(f"{base}/login/")
        assert status == 301 and headers["Location"] == f"https://127.0.0.1:{port}/login/"
        status, headers, body = get(f"{base}/login/", **{"X-Forwarded-Proto": "https"})
        assert status == 200 and "max-age=31536000" in headers["Strict-Transport-Security"]
        stylesheet = re.search(rb'href="(/static/prunelab/prunelab\.[0-9a-f]{12}\.css)"', body).group(1).decode()
        status, headers, _ = get(base + stylesheet, **{"X-Forwarded-Proto": "https"})
        assert status == 200 and "immutable" in headers["Cache-Control"]  # whitenoise, hashed name
    finally:
        server.terminate()
        server.wait(30)


@pytest.mark.slow
def test_a_gpu_worker_without_a_gpu_says_so_and_serves_the_gpu_queue(tmp_path):
    from workers.tasks import echo

    name = "gpu-fallback@localhost"
    log = tmp_path / "worker.log"
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="webapp.settings.test", PATH="/usr/bin:/bin")  # no nvidia-smi
    with open(log, "w") as out:
        command = [sys.executable, "-m", "workers.start", "--queues", "gpu", "--name", name]
        worker = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for_worker(name)
        assert echo.apply_async(args=[{"on": "gpu"}], queue="gpu").get(timeout=60)["payload"] == {"on": "gpu"}
    finally:
        os.killpg(worker.pid, 9)
        worker.wait(10)
    text = log.read_text()
    assert NO_GPU in text and "--pool" not in text
