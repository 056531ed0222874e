"""Benchmark 6: XLA (jit_compile) on or off for a training step, measured, not assumed.

Same model (Coccomini's scratch CNN, 150x150x1), same batch (16) from tensors in memory, two
compiled copies with the same weights: `jit_compile=False` and `jit_compile=True`. Keras'
default ("auto") turns XLA on for GPUs and off for CPUs; this says whether that is right here.
Keras also turns XLA off while TensorFlow's op determinism is on (which `cv.seed_everything`
sets by default), so this benchmark turns op determinism off first and records the
`jit_compile` Keras kept (`xla_effective`).
"""
from __future__ import annotations

import numpy as np

from benchmarks.common import check_size, interleaved, median, result, spread, timed

SIZES = {"tiny": dict(side=48, steps=2, rounds=1, fc_units=64), "full": dict(side=150, steps=12, rounds=5, fc_units=2048)}
BATCH = 16


def run(size: str = "full") -> dict:
    import keras
    from tensorflow.python.framework import config as tf_config

    from mammo_keras import models

    settings = SIZES[check_size(size)]
    side, steps = settings["side"], settings["steps"]
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, side, side, 1), dtype=np.float32)
    y = (np.arange(BATCH) % 2).astype(np.float32)[:, None]
    determinism = tf_config.is_op_determinism_enabled()
    tf_config.disable_op_determinism()  # Keras refuses XLA under op determinism
    built, effective = {}, {}
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = models.get("coccomini_scratch_cnn", input_shape=(side, side, 1), fc_units=settings["fc_units"])
        model.compile(optimizer="adam", loss="binary_crossentropy", jit_compile=jit)
        model.train_on_batch(x, y)  # trace / compile
        built["xla" if jit else "no_xla"] = model
        effective["xla" if jit else "no_xla"] = bool(model.jit_compile)

    def speed(name: str):
        return lambda: steps / timed(lambda: [built[name].train_on_batch(x, y) for _ in range(steps)])

    rates = interleaved({name: speed(name) for name in built}, settings["rounds"])
    if determinism:
        tf_config.enable_op_determinism()
    xla, plain = median(rates["xla"]), median(rates["no_xla"])
    return result("xla", f"Training step with XLA vs without, scratch CNN {side}x{side}x1, batch {BATCH}",
                  ratio=xla / plain, ratio_label="jit_compile=True / False (steps/s)", goal=None,
                  figures={"steps_per_s_xla": round(xla, 2), "steps_per_s_no_xla": round(plain, 2),
                           "xla_effective": effective, "op_determinism_before": determinism,
                           "spread": {k: spread(v) for k, v in rates.items()},
                           "rounds": settings["rounds"],
                           "per_round": {k: [round(v, 2) for v in vals] for k, vals in rates.items()}},
                  note="ratio < 1: XLA slows this device; Keras' default leaves it off on CPUs")


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "full"), indent=2))
