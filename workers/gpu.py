"""Which queues a worker on this machine should serve. Asks the NVIDIA driver, not TensorFlow: importing
TensorFlow in a worker's parent process before it forks breaks CUDA in the children."""

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
