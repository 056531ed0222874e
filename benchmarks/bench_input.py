"""Benchmark 2: is training input-bound? Steps/s with the full pipeline from files vs from memory.

Same model (Coccomini's scratch CNN on 150x150 grey patches, the zoo's fastest trainer), same
batch (16, Coccomini's), same number of steps. Side A reads a prepared folder on disk with
`make_prepared_dataset`: memory-mapped images.npy, parallel reads, shuffle, in-graph
augmentation (the `cocc_scratch` preset), prefetch. Side B feeds batches already in memory as
tensors, with no reading and no augmentation: the speed the model alone allows. A ratio near 1
means the input pipeline hides behind the training step. Goal: >= 0.95.

On a CPU the pipeline and the model share the same cores, so every millisecond of augmentation
is taken from training; on a GPU they overlap. A second figure uses `cache=True` (read once).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import check_size, interleaved, median, result, timed

SIZES = {"tiny": dict(n=32, side=48, steps=2, rounds=1, fc_units=64),
         "full": dict(n=256, side=150, steps=10, rounds=3, fc_units=2048)}
BATCH = 16


def _prepared_folder(folder: Path, n: int, side: int) -> np.ndarray:
    from mammo_keras.fileio import atomic_save_npy

    rng = np.random.default_rng(0)
    images = rng.random((n, side, side), dtype=np.float32)
    labels = np.arange(n) % 2
    atomic_save_npy(folder / "images.npy", images)
    pd.DataFrame({"item_id": [f"i{i}" for i in range(n)], "label": labels}).to_csv(folder / "index.csv", index=False)
    return labels


def run(size: str = "full") -> dict:
    import keras
    import tensorflow as tf

    from mammo_keras import models
    from mammo_keras.data.pipeline import make_prepared_dataset, preset

    settings = SIZES[check_size(size)]
    n, side, steps = settings["n"], settings["side"], settings["steps"]
    with tempfile.TemporaryDirectory(prefix="bench_input_") as tmp:
        folder = Path(tmp)
        labels = _prepared_folder(folder, n, side)
        keras.utils.set_random_seed(0)
        model = models.get("coccomini_scratch_cnn", input_shape=(side, side, 1), fc_units=settings["fc_units"])
        model.compile(optimizer="adam", loss="binary_crossentropy")
        targets = labels.astype(np.float32)[:, None]
        files = make_prepared_dataset(folder, labels=targets, batch_size=BATCH, augment=preset("cocc_scratch"),
                                      shuffle=True, seed=0, drop_remainder=True).repeat()
        cached = make_prepared_dataset(folder, labels=targets, batch_size=BATCH, augment=preset("cocc_scratch"),
                                       shuffle=True, seed=0, cache=True, drop_remainder=True).repeat()
        images = np.load(folder / "images.npy")[..., None]
        in_memory = tf.data.Dataset.from_tensor_slices((images, targets)).batch(BATCH, drop_remainder=True)
        in_memory = in_memory.cache().repeat()
        iterators = {"files": iter(files), "files_cached": iter(cached), "memory": iter(in_memory)}

        def steps_per_second(name: str):
            iterator = iterators[name]

            def train() -> float:
                return steps / timed(lambda: [model.train_on_batch(*next(iterator)) for _ in range(steps)])
            return train

        for name in iterators:  # trace the train step and fill the caches / prefetch buffers
            for _ in range(max(2, n // BATCH if name == "files_cached" else 2)):
                model.train_on_batch(*next(iterators[name]))
        rates = interleaved({name: steps_per_second(name) for name in iterators}, settings["rounds"])
    files_rate, cached_rate, memory_rate = (median(rates[k]) for k in ("files", "files_cached", "memory"))
    return result("input_bound", f"Training steps/s, scratch CNN {side}x{side}x1, batch {BATCH}",
                  ratio=files_rate / memory_rate, ratio_label="full pipeline from files / tensors in memory",
                  goal=0.95, figures={
                      "steps_per_s_files": round(files_rate, 2), "steps_per_s_files_cached": round(cached_rate, 2),
                      "steps_per_s_memory": round(memory_rate, 2),
                      "ratio_cached_files_to_memory": round(cached_rate / memory_rate, 3),
                      "steps_per_round": steps, "rounds": settings["rounds"],
                      "per_round": {k: [round(v, 2) for v in vals] for k, vals in rates.items()}},
                  note="model.train_on_batch fed from each iterator in turn; medians of interleaved rounds")


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "full"), indent=2))
