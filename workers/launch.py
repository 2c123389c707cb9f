"""How a worker starts on this machine: the queues it serves and its command line. GPUs are found by
asking the NVIDIA driver, not TensorFlow: importing TensorFlow in a worker's parent process before it forks
breaks CUDA in the children."""

import shutil
import subprocess


def gpu_present() -> bool:
    nvidia_smi = shutil.which("nvidia-smi")
    if not nvidia_smi:
        return False
    try:
        listing = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listing.returncode == 0 and "GPU" in listing.stdout


def default_queues() -> str:
    """A machine with a GPU serves the `gpu` queue as well as `cpu`."""
    return "cpu,gpu" if gpu_present() else "cpu"


def worker_command(queues: str, name: str, loglevel: str = "INFO", extra: tuple[str, ...] = ()) -> list[str]:
    """The command line of one Celery worker process with one task at a time (make run, tests, benches): it
    serves `queues` and their side lanes (webapp.celery_app.side_lane)."""
    import sys

    from webapp.celery_app import with_side_lanes

    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "webapp.celery_app",
        "worker",
        "-Q",
        with_side_lanes(queues),
        "-c",
        "1",
        "-n",
        name,
        "--loglevel",
        loglevel,
        *extra,
    ]
