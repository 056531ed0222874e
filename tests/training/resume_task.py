"""A tiny fold trained through `cv.train_and_test`, for the kill-and-resume tests.

Run as a script (`python tests/training/resume_task.py OUT [--sleep S] [--kill-after N]`) it
trains the fold into OUT; `--sleep` waits S seconds after each epoch's backup so that a test can
kill it mid-training; `--kill-after` makes the process SIGKILL itself right after the backup of
its N-th epoch (a kill at a known point, with no cleanup).
Two stages (head, then all layers with plateau and early stopping), augmentation, BatchNorm and
dropout (their statistics and seed states must survive a restart) and the best-AUC selection.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from mammo_keras.data.pipeline import AugmentConfig
from mammo_keras.training import cv, fit
from mammo_keras.training.stages import Stage

STAGES = (Stage("head", 3, optimizer="adam", learning_rate=1e-2, trainable="re:^predictions", batch_size=8),
          Stage("all", 5, optimizer="adam", learning_rate=1e-2, batch_size=8, schedule="plateau",
                plateau_patience=1, early_stopping_patience=3))
SPEC = cv.TrainSpec(stages=STAGES, augment=AugmentConfig(rotation_range=20.0, horizontal_flip=True),
                    selection="best_val_auc", augment_on="pipeline", backup_every=0)  # kills land after any epoch
TOTAL_EPOCHS = sum(stage.epochs for stage in STAGES)


def task(n_patients: int = 24, size: int = 16, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Bright centre = malignant, dark centre = benign; two items per patient (in order)."""
    rng = np.random.default_rng(seed)
    n = 2 * n_patients
    labels = np.array([(i // 2) % 2 for i in range(n)])
    images = rng.normal(0, 0.3, (n, size, size)).astype(np.float32)
    images[:, 4:12, 4:12] += np.where(labels == 1, 0.4, -0.4)[:, None, None]
    ids = [f"i{i:03d}" for i in range(n)]
    return images, pd.DataFrame({"item_id": ids, "image_id": ids, "patient_id": [f"p{i // 2:03d}" for i in range(n)],
                                 "label": labels})


def model() -> keras.Model:
    inputs = keras.Input((16, 16, 1), name="image")
    x = keras.layers.Conv2D(4, 3, name="block1_conv1")(inputs)
    x = keras.layers.BatchNormalization(name="block1_bn")(x)
    x = keras.layers.Activation("relu", name="block1_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dropout(0.3, name="head_dropout")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs)


def run(out: str | Path, spec: cv.TrainSpec = SPEC) -> pd.DataFrame:
    """Train and test the fold (items 0-31 fit, 32-39 validation, 40-47 test) into `out`."""
    images, index = task()
    predictions, _ = cv.train_and_test(model, images, index, spec, Path(out), fit_rows=np.arange(32),
                                       val_rows=np.arange(32, 40), test_rows=np.arange(40, 48), fold=0, seed=3)
    return predictions


def epochs_in_backup(out: str | Path) -> int:
    """Epochs finished according to a fold's backup file (0 without one)."""
    path = Path(out) / "backup" / "backup.npz"
    try:
        state = fit.FitBackup(path.parent, {}).peek()
    except (OSError, ValueError, KeyError, EOFError):  # absent, or replaced while read
        return 0
    return len(state["rows"]) if state else 0


if __name__ == "__main__":
    if "--sleep" in sys.argv:
        pause = float(sys.argv[sys.argv.index("--sleep") + 1])
        original = fit.FitBackup.save

        def slow_save(self, state, arrays):
            original(self, state, arrays)
            time.sleep(pause)

        fit.FitBackup.save = slow_save
    if "--kill-after" in sys.argv:
        epochs = int(sys.argv[sys.argv.index("--kill-after") + 1])
        plain = fit.FitBackup.save

        def save_then_die(self, state, arrays):
            plain(self, state, arrays)
            if not state["finished"] and len(state["rows"]) >= epochs:
                os.kill(os.getpid(), signal.SIGKILL)

        fit.FitBackup.save = save_then_die
    run(sys.argv[1])
