"""`make test`'s pytest: the suite as three pytest sessions side by side, each with its own Redis, test database
and media (PRUNELAB_VAR_DIR=var/test-1, -2, -3), sharing the kept tiny networks (var/test-cache). On 2 cores
the library's training tests keep a core busy while the web app's tests mostly wait on workers, Redis and
Chromium; a third session fills those waits (with two, the cores were idle a quarter of the time).

    python -m tests.run [PYTEST ARGS]    # e.g. -m "not slow"; each session gets the same arguments

Each session's output is written to var/test-N/pytest.log and printed when it ends; the exit code is the first
failing session's. A single session (`pytest`) still runs everything, as before."""

import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A group may name a folder and another group files inside it: the folder's group skips those files.
GROUPS = [
    ["tests/defenses/test_methods.py", "tests/defenses/test_synthetic.py"],  # the defenses on the tiny preset
    ["tests/defenses", "tests/docker", "tests/fuzz", "tests/workers", "tests/test_imports.py", "tests/lab"],
    ["tests/webapp", "tests/stack"],
]
# Three sessions and their Celery workers already keep both cores busy: TensorFlow's own thread pools (one
# thread a core, spinning while they wait for work) would only take turns with each other. One thread each made
# two training tests side by side 12 % faster; set a variable yourself to override.
ONE_THREAD = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def covers_every_test_folder() -> None:
    """A new folder under tests/ must join a group, or it would silently not run."""
    named = {Path(path).name for group in GROUPS for path in group}
    present = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name != "__pycache__"}
    present |= {p.name for p in (ROOT / "tests").glob("test_*.py")}
    if present - named:
        sys.exit(f"tests/run.py: {sorted(present - named)} belong to no group; add them to GROUPS")


def skipped_by(group: list[str]) -> list[str]:
    """--ignore for the files other groups name inside this group's folders, so each test runs once."""
    others = [path for other in GROUPS if other is not group for path in other]
    inside = [path for path in others if any(Path(path).parent == Path(folder) for folder in group)]
    return [f"--ignore={path}" for path in inside]


def main(arguments: list[str]) -> int:
    covers_every_test_folder()
    var = Path(os.environ.get("PRUNELAB_VAR_DIR", ROOT / "var")).resolve()
    started, sessions = time.monotonic(), []
    with ExitStack() as logs:
        for number, paths in enumerate(GROUPS, start=1):
            folder = var / f"test-{number}"
            folder.mkdir(parents=True, exist_ok=True)
            env = dict(os.environ, PRUNELAB_VAR_DIR=str(folder), PRUNELAB_TEST_CACHE=str(var / "test-cache"))
            env.update({name: "1" for name in ONE_THREAD if name not in os.environ})
            log = logs.enter_context(open(folder / "pytest.log", "w"))
            command = [sys.executable, "-m", "pytest", *arguments, *skipped_by(paths), *paths]
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            sessions.append((paths, Path(log.name), process))
        codes = [process.wait() for _, _, process in sessions]
    for (paths, log, _), code in zip(sessions, codes, strict=True):
        print(f"\n===== {' '.join(paths)}: exit {code} =====\n{log.read_text()}", flush=True)
    print(f"===== all sessions ended in {time.monotonic() - started:.0f} s =====")
    return next((code for code in codes if code != 0), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
