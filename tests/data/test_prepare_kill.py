"""`mammo-keras data prepare` killed with SIGKILL at seeded random points and restarted: the
outputs equal an uninterrupted run's byte for byte, and no half-written file is ever visible under
a name a later run reads (every item file, images.npy and index.csv present after a kill is whole).

Three kills, each well under 2 s into a run: two while item files are being written (once a seeded
number of them exist), one at a seeded moment after the last item (stacking, index, contact sheet)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
IMAGES = 24


def _mias_folder(root: Path) -> Path:
    """A mini-MIAS folder (Info.txt in the real format) of noisy 1024 x 1024 images, each lesion
    different, so that every item differs from the others."""
    root.mkdir(parents=True)
    rows = []
    for number in range(1, IMAGES + 1):
        rng = np.random.default_rng(number)
        Image.fromarray(rng.integers(0, 256, (1024, 1024), dtype=np.uint8)).save(root / f"mdb{number:03d}.pgm")
        x, y, radius = (int(v) for v in rng.integers((100, 100, 10), (900, 900, 80)))
        rows.append(f"mdb{number:03d} G CIRC {'BM'[number % 3 == 0]} {x} {y} {radius}\r\n")
    (root / "Info.txt").write_bytes(("MIAS\r\n\r\n" + "".join(rows)).encode("latin-1"))
    return root


def _command(root: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "mammo_keras.cli", "data", "prepare", "mias", "--root", str(root), "--task",
            "chougrad", "--out", str(out), "--workers", "1", "--no-progress"]


def _start(root: Path, out: Path) -> tuple[subprocess.Popen, float]:
    """The command started in a session of its own (a kill takes any child with it, as a killed
    job's would go), and the moment its work began: when it created out/items."""
    process = subprocess.Popen(_command(root, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    _wait_for(lambda: (out / "items").is_dir(), process)
    return process, time.monotonic()


def _wait_for(condition, process: subprocess.Popen) -> None:
    while not condition() and process.poll() is None:
        time.sleep(0.001)


def _items(out: Path) -> int:
    return len(list((out / "items").glob("*.npz")))


def _whole_files(out: Path, clean: Path) -> list[str]:
    """Names of the outputs visible after a kill; each must equal the uninterrupted run's file
    (prepare.json, the run's report with its timings, aside)."""
    visible = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                     if p.is_file() and not p.name.startswith(".") and p.name != "prepare.json")
    for name in visible:
        assert (out / name).read_bytes() == (clean / name).read_bytes(), f"{name} is half-written"
    return visible


def test_sigkill_at_random_points_then_restart_gives_the_uninterrupted_outputs(tmp_path):
    root = _mias_folder(tmp_path / "mias")
    clean = tmp_path / "clean" / "prepared"  # the same folder name: the contact sheet shows it
    process, _ = _start(root, clean)
    assert process.wait(timeout=300) == 0, process.stderr.read()[-2000:]
    assert len(list((clean / "items").glob("*.npz"))) == IMAGES

    out, rng, seen = tmp_path / "killed" / "prepared", random.Random(17), []
    for wanted in (rng.randint(2, 8), rng.randint(12, 18)):  # killed while writing items
        process, _ = _start(root, out)
        _wait_for(lambda: _items(out) >= wanted, process)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        seen.append(_whole_files(out, clean))
    process, _ = _start(root, out)  # killed after the items, while stacking them or drawing the sheet
    _wait_for(lambda: _items(out) == IMAGES, process)
    time.sleep(rng.uniform(0.0, 0.5))
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    seen.append(_whole_files(out, clean))

    finished = subprocess.run(_command(root, out), capture_output=True, text=True, cwd=REPO, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert finished.returncode == 0, finished.stderr[-2000:]
    for name in ("images.npy", "index.csv"):
        assert (out / name).read_bytes() == (clean / name).read_bytes(), name
    assert json.loads((out / "prepare.json").read_text())["resumed_images"] == IMAGES  # nothing redone
    assert _whole_files(out, clean) == _whole_files(clean, clean)
    # what a kill leaves half-written is only ever a hidden temporary file, never read back
    assert all(p.name.startswith(".") and p.name.endswith(".tmp") for p in out.rglob("*")
               if p.is_file() and p.relative_to(out).as_posix() not in _whole_files(clean, clean)
               and p.name != "prepare.json")
    # the first two kills stopped runs part way through the items, which the restarts reused
    assert [0 < sum(name.endswith(".npz") for name in names) < IMAGES for names in seen[:2]] == [True, True], seen
