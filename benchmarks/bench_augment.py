"""Benchmark 1: augmentation throughput, tf.data pipeline vs Keras' ImageDataGenerator.flow.

Both sides draw a random transform per image with identical ranges (Chougrad's: rotation 40
degrees, shifts 0.25, shear 0.5 rad = 28.65 degrees for modern Keras, zoom 0.5-1.5, horizontal
flip, fill "nearest", bilinear) on the same 224x224x3 float32 images, batch 32, shuffled, and
deliver one epoch of augmented batches. ImageDataGenerator is the papers' tool: a NumPy/SciPy
loop over images in the calling thread. The pipeline is `make_dataset` (tf.data, in-graph
affine resampling, parallel map, prefetch). Goal: >= 5x.
"""
from __future__ import annotations

import math

import numpy as np

from benchmarks.common import check_size, interleaved, median, result, timed

SIZES = {"tiny": dict(n=64, side=64, rounds=1), "full": dict(n=512, side=224, rounds=3)}
BATCH = 32


def run(size: str = "full") -> dict:
    import keras.src.legacy.preprocessing.image as legacy

    from mammo_keras.data.pipeline import AugmentConfig, make_dataset

    settings = SIZES[check_size(size)]
    n, side = settings["n"], settings["side"]
    rng = np.random.default_rng(0)
    images = rng.random((n, side, side, 3), dtype=np.float32)
    labels = (np.arange(n) % 2).astype(np.float32)
    config = AugmentConfig(rotation_range=40.0, width_shift_range=0.25, height_shift_range=0.25, shear_range=0.5,
                           zoom_range=(0.5, 1.5), horizontal_flip=True, fill_mode="nearest",
                           interpolation_order=1)
    generator = legacy.ImageDataGenerator(
        rotation_range=40.0, width_shift_range=0.25, height_shift_range=0.25,
        shear_range=math.degrees(0.5), zoom_range=(0.5, 1.5), horizontal_flip=True, fill_mode="nearest",
        interpolation_order=1)
    steps = math.ceil(n / BATCH)
    flow = generator.flow(images, labels, batch_size=BATCH, shuffle=True, seed=0)
    dataset = make_dataset(images, labels, batch_size=BATCH, augment=config, shuffle=True, seed=0)

    def keras_epoch() -> float:
        def epoch():
            for _ in range(steps):
                next(flow)
        return n / timed(epoch)

    def pipeline_epoch() -> float:
        def epoch():
            for batch in dataset:
                batch[0].numpy()  # the batch exists in host memory, as ImageDataGenerator's does
        return n / timed(epoch)

    pipeline_epoch()  # trace the graph once
    rates = interleaved({"image_data_generator": keras_epoch, "tf_data": pipeline_epoch}, settings["rounds"])
    keras_rate, pipeline_rate = median(rates["image_data_generator"]), median(rates["tf_data"])
    return result("augment", f"Augmentation throughput at {side}x{side}x3, batch {BATCH}",
                  ratio=pipeline_rate / keras_rate, ratio_label="tf.data / ImageDataGenerator.flow (images/s)",
                  goal=5.0, figures={
                      "images": n, "image_data_generator_images_per_s": round(keras_rate, 1),
                      "tf_data_images_per_s": round(pipeline_rate, 1), "rounds": settings["rounds"],
                      "per_round": {k: [round(v, 1) for v in vals] for k, vals in rates.items()}},
                  note="identical ranges (Chougrad 2018 preset, bilinear); medians of interleaved epochs")


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "full"), indent=2))
