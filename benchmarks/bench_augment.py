"""Benchmark 1: augmentation throughput, the tf.data pipeline vs Keras' ImageDataGenerator.flow.

What Chougrad's Table 2 configs really run: the `chougrad2018` preset (rotation 40 degrees,
shifts 0.25, shear 0.5 rad = 28.65 degrees for modern Keras, zoom 0.5-1.5, horizontal flip, fill
"nearest", nearest-neighbour resampling: Keras 1's scipy order 0) on grey 224x224x1 ROIs, batch
32, shuffled. Both sides get the same one-channel float32 array and deliver every augmented
batch to host memory; the package's models repeat the grey channel themselves (`grey_to_rgb`).
ImageDataGenerator is the papers' tool: a NumPy/SciPy loop over images in the calling thread.
The pipeline is `make_dataset` with numbered epochs, as `fit_stages` uses it (one iterator per
stage): shuffled indices gathered from one resident tensor, each epoch's transforms drawn at
once with the flips folded into the matrix, one XLA-compiled gather resampler call per batch.

Honest interleaving: each round times one epoch of ImageDataGenerator, then one epoch of the
pipeline from a new iterator whose first `PRIME` batches are taken untimed (its start) and
which is deleted after the epoch, so no pipeline thread runs while ImageDataGenerator is timed.
A second figure times the pipeline's epoch from a new iterator with its start included, and a
third ImageDataGenerator on three identical channels (how a Keras 1 pipeline fed RGB networks).
Goal: >= 8x.
"""
from __future__ import annotations

import gc
import math
import time

import numpy as np

from benchmarks.common import check_size, interleaved, result, spread

SIZES = {"tiny": dict(n=96, side=48, rounds=2), "full": dict(n=1024, side=224, rounds=7)}
BATCH = 32
PRIME = 4


def run(size: str = "full") -> dict:
    import keras.src.legacy.preprocessing.image as legacy

    from mammo_keras.data.pipeline import make_dataset, preset

    settings = SIZES[check_size(size)]
    n, side = settings["n"], settings["side"]
    rng = np.random.default_rng(0)
    grey = rng.random((n, side, side, 1), dtype=np.float32)
    rgb = np.repeat(grey, 3, axis=-1)
    labels = (np.arange(n) % 2).astype(np.float32)
    config = preset("chougrad2018")
    generator = legacy.ImageDataGenerator(
        rotation_range=config.rotation_range, width_shift_range=config.width_shift_range,
        height_shift_range=config.height_shift_range, shear_range=math.degrees(config.shear_range),
        zoom_range=config.zoom_range, horizontal_flip=True, fill_mode="nearest",
        interpolation_order=config.interpolation_order)
    steps = math.ceil(n / BATCH)
    flows = {"grey": generator.flow(grey, labels, batch_size=BATCH, shuffle=True, seed=0),
             "rgb": generator.flow(rgb, labels, batch_size=BATCH, shuffle=True, seed=0)}
    rounds = settings["rounds"]

    def keras_epoch(channels: str):
        def epoch() -> float:
            flow = flows[channels]
            started = time.perf_counter()
            for _ in range(steps):
                next(flow)
            return n / (time.perf_counter() - started)
        return epoch

    def pipeline_epoch(*, primed: bool):
        def epoch() -> float:
            dataset = make_dataset(grey, labels, batch_size=BATCH, augment=config, shuffle=True, seed=0,
                                   epochs=math.ceil((PRIME + steps) / steps))
            iterator = iter(dataset)
            started = time.perf_counter()
            if primed:
                for _ in range(PRIME):
                    next(iterator)[0].numpy()
                started = time.perf_counter()
            for _ in range(steps):
                next(iterator)[0].numpy()  # the batch exists in host memory, as ImageDataGenerator's does
            seconds = time.perf_counter() - started
            del iterator, dataset
            gc.collect()
            return n / seconds
        return epoch

    sides = {"image_data_generator": keras_epoch("grey"), "tf_data": pipeline_epoch(primed=True),
             "tf_data_with_start": pipeline_epoch(primed=False), "image_data_generator_rgb": keras_epoch("rgb")}
    for side_run in sides.values():  # compile the resampler, warm both
        side_run()
    rates = interleaved(sides, rounds)
    keras_rate, pipeline_rate = (spread(rates[k])["median"] for k in ("image_data_generator", "tf_data"))
    ratios = [p / k for p, k in zip(rates["tf_data"], rates["image_data_generator"])]
    return result("augment", f"Augmentation throughput, Chougrad preset, {side}x{side}x1, batch {BATCH}",
                  ratio=pipeline_rate / keras_rate, ratio_label="tf.data / ImageDataGenerator.flow (images/s)",
                  goal=8.0, figures={
                      "images_per_epoch": n, "rounds": rounds,
                      "image_data_generator_images_per_s": spread(rates["image_data_generator"]),
                      "tf_data_images_per_s": spread(rates["tf_data"]),
                      "ratio_per_round": spread(ratios),
                      "tf_data_with_start_images_per_s": spread(rates["tf_data_with_start"]),
                      "ratio_with_start": round(spread(rates["tf_data_with_start"])["median"] / keras_rate, 3),
                      "image_data_generator_rgb_images_per_s": spread(rates["image_data_generator_rgb"]),
                      "ratio_to_rgb_generator": round(pipeline_rate / spread(rates["image_data_generator_rgb"])["median"],
                                                      3),
                      "per_round": {k: [round(v, 1) for v in vals] for k, vals in rates.items()}},
                  note="chougrad2018 preset on one channel (nearest); medians of interleaved epochs, "
                       "pipeline iterators created per round and deleted before the generator is timed")


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "full"), indent=2))
