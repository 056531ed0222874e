"""Benchmark 5: training peak memory on a memory-mapped whole-image set of 200 and 800 images.

Shen's whole-image input (1152 x 896 grey float32, 4.1 MB an image; 200 images = 0.83 GB, 800 =
3.3 GB) in a prepared folder (images.npy + index.csv), each size in its own process, two paths:

- "runner": one fold of the cv kind through the functions `mammo-keras reproduce` calls: the items
  as `InputRecipe.training_arrays` gives them (`data.rows.ItemRows`, read per batch), fold 0 of a
  patient-level 5-fold split (`cv.assign_folds`, `cv._inner_split`: 15% of the training patients
  for validation) trained and scored by `cv.train_and_test` (Shen's `train_mean_grey` fitted on the
  training part, the `shen2017` augmentation, batch 2 as Shen's whole-image stages, one epoch with
  validation AUC selection, then the validation and test parts predicted);
- "mmap": one epoch over the whole set through `pipeline.make_prepared_dataset` (per-batch reads);

both by a small convolutional network. For contrast, the 200-image set loaded whole into memory
and fed by `make_dataset` ("in_memory"). Figures: peak resident memory of the process (VmHWM), its
resident memory after building the model and before training (the baseline), and the rise between
them. Goal: the runner's path flat, i.e. its 800-image rise within 1.25x of its 200-image rise (the
ratio is rise(200) / rise(800), >= 0.8); the mmap path's ratio is in the figures.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, check_size, result

SIZES = {"tiny": dict(counts=(10, 60), shape=(96, 64)), "full": dict(counts=(200, 800), shape=(1152, 896))}
BATCH = 2


def write_folder(folder: Path, n: int, shape: tuple[int, int]) -> None:
    """images.npy written in chunks with plain writes (never whole in memory, never mapped), and index.csv."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with open(folder / "images.npy", "wb") as stream:
        np.lib.format.write_array_header_1_0(stream, {"descr": "<f4", "fortran_order": False, "shape": (n, *shape)})
        for start in range(0, n, 16):
            rng.random((min(n, start + 16) - start, *shape), dtype=np.float32).tofile(stream)
    pd.DataFrame({"item_id": [f"i{i}" for i in range(n)], "label": np.arange(n) % 2}).to_csv(folder / "index.csv",
                                                                                           index=False)


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: peak), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def child(folder: str, mode: str) -> dict:
    import keras

    from mammo_keras.data.pipeline import make_dataset, make_prepared_dataset, preset
    from mammo_keras.data.prepare import load_prepared

    keras.utils.set_random_seed(0)
    _, index = load_prepared(folder, mmap=True)
    n = len(index)
    targets = keras.utils.to_categorical(index["label"].to_numpy() % 2, 2).astype(np.float32)
    shape = tuple(np.load(Path(folder) / "images.npy", mmap_mode="r").shape[1:])
    inputs = keras.Input((*shape, 1))
    x = keras.layers.Conv2D(8, 7, strides=4, activation="relu")(inputs)
    x = keras.layers.Conv2D(16, 5, strides=4, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    baseline = _rss_mb()
    if mode == "runner":
        return _runner_fold(folder, index, model, baseline)
    if mode == "mmap":
        dataset = make_prepared_dataset(folder, labels=targets, batch_size=BATCH, augment=preset("shen2017"),
                                        shuffle=True, seed=0, epochs=1)
    else:  # the whole set loaded into memory first
        images = np.load(Path(folder) / "images.npy")[..., None]
        dataset = make_dataset(images, targets, batch_size=BATCH, augment=preset("shen2017"), shuffle=True, seed=0,
                               epochs=1)
    started = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=-(-n // BATCH), verbose=0)
    seconds = time.perf_counter() - started
    # VmHWM, the peak of this process's own memory map: ru_maxrss would also count the parent's
    # resident memory when it was forked (Linux keeps it across exec).
    peak = _status_mb("VmHWM")
    return {"images": n, "mode": mode, "peak_rss_mb": round(peak, 1), "baseline_rss_mb": round(baseline, 1),
            "rise_mb": round(peak - baseline, 1), "final_rss_mb": round(_rss_mb(), 1),
            "set_mb": round(n * int(np.prod(shape)) * 4 / 2 ** 20, 1), "epoch_seconds": round(seconds, 1)}


def _runner_fold(folder: str, index, model, baseline: float) -> dict:
    """Fold 0 of the cv kind as `cv.cross_validate` runs it, from the items `runner.inputs` hands it."""
    import keras

    from mammo_keras.data.pipeline import preset
    from mammo_keras.data.recipes import InputRecipe, Normalisation
    from mammo_keras.training import cv
    from mammo_keras.training.stages import Stage

    path = Path(folder) / "images.npy"
    shape = tuple(np.load(path, mmap_mode="r").shape[1:])
    index = index.assign(patient_id=index["item_id"], image_id=index["item_id"])
    images = InputRecipe("shen", {}, shape).training_arrays(path, np.arange(len(index)))
    spec = cv.TrainSpec(stages=(Stage("fit", 1, optimizer="adam", learning_rate=1e-3, batch_size=BATCH),),
                        augment=preset("shen2017"), normalisation=Normalisation("train_mean_grey"),
                        selection="best_val_auc", backup=False, augment_on="pipeline")
    weights = model.get_weights()

    def build():  # the benchmark's network, fresh weights as the baseline measured them
        fresh = keras.models.clone_model(model)
        fresh.set_weights(weights)
        return fresh

    with tempfile.TemporaryDirectory(prefix="bench_runner_fold_") as out:
        folds = cv.assign_folds(index, 5, 0, Path(out) / "folds.csv")
        test = (folds["fold"] == 0).to_numpy()
        train_rows = np.flatnonzero(~test)
        inner = cv._inner_split(index.iloc[train_rows].reset_index(drop=True), 0.15, 0)
        started = time.perf_counter()
        _, metrics = cv.train_and_test(build, images, index, spec, Path(out) / "fold_0",
                                       fit_rows=train_rows[inner == "train"], val_rows=train_rows[inner == "val"],
                                       test_rows=np.flatnonzero(test), fold=0, seed=0)
        seconds = time.perf_counter() - started
    peak = _status_mb("VmHWM")
    n = len(index)
    return {"images": n, "mode": "runner", "peak_rss_mb": round(peak, 1), "baseline_rss_mb": round(baseline, 1),
            "rise_mb": round(peak - baseline, 1), "final_rss_mb": round(_rss_mb(), 1),
            "set_mb": round(n * int(np.prod(shape)) * 4 / 2 ** 20, 1), "fold_seconds": round(seconds, 1),
            "parts": {k: metrics[k] for k in ("n_train", "n_val", "n_test")}}


def run(size: str = "full") -> dict:
    settings = SIZES[check_size(size)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench_train_memory_") as tmp:
        for n in settings["counts"]:
            folder = Path(tmp) / f"n{n}"
            write_folder(folder, n, settings["shape"])
            modes = ("runner", "mmap", "in_memory") if n == settings["counts"][0] else ("runner", "mmap")
            for mode in modes:
                done = subprocess.run([sys.executable, "-m", "benchmarks.bench_train_memory", "--child", str(folder),
                                       mode], cwd=REPO, env=env, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"training child (N={n}, {mode}) failed: {done.stderr[-2000:]}")
                runs[f"n{n}_{mode}"] = json.loads(done.stdout.strip().splitlines()[-1])
            (folder / "images.npy").unlink()
    def flatness(mode: str) -> float | None:
        small, large = (runs[f"n{n}_{mode}"] for n in settings["counts"])
        return small["rise_mb"] / large["rise_mb"] if large["rise_mb"] > 0 else None

    mmap = flatness("mmap")
    return result("train_memory", f"Training peak RSS, memory-mapped whole images {settings['shape'][0]}x"
                                  f"{settings['shape'][1]}, N = {' and '.join(map(str, settings['counts']))}, "
                                  "one cv fold through the runner's functions",
                  ratio=flatness("runner"),
                  ratio_label=f"RSS rise N={settings['counts'][0]} / N={settings['counts'][1]} (1 = flat)",
                  goal=0.8, figures={"runs": runs, "mmap_ratio": None if mmap is None else round(mmap, 3)},
                  note="each run in its own process; rise = peak RSS during the fold (runner) or epoch - RSS "
                       "after building")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3])))
    else:
        print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "full"), indent=2))
