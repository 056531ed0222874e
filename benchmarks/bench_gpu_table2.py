"""Benchmark 5 (GPU only): Chougrad's Table 2 protocol, one fold, InceptionV3 on 5,316 224px ROIs.

Phantom-like data of DDSM's size (5,316 mass ROIs, 224x224 grey, two classes: bright or dark
blob on textured noise), generated in memory. One fold of the patient-level 5-fold CV (80% to
train, of which 15% of patients hold out for early stopping; 20% test), InceptionV3 with
Chougrad's head, the paper's stages (`chougrad2018`: 30 Adam epochs on the head, then up to 90
SGD epochs on 2FT with plateau and early stopping, batch 128) and augmentation
(`chougrad2018` preset), in mixed precision with XLA as Keras picks on a GPU. Wall time of the
fold against the paper's 91.6 minutes for five folds on a GTX 980M (18.3 min a fold).
Goal: >= 20x faster.

Without a GPU it is skipped (a CPU would take days); `force_cpu=True` runs the tiny size on a
CPU to check the code path.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from benchmarks.common import check_size, result

PAPER_MINUTES_FIVE_FOLDS = 91.6
SIZES = {"tiny": dict(n=48, side=75, epoch_scale=0.034), "full": dict(n=5316, side=224, epoch_scale=1.0)}


def phantom_rois(n: int, side: int, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """n grey ROIs with a bright (malignant) or dark (benign) blob; two ROIs per patient."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) // 2) % 2
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    images = np.empty((n, side, side), np.float32)
    for i in range(n):
        cy, cx, r = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.08, 0.2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        images[i] = rng.normal(0.0, 0.3, (side, side)) + (0.8 if labels[i] else -0.8) * blob
    index = pd.DataFrame({"item_id": [f"roi{i:05d}" for i in range(n)], "image_id": [f"img{i:05d}" for i in range(n)],
                          "patient_id": [f"p{i // 2:05d}" for i in range(n)], "label": labels})
    return images, index


def run(size: str = "full", *, force_cpu: bool = False, out: str | None = None) -> dict:
    import tempfile
    from pathlib import Path

    from mammo_keras.training.precision import has_gpu

    settings = SIZES[check_size(size)]
    title = f"Chougrad Table 2 protocol, one fold, InceptionV3, {settings['n']} ROIs {settings['side']}px"
    if not has_gpu() and not force_cpu:
        return result("gpu_table2", title, ratio=None, ratio_label="paper's minutes per fold / ours", goal=20.0,
                      figures={}, skipped="no GPU visible to TensorFlow on this machine")
    from mammo_keras import models
    from mammo_keras.data.pipeline import preset as augment_preset
    from mammo_keras.training.cv import assign_folds, train_and_test, _inner_split
    from mammo_keras.training.distribute import build_model, training_scope
    from mammo_keras.training.stages import preset as stage_preset

    images, index = phantom_rois(settings["n"], settings["side"])
    stages = [s.scaled(settings["epoch_scale"]) if settings["epoch_scale"] != 1.0 else s
              for s in stage_preset("chougrad2018")]
    shape = (settings["side"], settings["side"], 1)
    with tempfile.TemporaryDirectory(prefix="bench_table2_") as tmp:
        work = Path(out or tmp)
        folds = assign_folds(index, 5, 0, work / "folds.csv")
        test_mask = (folds["fold"] == 0).to_numpy()
        train_rows = np.flatnonzero(~test_mask)
        inner = _inner_split(index.iloc[train_rows].reset_index(drop=True), 0.15, 0)
        started = time.perf_counter()
        with training_scope("default", "mixed" if has_gpu() else "float32"):
            _, metrics = train_and_test(
                lambda: build_model(lambda: models.get("chougrad_inceptionv3", input_shape=shape,
                                                       fine_tune="2FT")),
                images, index, stages, work / "fold_0", fit_rows=train_rows[inner == "train"],
                val_rows=train_rows[inner == "val"], test_rows=np.flatnonzero(test_mask), fold=0, seed=0,
                augment=augment_preset("chougrad2018"))
        seconds = time.perf_counter() - started
        log = pd.read_csv(work / "fold_0" / "log.csv")
    paper_fold_minutes = PAPER_MINUTES_FIVE_FOLDS / 5
    figures = {"fold_minutes": round(seconds / 60, 2), "paper_fold_minutes": round(paper_fold_minutes, 2),
               "epochs_run": int(len(log)), "epochs_by_stage": log.groupby("stage").size().to_dict(),
               "accuracy": metrics["accuracy"], "auc": metrics["auc"], "n_train": metrics["n_train"],
               "n_val": metrics["n_val"], "n_test": metrics["n_test"],
               "seconds_per_epoch_median": float(log["seconds"].median())}
    return result("gpu_table2", title, ratio=paper_fold_minutes / (seconds / 60),
                  ratio_label="paper's minutes per fold (GTX 980M) / ours", goal=20.0, figures=figures,
                  note="early stopping as in the paper, so the epoch count is data-dependent (see epochs_run)")


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "full",
                         force_cpu="--force-cpu" in sys.argv), indent=2))
