"""The GPU check of issue 15: one run, at most 8 minutes on one H100/H200, one results JSON.

    bash benchmarks/gpu_check.sh                 # on the GPU machine -> benchmarks/gpu_results.json
    bash benchmarks/gpu_check.sh --dry-run       # every step on the CPU at toy sizes (about a minute)
    python -m benchmarks.gpu_check --dry-run --steps device,parity --out /tmp/check.json

Steps, in order (each writes its figures into the JSON as soon as it ends, so a run cut short
keeps what it measured; a step that fails records its error and the next one runs):

    device          device name, compute capability, TF / CUDA / cuDNN versions, TF32 default
    parity          GPU vs CPU on a tiny CNN with BatchNorm: the same weights predict the same
                    batch (TF32 on and off), one SGD step from the same weights
    mixed_parity    float32 vs mixed_float16, same weights (Chougrad ResNet50, 224 px)
    model_steps     model-only training steps/s at the paper's batch (Chougrad's 128) for VGG16,
                    ResNet50, InceptionV3 (224 px grey, AllFT), float32 (TF32) vs mixed float16,
                    XLA off; build seconds, first-step seconds, peak GPU memory per config
    input_bound     end to end: Chougrad InceptionV3 (2FT, mixed) at batch 128 fed by the tf.data
                    pipeline (augmentation on the CPU) and by batches augmented in the training
                    step (`RandomAugment`), each over the model alone on one resident batch
    table2_fold     one fold of Chougrad's Table 2 at the paper's epochs (30 head + up to 90 with
                    early stopping, batch 128, the chougrad2018 augmentation, mixed precision) on
                    phantom ROIs of DDSM's size (5,316 at 224 px), through `cv.train_and_test`
                    with its defaults; fixed costs (build, each stage's first-epoch excess,
                    traces of the train/test/predict steps, backups) and the fold's minutes,
                    times 5 against the paper's 91.6 min (GTX 980M). If the time left is short
                    the fold stops early and the paper's epochs are projected from the median
                    epoch (said in `projected`).
    model_steps_xla the model_steps configs with XLA on (jit_compile=True)

`gpu_check.sh` also counts XLA compilations per step from TensorFlow's log
(`xla_compiles`). `--dry-run` hides the GPU and runs every step at toy sizes on the CPU (VGG16 at
32 px for every model, 48 ROIs, epochs x 0.034), to check the code path; its figures say nothing
about a GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import re
import sys
import time
import traceback
from pathlib import Path

import numpy as np

STEPS = ("device", "parity", "mixed_parity", "model_steps", "input_bound", "table2_fold", "model_steps_xla")
MODELS = ("vgg16", "resnet50", "inceptionv3")
PAPER_MINUTES_FIVE_FOLDS = 91.6
SIZES = {
    "full": dict(side=224, batch=128, step_seconds=4.0, min_steps=5, parity_batch=64, n_rois=5316,
                 epoch_scale=1.0, input_items=1024, input_steps=20, models=MODELS, parity_model="resnet50",
                 input_model="inceptionv3", fold_model="inceptionv3"),
    # The dry run: the smallest backbone at its smallest input, so that every step runs in about a minute.
    "toy": dict(side=32, batch=4, step_seconds=0.2, min_steps=2, parity_batch=4, n_rois=48,
                epoch_scale=0.034, input_items=32, input_steps=3, models=("vgg16",), parity_model="vgg16",
                input_model="vgg16", fold_model="vgg16"),
}
# Seconds a step needs at least to start (the rest of the budget is shared in order).
MIN_SECONDS = {"device": 1, "parity": 10, "mixed_parity": 20, "model_steps": 60, "input_bound": 40,
               "table2_fold": 90, "model_steps_xla": 60}


def _marker(name: str) -> None:
    """A line in stderr that gpu_check.sh uses to attribute TensorFlow's compile log lines to a step."""
    print(f"GPU_CHECK_STEP {name}", file=sys.stderr, flush=True)


def _gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _reset_peak() -> None:
    import tensorflow as tf

    if _gpu():
        tf.config.experimental.reset_memory_stats("GPU:0")


def _peak_mb() -> float | None:
    import tensorflow as tf

    if not _gpu():
        return None
    return round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20, 1)


def _fresh() -> None:
    import keras

    keras.backend.clear_session()
    gc.collect()


def step_device(size: dict, deadline: float) -> dict:
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    details = [tf.config.experimental.get_device_details(gpu) for gpu in gpus]
    build = tf.sysconfig.get_build_info()
    return {"gpu": bool(gpus), "device_name": details[0].get("device_name") if details else "CPU",
            "compute_capability": list(details[0].get("compute_capability", ())) if details else None,
            "gpus": [d.get("device_name", "") for d in details], "tensorflow": tf.__version__,
            "keras": keras.__version__, "cuda": build.get("cuda_version"), "cudnn": build.get("cudnn_version"),
            "tf32_default": bool(tf.config.experimental.tensor_float_32_execution_enabled()),
            "cpu_count": os.cpu_count()}


def _tiny_cnn(side: int = 32):
    import keras

    inputs = keras.Input((side, side, 1))
    x = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


def step_parity(size: dict, deadline: float) -> dict:
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 32, 32, 1)).astype(np.float32)
    y = keras.utils.to_categorical(np.arange(32) % 2, 2)
    keras.utils.set_random_seed(0)
    with tf.device("/CPU:0"):
        cpu_model = _tiny_cnn()
    accelerator = _tiny_cnn()
    accelerator.set_weights(cpu_model.get_weights())
    start = cpu_model.get_weights()
    with tf.device("/CPU:0"):
        cpu_out = cpu_model.predict(x, batch_size=32, verbose=0)
    out = {"gpu": _gpu()}
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    for flag in (True, False):
        tf.config.experimental.enable_tensor_float_32_execution(flag)
        accelerator_out = accelerator.predict(x, batch_size=32, verbose=0)
        out[f"predict_max_abs_diff_tf32_{'on' if flag else 'off'}"] = float(np.abs(accelerator_out - cpu_out).max())
    tf.config.experimental.enable_tensor_float_32_execution(tf32)
    out["same_class"] = float(np.mean(accelerator_out.argmax(-1) == cpu_out.argmax(-1)))
    for model, device in ((cpu_model, "/CPU:0"), (accelerator, None)):
        model.set_weights(start)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy", jit_compile=False)
        with tf.device(device) if device else contextlib.nullcontext():
            model.train_on_batch(x, y)
    out["train_step_weights_max_abs_diff"] = float(max(
        np.abs(a - b).max() for a, b in zip(cpu_model.get_weights(), accelerator.get_weights())))
    _fresh()
    return out


def _chougrad(name: str, side: int, fine_tune: str = "AllFT"):
    from mammo_keras import models

    return models.get(f"chougrad_{name}", input_shape=(side, side, 1), fine_tune=fine_tune, weights=None)


def step_mixed_parity(size: dict, deadline: float) -> dict:
    import keras

    from mammo_keras.training.precision import policy_name, precision_scope, prediction_parity, with_float32_output

    side, batch = size["side"], size["parity_batch"]
    keras.utils.set_random_seed(0)
    reference = _chougrad(size["parity_model"], side)
    with precision_scope("mixed"):
        candidate = with_float32_output(_chougrad(size["parity_model"], side))
    candidate.set_weights(reference.get_weights())
    images = np.random.default_rng(1).normal(0, 40, (batch, side, side, 1)).astype(np.float32)
    parity = prediction_parity(reference, candidate, images, batch_size=batch)
    _fresh()
    return {"model": f"chougrad_{size['parity_model']}", "mixed_policy": policy_name("mixed"), "images": batch,
            **parity}


def _model_steps(size: dict, deadline: float, *, xla: bool) -> dict:
    import keras
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    tf_config.disable_op_determinism()  # Keras turns XLA off under op determinism (table2_fold sets it)
    from mammo_keras.training.precision import policy_name, precision_scope, with_float32_output

    side, batch = size["side"], size["batch"]
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(0, 40, (batch, side, side, 1)).astype(np.float32))
    y = tf.constant(keras.utils.to_categorical(np.arange(batch) % 2, 2))
    out = {"batch": batch, "input": f"{side}x{side}x1", "xla": xla,
           "tf32": bool(tf.config.experimental.tensor_float_32_execution_enabled()), "configs": {}}
    for name in size["models"]:
        for precision in ("float32", "mixed"):
            key = f"{name}_{policy_name(precision)}"
            if time.monotonic() > deadline:
                out["configs"][key] = {"skipped": "time budget"}
                continue
            _reset_peak()
            started = time.perf_counter()
            with precision_scope(precision):
                model = with_float32_output(_chougrad(name, side))
            model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9), loss="categorical_crossentropy",
                          jit_compile=xla)
            built = time.perf_counter() - started
            started = time.perf_counter()
            model.train_on_batch(x, y)
            first = time.perf_counter() - started
            model.train_on_batch(x, y)
            steps, started = 0, time.perf_counter()
            while steps < size["min_steps"] or time.perf_counter() - started < size["step_seconds"]:
                loss = model.train_on_batch(x, y)
                steps += 1
            float(np.asarray(loss))  # the last step has finished
            seconds = time.perf_counter() - started
            out["configs"][key] = {"steps_per_s": round(steps / seconds, 3), "xla_effective": bool(model.jit_compile),
                                   "images_per_s": round(steps * batch / seconds, 1),
                                   "build_s": round(built, 2), "first_step_s": round(first, 2), "steps": steps,
                                   "peak_gpu_memory_mb": _peak_mb()}
            del model
            _fresh()
    return out


def step_model_steps(size: dict, deadline: float) -> dict:
    return _model_steps(size, deadline, xla=False)


def step_model_steps_xla(size: dict, deadline: float) -> dict:
    return _model_steps(size, deadline, xla=True)


def step_input_bound(size: dict, deadline: float) -> dict:
    import keras
    import tensorflow as tf

    from benchmarks.bench_gpu_table2 import phantom_rois
    from mammo_keras.data.pipeline import make_dataset, preset
    from mammo_keras.training.fit import with_augmentation
    from mammo_keras.training.precision import precision_scope, with_float32_output

    side, batch, steps = size["side"], size["batch"], size["input_steps"]
    images, index = phantom_rois(max(size["input_items"], 2 * batch), side)
    images = (images[..., None] * 40.0).astype(np.float32)
    targets = keras.utils.to_categorical(index["label"].to_numpy(), 2).astype(np.float32)
    augment = preset("chougrad2018")
    keras.utils.set_random_seed(0)
    with precision_scope("mixed"):
        model = with_float32_output(_chougrad(size["input_model"], side, "2FT"))
    from tensorflow.python.framework import config as tf_config

    tf_config.disable_op_determinism()  # as a GPU run with deterministic=False: Keras' XLA "auto" applies
    model.compile(optimizer=keras.optimizers.SGD(1e-4, momentum=0.9), loss="categorical_crossentropy")
    augmented = with_augmentation(model, augment, seed=0)
    augmented.compile(optimizer=keras.optimizers.SGD(1e-4, momentum=0.9), loss="categorical_crossentropy")
    fixed = (tf.constant(images[:batch]), tf.constant(targets[:batch]))
    epochs = 2 + steps * batch // len(images)

    def timed(train, iterator=None) -> float:
        for _ in range(2):  # trace, and fill the pipeline
            train.train_on_batch(*(next(iterator) if iterator is not None else fixed))
        started = time.perf_counter()
        for _ in range(steps):
            loss = train.train_on_batch(*(next(iterator) if iterator is not None else fixed))
        float(np.asarray(loss))
        return steps / (time.perf_counter() - started)

    model_alone = timed(model)
    pipeline = timed(model, iter(make_dataset(images, targets, batch_size=batch, augment=augment, shuffle=True,
                                              seed=0, epochs=epochs, drop_remainder=True)))
    in_step = timed(augmented, iter(make_dataset(images, targets, batch_size=batch, augment=None, shuffle=True,
                                                 seed=0, epochs=epochs, drop_remainder=True)))
    _fresh()
    return {"model": f"chougrad_{size['input_model']} 2FT mixed", "batch": batch, "steps": steps,
            "model_alone_steps_per_s": round(model_alone, 3), "pipeline_fed_steps_per_s": round(pipeline, 3),
            "augmented_in_step_steps_per_s": round(in_step, 3), "xla_effective": bool(model.jit_compile),
            "ratio_pipeline_fed": round(pipeline / model_alone, 3), "ratio_augmented_in_step": round(in_step / model_alone, 3),
            "peak_gpu_memory_mb": _peak_mb()}


def step_table2_fold(size: dict, deadline: float) -> dict:
    import tempfile

    import keras
    import pandas as pd

    from benchmarks.bench_gpu_table2 import phantom_rois
    from mammo_keras.data.pipeline import preset as augment_preset
    from mammo_keras.training import cv, fit
    from mammo_keras.training.distribute import build_model, training_scope
    from mammo_keras.training.stages import preset as stage_preset

    side = size["side"]
    images, index = phantom_rois(size["n_rois"], side)
    images = images * 40.0  # GCN-like 0-255 units
    stages = [s.scaled(size["epoch_scale"]) if size["epoch_scale"] != 1.0 else s for s in stage_preset("chougrad2018")]
    paper_epochs = {s.name: s.epochs for s in stages}
    timings = {"build": 0.0, "backup": 0.0}
    capped = {"hit": False}
    traces = {"train": 0, "test": 0, "predict": 0}
    originals = {"train": keras.Model.train_step, "test": keras.Model.test_step, "predict": keras.Model.predict_step}
    epoch_end, save = fit.EpochLog.on_epoch_end, fit.FitBackup.save

    def counted(kind):
        def step(self, data):
            traces[kind] += 1  # Python runs a step only while tracing it
            return originals[kind](self, data)
        return step

    def capped_epoch_end(self, epoch, logs=None):
        epoch_end(self, epoch, logs)
        if time.monotonic() > deadline - 20:  # leave time to score the test fold
            self.model.stop_training = capped["hit"] = True

    def timed_save(self, state, arrays):
        started = time.perf_counter()
        save(self, state, arrays)
        timings["backup"] += time.perf_counter() - started

    def builder():
        started = time.perf_counter()
        model = build_model(lambda: _chougrad(size["fold_model"], side, "2FT"))
        timings["build"] += time.perf_counter() - started
        return model

    keras.Model.train_step, keras.Model.test_step, keras.Model.predict_step = (counted(k) for k in originals)
    fit.EpochLog.on_epoch_end, fit.FitBackup.save = capped_epoch_end, timed_save
    _reset_peak()
    try:
        with tempfile.TemporaryDirectory(prefix="gpu_check_fold_") as tmp:
            work = Path(tmp)
            folds = cv.assign_folds(index, 5, 0, work / "folds.csv")
            test = (folds["fold"] == 0).to_numpy()
            train_rows = np.flatnonzero(~test)
            inner = cv._inner_split(index.iloc[train_rows].reset_index(drop=True), 0.15, 0)
            started = time.perf_counter()
            with training_scope("default", "mixed" if _gpu() else "float32"):
                _, metrics = cv.train_and_test(
                    builder, images, index, cv.TrainSpec(stages=tuple(stages), augment=augment_preset("chougrad2018")),
                    work / "fold_0", fit_rows=train_rows[inner == "train"], val_rows=train_rows[inner == "val"],
                    test_rows=np.flatnonzero(test), fold=0, seed=0)
            seconds = time.perf_counter() - started
            log = pd.read_csv(work / "fold_0" / "log.csv")
    finally:
        keras.Model.train_step, keras.Model.test_step, keras.Model.predict_step = originals.values()
        fit.EpochLog.on_epoch_end, fit.FitBackup.save = epoch_end, save
    by_stage, steady_total, excess_total, projected_total = {}, 0.0, 0.0, 0.0
    for name, epochs in log.groupby("stage", sort=False):
        per_epoch = epochs["seconds"].to_numpy()
        steady = float(np.median(per_epoch[1:])) if len(per_epoch) > 1 else float(per_epoch[0])
        cut = capped["hit"] and len(per_epoch) < paper_epochs[name]
        by_stage[name] = {"epochs_run": int(len(per_epoch)), "paper_epochs": paper_epochs[name], "cut_by_budget": cut,
                          "first_epoch_s": round(float(per_epoch[0]), 2), "steady_epoch_s": round(steady, 3),
                          "first_epoch_excess_s": round(float(per_epoch[0]) - steady, 2)}
        steady_total += steady * len(per_epoch)
        excess_total += float(per_epoch[0]) - steady
        projected_total += steady * (paper_epochs[name] if cut else len(per_epoch))
    fixed = seconds - steady_total
    fold_seconds = fixed + projected_total  # = the wall time unless a stage was cut by the budget
    stopped_by_budget = capped["hit"]
    paper_fold_minutes = PAPER_MINUTES_FIVE_FOLDS / 5
    return {"model": f"chougrad_{size['fold_model']} 2FT", "rois": size["n_rois"], "side": side, "n_train": metrics["n_train"], "n_val": metrics["n_val"],
            "n_test": metrics["n_test"], "accuracy": metrics["accuracy"], "auc": metrics["auc"],
            "augment_on": metrics.get("augment_on"), "deterministic": metrics.get("deterministic"),
            "note": "TrainSpec defaults: op determinism on, under which Keras compiles no training step with XLA",
            "wall_s": round(seconds, 1), "stages": by_stage, "projected": bool(stopped_by_budget),
            "fold_minutes": round(fold_seconds / 60, 2), "five_folds_minutes": round(5 * fold_seconds / 60, 1),
            "paper_five_folds_minutes": PAPER_MINUTES_FIVE_FOLDS,
            "speedup_vs_paper": round(paper_fold_minutes / (fold_seconds / 60), 2),
            "fixed_costs": {"build_s": round(timings["build"], 2), "first_epoch_excess_s": round(excess_total, 2),
                            "backup_s": round(timings["backup"], 2), "fixed_s": round(fixed, 2),
                            "fixed_share": round(fixed / seconds, 3), "traces": traces},
            "peak_gpu_memory_mb": _peak_mb()}


def count_compiles(log: str | Path) -> dict:
    """XLA compilations per step from a TensorFlow log (TF_CPP_VMODULE=device_compiler=1)."""
    counts: dict[str, dict] = {}
    step = "start"
    pattern = re.compile(r"Compilation of XLA executable time: ([0-9.]+) (ms|s|us)")
    for line in Path(log).read_text(errors="replace").splitlines():
        if line.startswith("GPU_CHECK_STEP "):
            step = line.split(" ", 1)[1].strip()
            continue
        found = pattern.search(line)
        if found:
            value = float(found.group(1)) * {"ms": 1e-3, "s": 1.0, "us": 1e-6}[found.group(2)]
            entry = counts.setdefault(step, {"compiles": 0, "seconds": 0.0})
            entry["compiles"] += 1
            entry["seconds"] = round(entry["seconds"] + value, 3)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="results JSON (default benchmarks/gpu_results.json; "
                                                    "dry run: $TMPDIR/mammo_gpu_check_dry_run.json)")
    parser.add_argument("--dry-run", action="store_true", help="hide the GPU; every step at toy sizes on the CPU")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {', '.join(STEPS)}")
    parser.add_argument("--budget-s", type=float, default=440.0, help="wall-clock budget of all steps (s)")
    parser.add_argument("--count-compiles", metavar="LOG", help="only add the XLA compile counts of LOG to --out")
    args = parser.parse_args(argv)
    default = (Path(os.environ.get("TMPDIR", "/tmp")) / "mammo_gpu_check_dry_run.json" if args.dry_run
               else Path(__file__).resolve().parent / "gpu_results.json")
    out = Path(args.out) if args.out else default
    if args.count_compiles:
        payload = json.loads(out.read_text())
        payload["xla_compiles"] = count_compiles(args.count_compiles)
        out.write_text(json.dumps(payload, indent=2, sort_keys=True))
        return 0
    chosen = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}; valid: {list(STEPS)}")
    if args.dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"  # before TensorFlow starts
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)  # peak memory = what the step needed
    from mammo_keras.fileio import atomic_write_json

    size = SIZES["toy" if args.dry_run else "full"]
    started = time.monotonic()
    deadline = started + args.budget_s
    payload = {"dry_run": args.dry_run, "size": "toy" if args.dry_run else "full",
               "started_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
               "budget_s": args.budget_s, "steps": {}, "command": "python -m benchmarks.gpu_check " + " ".join(
                   argv if argv is not None else sys.argv[1:])}
    for name in [s for s in STEPS if s in chosen]:
        left = deadline - time.monotonic()
        if left < MIN_SECONDS[name] and not args.dry_run:
            payload["steps"][name] = {"skipped": f"time budget ({left:.0f} s left, needs {MIN_SECONDS[name]} s)"}
            continue
        _marker(name)
        began = time.perf_counter()
        try:
            record = globals()[f"step_{name}"](size, deadline)
        except Exception as error:  # noqa: BLE001 - one failed step must not lose the others
            record = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-3000:]}
        record["seconds"] = round(time.perf_counter() - began, 1)
        payload["steps"][name] = record
        payload["seconds"] = round(time.monotonic() - started, 1)
        atomic_write_json(out, payload)
        print(f"{name:16s} {record['seconds']:7.1f} s  {'ERROR ' + record['error'] if 'error' in record else 'ok'}",
              flush=True)
    _marker("end")
    payload["peak_gpu_memory_mb"] = _peak_mb()
    payload["seconds"] = round(time.monotonic() - started, 1)
    atomic_write_json(out, payload)
    print(f"gpu check: {len(payload['steps'])} steps in {payload['seconds']:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
