"""`python -m defenses` as its shell users get it, called in this process: the same `main(argv)`, argument
parsing, printed words and exit codes, without a new TensorFlow start per call (about 5 s each on 2 cores, 30
calls). The real `python -m defenses` process is still run by test_cli.py's help and refusal tests and by
test_hdf5check.py, which measures the process's memory."""

import contextlib
import io
import subprocess
import sys


def run_cli(*args, check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m defenses ARGS` in this process and return what a shell would see."""
    from defenses.cli import main

    argv = [str(arg) for arg in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's own refusals and --help
            code = exit_.code if isinstance(exit_.code, int) else 1
    done = subprocess.CompletedProcess([sys.executable, "-m", "defenses", *argv], code, out.getvalue(), err.getvalue())
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def run_cli_process(*args, check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m defenses ARGS` as a new process, as a shell does."""
    done = subprocess.run([sys.executable, "-m", "defenses", *map(str, args)], capture_output=True, text=True)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done
