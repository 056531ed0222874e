"""`mammo-keras reproduce` killed with SIGKILL at seeded points and restarted with the same command:
the final table equals an uninterrupted run's, and each restart reuses the parts finished before
the kill instead of redoing them.

The run is a real reproduce of Chougrad's mini-MIAS config on a MIAS-format folder the test writes,
with a classical baseline row only (no network: the epochs-level resume of a network is
tests/training/test_resume.py's subject), so each run takes seconds: reading, prepare, features,
3 folds, tables and plots. Kills land after a seeded number of finished parts.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
IMAGES = 30
PARTS = 3  # 1 baseline row x 3 folds
VARYING = ("seconds", "minutes")  # measured time: differs between runs by nature


def _mias_folder(root: Path) -> Path:
    """Noisy 1024 x 1024 images with one lesion each; malignant ones brighter, so the folds learn."""
    root.mkdir(parents=True)
    lines = []
    rows, cols = np.mgrid[:1024, :1024]
    for number in range(1, IMAGES + 1):
        rng = np.random.default_rng(number)
        x, y, radius = (int(v) for v in rng.integers((200, 200, 30), (800, 800, 90)))
        malignant = number % 2 == 0
        image = 70 + 30 * rng.random((1024, 1024))
        image[(cols - x) ** 2 + (rows - (1024 - y)) ** 2 <= radius ** 2] += 100 if malignant else 30
        Image.fromarray(image.astype(np.uint8)).save(root / f"mdb{number:03d}.pgm")
        lines.append(f"mdb{number:03d} G CIRC {'M' if malignant else 'B'} {x} {y} {radius}\r\n")
    (root / "Info.txt").write_bytes(("MIAS\r\n\r\n" + "".join(lines)).encode("latin-1"))
    return root


def _command(data: Path, results: Path) -> list[str]:
    return [sys.executable, "-m", "mammo_keras.cli", "reproduce", "chougrad2018/mias_cv", "--profile", "tiny",
            "--data", str(data), "--results", str(results), "--set", "datasets=[mias]", "--set", "rows=[]",
            "--set", "baselines=[logistic_regression]", "--set", "n_bootstrap=200",
            "--set", "grad_cam=false"]


def _environment(tmp: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "MAMMO_CACHE": str(tmp / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}


def _finished_parts(results: Path) -> int:
    return len(list(results.glob("chougrad2018/mias_cv/mias/*/fold_*/predictions.csv")))


def _table(results: Path) -> pd.DataFrame:
    table = pd.read_csv(results / "chougrad2018" / "mias_cv" / "table.csv")
    return table.drop(columns=[c for c in table if c in VARYING])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The data folder, the environment and the table of one uninterrupted run."""
    tmp = tmp_path_factory.mktemp("reproduce_kill")
    data = tmp / "data"
    _mias_folder(data / "mias")
    environment = _environment(tmp)
    clean = tmp / "clean"
    done = subprocess.run(_command(data, clean), cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = _table(clean)
    assert list(expected["model"]) == ["baseline_lr"] and (expected["status"] == "ok").all()
    assert _finished_parts(clean) == PARTS
    return data, environment, expected


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_reproduce_killed_and_restarted_gives_the_uninterrupted_table(seed, uninterrupted, tmp_path):
    data, environment, expected = uninterrupted
    results = tmp_path / "killed"
    kill_after = random.Random(seed).randint(1, PARTS - 1)
    process = subprocess.Popen(_command(data, results), cwd=REPO, env=environment, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while _finished_parts(results) < kill_after and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before the kill"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    survived = _finished_parts(results)
    assert kill_after <= survived < PARTS
    assert not (results / "chougrad2018" / "mias_cv" / "table.csv").exists()  # killed before the end
    resumed = subprocess.run(_command(data, results), cwd=REPO, env=environment, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("done earlier, reused") == survived  # nothing finished was redone
    pd.testing.assert_frame_equal(_table(results), expected)
