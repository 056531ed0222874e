"""Run `mammo_keras.cli.main` on command lines in a fresh interpreter, to see what it refuses before
TensorFlow is imported (an import of 10-20 s on 2 busy cores)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def errors_before_tensorflow(argvs: list[list[str]], *, timeout: float = 60) -> list[str]:
    """The one-line error of each command line, after checking that each exited 1 with TensorFlow not
    imported (all in one process, one after the other)."""
    script = ("import sys; from mammo_keras.cli import main\n"
              f"for argv in {argvs!r}:\n"
              "    print(main(argv), 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    assert done.stdout.split() == ["1", "False"] * len(argvs), done.stderr
    errors = done.stderr.strip().splitlines()
    assert len(errors) == len(argvs) and all(line.startswith("error: ") for line in errors), done.stderr
    return errors
