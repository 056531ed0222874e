"""Resumable epochs: a fold killed mid-training restarts after its last finished epoch and ends
with the predictions of an uninterrupted run, bitwise on a CPU with the same seed."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import resume_task
from mammo_keras.training import fit

REPO = Path(__file__).resolve().parents[2]
TASK = Path(resume_task.__file__)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("uninterrupted")
    resume_task.run(out)
    return out, pd.read_csv(out / "predictions.csv")


def same_log(resumed: Path, clean: Path) -> None:
    """Every epoch's numbers (not its seconds) equal those of the uninterrupted run."""
    a, b = pd.read_csv(resumed / "log.csv"), pd.read_csv(clean / "log.csv")
    columns = [c for c in b.columns if c != "seconds"]
    pd.testing.assert_frame_equal(a[columns], b[columns], check_exact=True)


@pytest.mark.parametrize("kill_after", [2])  # mid-stage "head" here; mid-stage "all" in the SIGKILL test
def test_killed_fold_resumes_after_its_last_finished_epoch(tmp_path, monkeypatch, uninterrupted, kill_after):
    clean, expected = uninterrupted
    saved = fit.FitBackup.save
    epochs_saved = []

    def dies_after_epoch(self, state, arrays):
        saved(self, state, arrays)
        if not state["finished"]:
            epochs_saved.append(len(state["rows"]))
            if len(state["rows"]) == kill_after:
                raise KeyboardInterrupt  # as a kill right after the backup
    monkeypatch.setattr(fit.FitBackup, "save", dies_after_epoch)
    with pytest.raises(KeyboardInterrupt):
        resume_task.run(tmp_path)
    assert not (tmp_path / "predictions.csv").exists()
    assert resume_task.epochs_in_backup(tmp_path) == kill_after
    epochs_saved.clear()
    monkeypatch.setattr(fit.FitBackup, "save", saved)
    trained_again = []
    monkeypatch.setattr(fit.FitBackup, "save", lambda self, state, arrays: (
        trained_again.append(len(state["rows"])) if not state["finished"] else None, saved(self, state, arrays)))
    resume_task.run(tmp_path)
    assert trained_again and trained_again[0] == kill_after + 1  # no finished epoch trained again
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "predictions.csv"), expected, check_exact=True)
    same_log(tmp_path, clean)
    assert not (tmp_path / "backup").exists()  # removed once the fold is done


def test_backups_wait_backup_every_seconds_and_always_mark_a_stage_end(tmp_path, monkeypatch, uninterrupted):
    """With a long `backup_every` no epoch inside a stage is written, each stage's end still is, and a
    kill after the first stage resumes there with the uninterrupted predictions."""
    clean, expected = uninterrupted
    saved = fit.FitBackup.save
    written = []

    def dies_after_first_stage(self, state, arrays):
        saved(self, state, arrays)
        written.append((state["stage"], state["finished"], len(state["rows"])))
        if state["finished"] and state["stage"] == 0:
            raise KeyboardInterrupt
    monkeypatch.setattr(fit.FitBackup, "save", dies_after_first_stage)
    spec = dataclasses.replace(resume_task.SPEC, backup_every=3600.0)
    with pytest.raises(KeyboardInterrupt):
        resume_task.run(tmp_path, spec)
    head = resume_task.STAGES[0].epochs
    assert written == [(0, True, head)] and resume_task.epochs_in_backup(tmp_path) == head
    written.clear()
    monkeypatch.setattr(fit.FitBackup, "save", lambda self, state, arrays: (
        written.append((state["stage"], state["finished"])), saved(self, state, arrays)))
    resume_task.run(tmp_path, spec)
    assert written == [(1, True)]  # the second stage, written once at its end
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "predictions.csv"), expected, check_exact=True)
    same_log(tmp_path, clean)


def test_a_backup_of_another_plan_is_refused(tmp_path, monkeypatch):
    saved = fit.FitBackup.save

    def dies(self, state, arrays):
        saved(self, state, arrays)
        raise KeyboardInterrupt
    monkeypatch.setattr(fit.FitBackup, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        resume_task.run(tmp_path)
    monkeypatch.setattr(fit.FitBackup, "save", saved)
    other = fit.FitBackup(tmp_path / "backup", {"stages": [], "seed": 1})
    with pytest.raises(ValueError, match=r"belongs to another training plan .*remove it to start over"):
        other.load()


def test_a_background_backup_copies_its_state_now_and_a_failed_write_is_raised_at_the_next_wait(tmp_path, monkeypatch):
    """Training goes on while a backup is written (`save_in_background`): the log rows it appends
    meanwhile must not reach the file, and a write that fails (a full disk) must not pass silently."""
    backup = fit.FitBackup(tmp_path / "backup", {"seed": 0})
    rows = [{"epoch": 1}]
    started, release = threading.Event(), threading.Event()
    saved = fit.FitBackup.save

    def slow(self, state, arrays):
        started.set()
        release.wait(10)
        saved(self, state, arrays)
    monkeypatch.setattr(fit.FitBackup, "save", slow)
    backup.save_in_background({"rows": rows, "stage": 0}, {"model/0": np.arange(3.0)})
    started.wait(10)
    rows.append({"epoch": 2})  # the next epoch, logged while the file is being written
    release.set()
    state, arrays = backup.load()  # waits for the write
    assert state["rows"] == [{"epoch": 1}] and arrays["model/0"].tolist() == [0.0, 1.0, 2.0]

    def full_disk(self, state, arrays):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(fit.FitBackup, "save", full_disk)
    backup.save_in_background({"rows": rows, "stage": 0}, {})
    with pytest.raises(OSError, match="No space left on device"):
        fit.wait_for_backup(backup.path)
    fit.wait_for_backup(backup.path)  # raised once; nothing left in flight
    assert backup.load()[0]["rows"] == [{"epoch": 1}]  # the previous backup is kept


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "TF_CPP_MIN_LOG_LEVEL": "2"}


def _start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TASK), str(out), *extra], cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(process: subprocess.Popen) -> None:
    assert process.wait(180) == 0, process.stderr.read().decode()[-2000:]


def test_process_killed_by_sigkill_resumes_with_identical_predictions(tmp_path, uninterrupted):
    """A process SIGKILLs itself right after its 4th epoch's backup (mid-stage "all"); a new one
    finishes the fold, bitwise equal to the uninterrupted run (trained in this process)."""
    killed = _start(tmp_path, "--kill-after", "4")
    assert killed.wait(180) == -signal.SIGKILL, killed.stderr.read().decode()[-2000:]
    assert not (tmp_path / "predictions.csv").exists() and resume_task.epochs_in_backup(tmp_path) == 4
    _finish(_start(tmp_path))
    clean, expected = uninterrupted
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "predictions.csv"), expected, check_exact=True)
    same_log(tmp_path, clean)


@pytest.mark.slow
def test_sigkilled_at_a_polled_moment_resumes_with_identical_predictions(tmp_path):
    """Three processes (about a minute on 2 cores): uninterrupted; killed by this test with SIGKILL
    once its backup file holds 4 epochs (wherever it then is, a backup write included); restarted."""
    clean, killed = _start(tmp_path / "clean"), _start(tmp_path / "killed", "--sleep", "0.3")
    deadline = time.monotonic() + 180
    while resume_task.epochs_in_backup(tmp_path / "killed") < 4:
        assert killed.poll() is None, killed.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the run did not reach 4 epochs in 180 s"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "predictions.csv").exists()
    assert 4 <= resume_task.epochs_in_backup(tmp_path / "killed") < resume_task.TOTAL_EPOCHS
    restarted = _start(tmp_path / "killed")
    for process in (clean, restarted):
        _finish(process)
    expected = pd.read_csv(tmp_path / "clean" / "predictions.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "killed" / "predictions.csv"), expected, check_exact=True)
    assert np.isfinite(expected["score"]).all() and expected["score"].between(0, 1).all()
    same_log(tmp_path / "killed", tmp_path / "clean")


def test_a_precise_batchnorm_stage_resumes_with_the_uninterrupted_statistics(tmp_path, monkeypatch):
    """PreciseBN sets the BatchNorm statistics before the epoch's backup is written, so a fold killed
    mid-stage restarts from the recalibrated network and ends bitwise as an uninterrupted run."""
    stages = tuple(dataclasses.replace(stage, precise_bn=True) for stage in resume_task.STAGES)
    spec = dataclasses.replace(resume_task.SPEC, stages=stages)
    clean = tmp_path / "clean"
    resume_task.run(clean, spec)
    saved = fit.FitBackup.save

    def dies_mid_second_stage(self, state, arrays):
        saved(self, state, arrays)
        if not state["finished"] and len(state["rows"]) == 5:
            raise KeyboardInterrupt
    monkeypatch.setattr(fit.FitBackup, "save", dies_mid_second_stage)
    with pytest.raises(KeyboardInterrupt):
        resume_task.run(tmp_path / "killed", spec)
    assert resume_task.epochs_in_backup(tmp_path / "killed") == 5
    monkeypatch.setattr(fit.FitBackup, "save", saved)
    resume_task.run(tmp_path / "killed", spec)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "killed" / "predictions.csv"),
                                  pd.read_csv(clean / "predictions.csv"), check_exact=True)
    same_log(tmp_path / "killed", clean)
