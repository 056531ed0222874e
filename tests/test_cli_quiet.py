"""TensorFlow's start-up lines, absl warnings and retracing warnings stay out of the CLI's output by
default; `mammo-keras --verbose` lets them through."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mammo_keras.cli import TF_STARTUP_NOISE, RetracingFilter

REPO = Path(__file__).resolve().parents[1]
NOISE = ("oneDNN", "absl", "cpu_feature_guard")


def _run(*argv: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO), environment.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=600, cwd=REPO,
                          env=environment)


@pytest.fixture(scope="module")
def runs():
    plan = ["-m", "mammo_keras.cli", "reproduce", "coccomini2021/table2", "--plan"]
    bare = _run("-c", "import tensorflow")  # what TensorFlow prints here when nobody filters it
    return bare, _run(*plan), _run("-m", "mammo_keras.cli", "--verbose", *plan[2:])


def test_quiet_by_default(runs):
    _, quiet, _ = runs
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "## Row `scratch_cnn`" in quiet.stdout  # the command's own output is all there
    noisy = [line for line in quiet.stderr.splitlines() if any(word in line for word in NOISE)]
    assert noisy == []


def test_verbose_lets_tensorflows_lines_through(runs):
    bare, _, verbose = runs
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    printed = [word for word in NOISE if word in bare.stderr]
    if not printed:
        pytest.skip("TensorFlow prints no start-up lines in this environment")
    assert all(word in verbose.stderr for word in printed)


def test_the_filters_drop_only_what_they_name():
    assert TF_STARTUP_NOISE.match("I0000 00:00:1796124648.657451   14176 port.cc:153] oneDNN custom operations are on.")
    assert TF_STARTUP_NOISE.match("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
    assert not TF_STARTUP_NOISE.match("error: reproduce: no such experiment config")
    assert not TF_STARTUP_NOISE.match("F0000 00:00:1796124648.657451   14176 check.cc:1] Check failed")

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("tensorflow", logging.WARNING, __file__, 1, message, None, None)

    retracing = record("5 out of the last 5 calls to <function f> triggered tf.function retracing. Tracing is expensive")
    assert not RetracingFilter().filter(retracing)
    assert RetracingFilter().filter(record("Your input ran out of data"))
