"""Benchmark 4: Shen's whole-image network (1152x896), inference images/s and peak memory, fp32 vs mixed.

Model: `shen_whole_resnet50` (Resnet-Resnet, Table 2 row 3), random weights, batch 2 (Shen's).
"mixed" is float16 on a GPU and bfloat16 on a CPU, output layer in float32
(`mammo_keras.training.precision`). Speed: both models in one process, batches alternated,
medians. Peak memory: each precision in its own process (a process's peak cannot be reset):
on a GPU TensorFlow's peak allocator bytes, on a CPU the rise of peak resident memory over
the resident memory after building (the activations and the compute buffers of one batch).
Parity: same weights in both, probabilities compared (`prediction_parity`).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import numpy as np

from benchmarks.common import REPO, check_size, interleaved, median, result, timed

SIZES = {"tiny": dict(shape=(128, 96, 3), batches=1, rounds=1), "full": dict(shape=(1152, 896, 3), batches=1, rounds=3)}
BATCH = 2


def _build(shape, precision: str):
    from mammo_keras import models
    from mammo_keras.training.precision import precision_scope, with_float32_output

    with precision_scope(precision):
        return with_float32_output(models.get("shen_whole_resnet50", input_shape=shape))


def _rss_mb() -> float:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_memory(size: str, precision: str) -> dict:
    """In this (fresh) process: build, run one batch, report the peak memory of that batch."""
    import tensorflow as tf

    shape = SIZES[check_size(size)]["shape"]
    model = _build(shape, precision)
    images = np.random.default_rng(0).normal(size=(BATCH, *shape)).astype(np.float32)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    if gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
    before = _rss_mb()
    model.predict(images, batch_size=BATCH, verbose=0)
    if gpu:
        return {"device": "GPU", "peak_mb": tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"device": "CPU", "peak_mb": peak - before, "process_peak_mb": peak}


def _peak_in_child(size: str, precision: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_precision", "--child", size, precision],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"peak-memory child ({precision}) failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(size: str = "full") -> dict:
    import keras

    from mammo_keras.training.precision import policy_name, prediction_parity

    settings = SIZES[check_size(size)]
    shape = settings["shape"]
    mixed_name = policy_name("mixed")
    keras.utils.set_random_seed(0)
    built = {"float32": _build(shape, "float32"), "mixed": _build(shape, "mixed")}
    built["mixed"].set_weights(built["float32"].get_weights())
    images = np.random.default_rng(0).normal(size=(BATCH * settings["batches"], *shape)).astype(np.float32)

    def speed(name: str):
        model = built[name]
        return lambda: len(images) / timed(lambda: model.predict(images, batch_size=BATCH, verbose=0))

    for model in built.values():
        model.predict(images[:BATCH], batch_size=BATCH, verbose=0)  # trace
    rates = interleaved({name: speed(name) for name in built}, settings["rounds"])
    parity = prediction_parity(built["float32"], built["mixed"], images, batch_size=BATCH)
    del built
    memory = {name: _peak_in_child(size, name) for name in ("float32", "mixed")}
    fp32_rate, mixed_rate = median(rates["float32"]), median(rates["mixed"])
    figures = {"input": "x".join(map(str, shape)), "batch": BATCH, "mixed_policy": mixed_name,
               "images_per_s_float32": round(fp32_rate, 3), "images_per_s_mixed": round(mixed_rate, 3),
               "peak_memory_mb_float32": round(memory["float32"]["peak_mb"], 1),
               "peak_memory_mb_mixed": round(memory["mixed"]["peak_mb"], 1),
               "memory_ratio_mixed_to_float32": round(memory["mixed"]["peak_mb"] / memory["float32"]["peak_mb"], 3),
               "memory_device": memory["float32"]["device"], "parity": parity, "rounds": settings["rounds"],
               "per_round": {k: [round(v, 3) for v in vals] for k, vals in rates.items()}}
    return result("precision", f"Shen whole-image ResNet50 inference {figures['input']}, batch {BATCH}",
                  ratio=mixed_rate / fp32_rate, ratio_label=f"{mixed_name} / float32 (images/s)", goal=None,
                  figures=figures, note="no goal set by the issue: speed and memory reported as measured")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(peak_memory(sys.argv[2], sys.argv[3])))
    else:
        print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "full"), indent=2))
