"""Benchmark 3: does the input pipeline keep up with the model step? Data in memory, honestly interleaved.

Same model (Coccomini's scratch CNN on 150x150 grey patches, the zoo's fastest trainer), same
batch (16, Coccomini's), the `cocc_scratch` augmentation, the items in memory. Three sides per
round, in turn, each with nothing else running:

    model      `train_on_batch` on one batch held as tensors: the speed the model alone allows
    pipeline   `make_dataset` (numbered epochs, as `fit_stages` feeds it) delivering batches to
               host memory, no model
    both       the model trained on the pipeline's batches

Each pipeline iterator is new for its round, its first `PRIME` batches are taken untimed (its
start and prefetch fill) and it is deleted before the next side is timed, so no prefetch thread
works while another side is timed (the bias of the earlier version, whose idle iterators refilled
their buffers during the other sides' rounds). Figures: the pipeline's headroom (its batches/s
over the model's steps/s: above 1 it can feed this model; a GPU's faster step needs a larger
one) and the end-to-end ratio both / model (goal >= 0.95: training is not input-bound here).
On a CPU the pipeline and the model share the same cores.
"""
from __future__ import annotations

import gc
import math
import time

import numpy as np

from benchmarks.common import check_size, interleaved, result, spread

SIZES = {"tiny": dict(n=64, side=48, steps=4, rounds=2, fc_units=64),
         "full": dict(n=512, side=150, steps=24, rounds=5, fc_units=2048)}
BATCH = 16
PRIME = 4


def run(size: str = "full") -> dict:
    import keras
    import tensorflow as tf

    from mammo_keras import models
    from mammo_keras.data.pipeline import make_dataset, preset

    settings = SIZES[check_size(size)]
    n, side, steps = settings["n"], settings["side"], settings["steps"]
    rng = np.random.default_rng(0)
    images = rng.random((n, side, side, 1), dtype=np.float32)
    targets = (np.arange(n) % 2).astype(np.float32)[:, None]
    keras.utils.set_random_seed(0)
    model = models.get("coccomini_scratch_cnn", input_shape=(side, side, 1), fc_units=settings["fc_units"])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    fixed = (tf.constant(images[:BATCH]), tf.constant(targets[:BATCH]))
    epochs = math.ceil((PRIME + steps) / math.ceil(n / BATCH)) + 1

    def stream():
        return iter(make_dataset(images, targets, batch_size=BATCH, augment=preset("cocc_scratch"), shuffle=True,
                                 seed=0, epochs=epochs, drop_remainder=True))

    def model_alone() -> float:
        started = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(*fixed)
        return steps / (time.perf_counter() - started)

    def pipeline_alone() -> float:
        iterator = stream()
        for _ in range(PRIME):
            next(iterator)[0].numpy()
        started = time.perf_counter()
        for _ in range(steps):
            next(iterator)[0].numpy()
        seconds = time.perf_counter() - started
        del iterator
        gc.collect()
        return steps / seconds

    def both() -> float:
        iterator = stream()
        for _ in range(PRIME):
            model.train_on_batch(*next(iterator))
        started = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(*next(iterator))
        seconds = time.perf_counter() - started
        del iterator
        gc.collect()
        return steps / seconds

    sides = {"model": model_alone, "pipeline": pipeline_alone, "both": both}
    for side_run in sides.values():  # trace the step, compile the resampler
        side_run()
    rates = interleaved(sides, settings["rounds"])
    model_rate, pipeline_rate, both_rate = (spread(rates[k])["median"] for k in ("model", "pipeline", "both"))
    return result("input_bound", f"Input pipeline vs model step, scratch CNN {side}x{side}x1, batch {BATCH}",
                  ratio=both_rate / model_rate, ratio_label="model fed by the pipeline / model alone (steps/s)",
                  goal=0.95, figures={
                      "model_steps_per_s": spread(rates["model"]), "pipeline_batches_per_s": spread(rates["pipeline"]),
                      "both_steps_per_s": spread(rates["both"]),
                      "pipeline_headroom": round(pipeline_rate / model_rate, 2),
                      "end_to_end_per_round": spread([b / m for b, m in zip(rates["both"], rates["model"])]),
                      "steps_per_round": steps, "rounds": settings["rounds"],
                      "per_round": {k: [round(v, 2) for v in vals] for k, vals in rates.items()}},
                  note="three sides in turn per round; pipeline iterators new per round, primed untimed, "
                       "deleted before the next side")


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "full"), indent=2))
