"""Start one Celery worker for this machine, as the containers do: `python -m workers.start --queues gpu`.

A worker asked to serve `gpu` on a machine without one still serves it, on the CPU, and says so in its log:
jobs sent to the gpu queue are then slower, never lost. With a GPU it uses one solo process (CUDA is not
fork-safe) on the first device unless CUDA_VISIBLE_DEVICES says otherwise.
"""

import argparse
import logging
import os
import socket

from workers.launch import default_queues, gpu_present, worker_command

log = logging.getLogger("prunelab.worker")
NO_GPU = (
    "No GPU found on this machine (nvidia-smi lists none): serving the gpu queue on the CPU. Jobs sent "
    "to it run, slower than on a GPU; start this worker on a machine with an NVIDIA GPU for speed."
)


def plan_worker(queues: str, name: str | None, has_gpu: bool) -> tuple[list[str], dict[str, str], str | None]:
    """The worker's command line, its environment changes and the warning to log (or None)."""
    serves_gpu = "gpu" in queues.split(",")
    extra: tuple[str, ...] = ("--pool", "solo") if serves_gpu and has_gpu else ()
    env = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0")} if serves_gpu and has_gpu else {}
    if not has_gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""  # TensorFlow then skips its CUDA probing entirely
    name = name or f"{queues.split(',')[0]}@{socket.gethostname()}"
    return worker_command(queues, name, extra=extra), env, NO_GPU if serves_gpu and not has_gpu else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", default=None, help="cpu, gpu or cpu,gpu (default: gpu too when one is found)")
    parser.add_argument("--name", default=None, help="worker name (default: QUEUE@hostname)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/%(name)s] %(message)s")
    command, env, warning = plan_worker(args.queues or default_queues(), args.name, gpu_present())
    if warning:
        log.warning(warning)
    os.execvpe(command[0], command, os.environ | env)


if __name__ == "__main__":
    main()
