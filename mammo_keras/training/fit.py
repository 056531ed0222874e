"""One generic loop that runs any list of stages on in-memory arrays."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile
import threading
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from mammo_keras.data.pipeline import AugmentConfig, balance_batches, lazy_batch, make_dataset
from mammo_keras.data.rows import is_lazy
from mammo_keras.errors import TrainingDiverged
from mammo_keras.fileio import atomic_write_text
from mammo_keras.models.inputs import (PAIR_PARTS, as_model_input, as_targets, count, input_channels,  # noqa: F401
                                       positive_scores)
from mammo_keras.training.batchnorm import PreciseBatchNorm, nested_batchnorm, recalibrated_layers, warn_if_stale
from mammo_keras.training.distribute import ready_for_fit
from mammo_keras.training.feature_cache import CachedFeatures, feature_dataset, frozen_cut
from mammo_keras.training.stages import Stage, apply_l2, apply_trainable, make_optimizer, trainable_flags
from mammo_keras.vocabulary import SELECTIONS

PREDICT_BATCH = 32
"""Batch of every prediction pass (Keras' default): one batch shape, one traced predict step."""

PREDICT_BATCH_BYTES = 32 * 2 ** 20
"""The most float32 input bytes of one prediction batch: large items get a smaller batch (whole
images of 1152x896 grey: 8 a batch, not 32), so the batches a prediction pass holds (the one the
model runs, those read ahead) stay a few tens of MB whatever the item size and the part's length."""


class FixedBatches:
    """Model inputs held once as tensors (lazy rows: read per batch) and served in batches of one shape
    (the last one padded).

    Keras traces its predict step again for every new batch shape (a partial last batch is
    one), and XLA compiles again; here every batch has `batch_size` rows, so a model traces
    its predict step once however many times it predicts. Rows are independent at inference,
    so the padding (copies of the last row, dropped from the outputs) changes no real row.

    Inputs of one batch or fewer rows are predicted by calling the model eagerly instead: tracing a
    predict step costs seconds for a large network (InceptionV3: 4-5 s on 2 CPU cores), one eager
    forward pass of a few rows a fraction of that, and the small validation and test parts of short
    runs are predicted once per epoch or once per part. The rule depends on the row count alone, so
    a run and its resumed copy predict the same way; eager outputs agree with the traced step's to
    float32 rounding (about 1e-7), the same call `predict_image` makes for one image.
    """

    def __init__(self, inputs, *, batch_size: int = PREDICT_BATCH):
        arrays = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        self.n, self.batch_size = len(arrays[0]), predict_batch_size(arrays, batch_size)
        self.arrays = arrays

    @functools.cached_property
    def dataset(self):
        """The padded batches as a tf.data dataset, built on first use (the eager path of a part of one
        batch or fewer rows never builds it): arrays in memory are held once as a tensor, lazy rows read
        per batch."""
        import tensorflow as tf

        resident = [a if is_lazy(a) else tf.convert_to_tensor(np.asarray(a, dtype=np.float32)) for a in self.arrays]
        size, last = self.batch_size, max(self.n - 1, 0)

        def take(part, rows):
            return lazy_batch(part, rows, size) if is_lazy(part) else tf.gather(part, rows)

        @tf.autograph.experimental.do_not_convert  # plain graph code (see data.pipeline._graph_only)
        def batch(step):
            rows = tf.minimum(tf.range(step * size, step * size + size), last)
            parts = tuple(take(part, rows) for part in resident)
            return (parts,) if len(parts) > 1 else parts[0]  # (inputs,): Keras reads a 2-tuple as (x, y)

        return tf.data.Dataset.range(-(-self.n // size)).map(batch).prefetch(2)

    def predict(self, model: keras.Model) -> np.ndarray:
        if self.n == 0:
            return np.zeros((0, *model.outputs[0].shape[1:]), np.float32)
        if self.n <= self.batch_size and not _distributed(model):
            parts = [np.asarray(resident(part), dtype=np.float32) for part in self.arrays]
            outputs = model(parts if len(parts) > 1 else parts[0], training=False)
            return np.asarray(keras.ops.convert_to_numpy(outputs))
        return np.asarray(model.predict(self.dataset, verbose=0))[:self.n]


def predict_batch_size(arrays: Sequence, batch_size: int = PREDICT_BATCH) -> int:
    """`batch_size`, or fewer rows where that many would exceed `PREDICT_BATCH_BYTES` of float32 inputs
    (every input of a row counted); at least 1. Rows are independent at inference, so the batch size
    changes no prediction beyond float32 rounding; it depends on the item shape alone, so a run and
    its resumed copy batch alike."""
    row_bytes = sum(4 * int(np.prod(np.shape(array)[1:])) for array in arrays)  # lazy rows: their .shape
    return max(1, min(int(batch_size), PREDICT_BATCH_BYTES // max(row_bytes, 1)))


def _distributed(model: keras.Model) -> bool:
    """Whether the model was built under a tf.distribute strategy (its steps then run per replica)."""
    import tensorflow as tf

    return getattr(model, "_distribute_strategy", None) is not None or tf.distribute.has_strategy()


def resident(inputs):
    """Model inputs as arrays in memory: lazy rows (`data.rows.ItemRows`) read, anything else as it is
    (a model with several inputs takes a list of arrays, which must stay a list)."""
    return np.asarray(inputs, np.float32) if is_lazy(inputs) else inputs


def predict_fixed(model: keras.Model, inputs, *, batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """`model.predict(inputs)` over batches of one shape (`FixedBatches`): one traced predict step."""
    return FixedBatches(inputs, batch_size=batch_size).predict(model)


def balanced_class_weight(labels: np.ndarray) -> dict[int, float]:
    """n / (k * count_c), scikit-learn's 'balanced' rule."""
    labels = np.asarray(labels).astype(int)
    classes, counts = np.unique(labels, return_counts=True)
    return {int(c): float(len(labels) / (len(classes) * n)) for c, n in zip(classes, counts)}


def complement_class_weight(labels: np.ndarray) -> dict[int, float]:
    """weight(x) = freq(Y) / (freq(X) + freq(Y)) for two classes X, Y (Coccomini, Ch. 4)."""
    labels = np.asarray(labels).astype(int)
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) != 2:
        raise ValueError("the complement class weight is defined for two classes. "
                         f"Received: classes={classes.tolist()}")
    total = counts.sum()
    return {int(classes[0]): float(counts[1] / total), int(classes[1]): float(counts[0] / total)}


def class_weights(rule: str | None, labels: np.ndarray) -> dict[int, float] | None:
    """Keras `class_weight` for a stage's rule ("batch" weighs samples in the pipeline instead)."""
    if rule == "balanced":
        return balanced_class_weight(labels)
    if rule == "complement":
        return complement_class_weight(labels)
    return None


def regularisation_penalty(model: keras.Model) -> float:
    """The model's current weight penalty (sum of its regularisation losses)."""
    losses = model.losses
    return float(sum(float(keras.ops.convert_to_numpy(loss)) for loss in losses)) if losses else 0.0


class ValidationMetrics(keras.callbacks.Callback):
    """The epoch's validation numbers from one forward pass over the validation rows: `val_auc` (ROC
    AUC of the positive-class score; NaN unless the part holds two classes and the network is
    binary), `val_loss` and
    `val_accuracy` (against `targets`, the model's one-hot or 0/1 targets), so that `fit` runs no
    evaluation of its own.

    `val_loss` is the compiled loss over the whole part plus the model's penalties, which is what
    Keras's evaluation reports (its batches' losses weighted by their sizes), to float32 rounding
    (measured: 8e-8 relative; tests/training/test_fixed_costs.py). One pass instead of two, and no
    test step traced per stage: the predict step is traced once per fold (or a small part is
    predicted eagerly, `FixedBatches`).
    """

    def __init__(self, inputs, labels: np.ndarray, targets: np.ndarray, batch_size: int = PREDICT_BATCH):
        super().__init__()
        self.batches, self.labels = FixedBatches(inputs, batch_size=batch_size), np.asarray(labels).astype(int)
        self.targets = np.asarray(targets, np.float32)

    def on_epoch_end(self, epoch, logs=None):
        from mammo_keras.evaluation.metrics import auc

        predictions = self.batches.predict(self.model)
        if logs is None:
            return
        if not np.isfinite(predictions).all():  # diverged weights: NaN numbers, so fit_stages says where
            logs.update({"val_auc": float("nan"), "val_loss": float("nan"), "val_accuracy": float("nan")})
            return
        # a network with more than two outputs has no positive-class score, even on a part holding two of its classes
        binary = predictions.ndim == 1 or predictions.shape[-1] <= 2
        logs["val_auc"] = (auc(self.labels, positive_scores(predictions))
                           if binary and len(np.unique(self.labels)) == 2 else float("nan"))
        logs.update(validation_logs(self.model, self.targets, predictions))


def validation_logs(model: keras.Model, targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """`val_loss` (the compiled loss and the model's penalties) and `val_accuracy` of `predictions`."""
    loss = model.compute_loss(y=keras.ops.convert_to_tensor(targets), y_pred=keras.ops.convert_to_tensor(predictions),
                              training=False)
    if targets.shape[-1] == 1:
        hits = (predictions[:, 0] > 0.5) == (targets[:, 0] > 0.5)
    else:
        hits = np.argmax(predictions, axis=-1) == np.argmax(targets, axis=-1)
    return {"val_loss": float(keras.ops.convert_to_numpy(loss)), "val_accuracy": float(np.mean(hits))}


class BestEpoch:
    """The weights of the best epoch over every stage (cumulative epoch numbers), by one monitor.

    `candidates`: the cumulative epochs allowed (snapshots at regular intervals, as Jain & Levy
    took four); None allows every epoch.
    """

    def __init__(self, model: keras.Model, selection: str, candidates: set[int] | None = None):
        if selection not in SELECTIONS:
            raise ValueError(f"`selection` must be one of {SELECTIONS}. Received: selection={selection!r}")
        self.model, self.selection, self.candidates = model, selection, candidates
        self.monitor = selection[len("best_"):] if selection != "last" else None
        self.best_value, self.best_epoch, self._weights = None, None, None

    def consider(self, epoch: int, logs: dict) -> None:
        if self.monitor is None or (self.candidates is not None and epoch not in self.candidates):
            return
        value = logs.get(self.monitor)
        if value is None or not np.isfinite(value):
            return
        better = (self.best_value is None or
                  (value < self.best_value if self.monitor == "val_loss" else value > self.best_value))
        if better:
            self.best_value, self.best_epoch = float(value), epoch
            self._weights = [np.copy(w) for w in self.model.get_weights()]

    def restore(self) -> None:
        if self._weights is not None:
            self.model.set_weights(self._weights)

    def state(self) -> tuple[dict, list[np.ndarray] | None]:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch}, self._weights

    def load_state(self, state: dict, weights: list[np.ndarray] | None) -> None:
        self.best_value, self.best_epoch, self._weights = state["best_value"], state["best_epoch"], weights


class EpochLog(keras.callbacks.Callback):
    """One row per epoch: stage, epochs, metrics, learning rate, seconds, penalty and data loss.

    Keras' `loss` is the mean over the epoch's batches of (data loss + weight penalty), the
    penalty changing as the weights do; `penalty` is its mean over the same batches (taken
    before each step, from the weights that step's loss saw, when the model has a penalty) and
    `data_loss` = `loss` - `penalty`, so a run whose loss is mostly penalty shows it.
    """

    def __init__(self, stage: str, rows: list[dict], *, first_epoch: int = 0, best: BestEpoch | None = None,
                 penalty_of: keras.Model | None = None):
        super().__init__()
        self.stage, self.rows, self.first_epoch, self.best = stage, rows, first_epoch, best
        self.penalty_of = penalty_of
        self._started = 0.0
        self._penalties: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()
        self._penalties = []

    def on_train_batch_begin(self, batch, logs=None):
        if (self.penalty_of or self.model).losses:
            self._penalties.append(regularisation_penalty(self.penalty_of or self.model))

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        rate = self.model.optimizer.learning_rate
        penalty = float(np.mean(self._penalties)) if self._penalties else regularisation_penalty(
            self.penalty_of or self.model)
        total = self.first_epoch + epoch + 1
        row = {"stage": self.stage, "epoch": epoch + 1, "total_epoch": total,
               "learning_rate": float(keras.ops.convert_to_numpy(rate)),
               "seconds": round(time.perf_counter() - self._started, 3),
               **{k: float(v) for k, v in logs.items() if k != "learning_rate"},
               "penalty": penalty}
        if "loss" in row:
            row["data_loss"] = row["loss"] - penalty
        self.rows.append(row)
        if self.best is not None:
            self.best.consider(total, logs)


def snapshot_epochs(total: int, snapshots: int | None) -> set[int] | None:
    """Cumulative epochs of `snapshots` evenly spaced snapshots of a `total`-epoch run (None: all)."""
    if not snapshots:
        return None
    return {max(1, round(total * k / snapshots)) for k in range(1, snapshots + 1)}


def precise_batchnorm(model: keras.Model, images) -> keras.callbacks.Callback | None:
    """The callback of a `precise_bn` stage: BatchNorm statistics from the training items, unaugmented
    (None for a model without trainable BatchNorm layers: nothing to set, no pass to pay for)."""
    if len(model.inputs) != 1:
        raise ValueError(f"precise_bn takes a model with one input. Received: {model.name} with "
                         f"{len(model.inputs)} inputs")
    unreachable = nested_batchnorm(model)
    if unreachable:
        raise ValueError(f"precise_bn sets the BatchNorm layers of the model's own graph; {model.name} has "
                         f"BatchNorm layers inside nested models it cannot reach: {unreachable[:5]}")
    if not recalibrated_layers(model):
        return None
    return PreciseBatchNorm(model, images, batch_size=PREDICT_BATCH, to_input=lambda part: as_model_input(part, model))


def runnable_stages(stages: Sequence[Stage], fine_tune: str | None) -> list[Stage]:
    """The stages that run for a model row: epochs > 0 and not skipped for its fine-tuning strategy."""
    return [stage for stage in stages if stage.epochs > 0 and not (fine_tune and fine_tune in stage.skip_for)]


AUGMENT_ON = ("pipeline", "device", "auto")
"""Where online augmentation runs: in the tf.data pipeline (CPU), inside the training step
(`RandomAugment` before the model, on the accelerator), or "auto": the step on a GPU, the
pipeline otherwise."""


def augment_place(augment_on: str) -> str:
    """"pipeline" or "device" for an `augment_on` option ("auto": "device" where TF sees a GPU)."""
    if augment_on not in AUGMENT_ON:
        raise ValueError(f"`augment_on` must be one of {AUGMENT_ON}. Received: augment_on={augment_on!r}")
    if augment_on == "auto":
        from mammo_keras.training.precision import has_gpu

        return "device" if has_gpu() else "pipeline"
    return augment_on


def with_augmentation(model: keras.Model, augment: AugmentConfig, seed: int) -> keras.Model:
    """`model` behind a `RandomAugment` layer: training it trains `model`'s own layers."""
    from mammo_keras.data.pipeline import RandomAugment

    inputs = [keras.Input(tensor.shape[1:], name=tensor.name.split(":")[0]) for tensor in model.inputs]
    layer = RandomAugment(augment, seed=seed, name="random_augment")
    moved = layer(inputs if len(inputs) > 1 else inputs[0])
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], model(moved), name=f"{model.name}_augmented")


def build_compiled(model: keras.Model, dataset) -> None:
    """Build the compiled loss, metrics and optimizer from the data's shapes before `fit`.

    Keras 3 otherwise creates the metric variables while tracing the first training step,
    which makes tf.function trace that step a second time (measured: 2 traces per `fit`, 1
    after this). MultiWorkerMirroredStrategy models are built by `ready_for_fit` instead.
    A built functional model's outputs are known without running it, so its predictions are
    given to Keras as symbolic tensors of those shapes (`_functional_build`); Keras's own
    `_symbolic_build` runs the whole network symbolically first (InceptionV3: 3-12 s per stage,
    against 0.5 s).
    """
    import tensorflow as tf

    if isinstance(getattr(model, "_distribute_strategy", None), tf.distribute.MultiWorkerMirroredStrategy):
        return
    build = getattr(model, "_symbolic_build", None)
    if build is None:  # pragma: no cover - another Keras
        return
    spec = dataset.element_spec
    batch = tf.nest.map_structure(lambda s: np.zeros((1, *s.shape[1:]), s.dtype.as_numpy_dtype), spec)
    with model.distribute_strategy.scope():
        if not _functional_build(model, batch):
            build(data_batch=batch)


def _functional_build(model: keras.Model, batch) -> bool:
    """What Keras's `_symbolic_build` does, with the predictions' shapes read from a built functional
    model's outputs instead of computed by running it. False (nothing done) for any other model."""
    from keras.src import backend, tree
    from keras.src.models.functional import Functional
    from keras.src.trainers.data_adapters import data_adapter_utils

    needed = ("_compile_metrics", "_compile_loss", "compute_metrics", "_compute_loss", "_post_build", "_outputs_struct")
    if not isinstance(model, Functional) or not all(hasattr(model, name) for name in needed):
        return False
    if not all(layer.built for layer in model._flatten_layers()):
        return False
    symbolic = tree.map_structure(lambda v: backend.KerasTensor(v.shape, backend.standardize_dtype(v.dtype)), batch)
    x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(symbolic)
    y_pred = tree.map_structure(lambda t: backend.KerasTensor((1, *t.shape[1:]), t.dtype), model._outputs_struct)
    if model._compile_metrics is not None and not model._compile_metrics.built:
        backend.compute_output_spec(model.compute_metrics, x, y, y_pred, sample_weight=sample_weight)
    if model._compile_loss is not None and not model._compile_loss.built:
        backend.compute_output_spec(model._compute_loss, x, y, y_pred, sample_weight=sample_weight, training=False)
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model._post_build()
    return True


class FitBackup:
    """The state of `fit_stages` after a finished epoch (`BACKUP_EVERY`), in one file written atomically.

    `backup.npz` holds the stage number and the epochs it has finished, whether it finished
    (its end-of-stage steps done), the per-epoch log, every variable of the model (weights,
    BatchNormalization statistics, seed-generator states) and of the trained wrapper, the
    optimizer's variables (step count, learning rate, moments), the state of early stopping,
    ReduceLROnPlateau and the best-epoch selection (with its kept weights). A run killed at
    any point restarts from the last finished epoch and, the data being numbered by epoch
    (`make_dataset(epochs=...)`), ends with the same weights as an uninterrupted run.
    `plan` fingerprints the stages, seed and data size; a backup of another plan is refused.
    """

    def __init__(self, folder: str | Path, plan: dict):
        self.path = Path(folder) / "backup.npz"
        self.plan = json.loads(json.dumps(plan))  # as stored: tuples become lists

    def load(self) -> tuple[dict, dict[str, np.ndarray]] | None:
        wait_for_backup(self.path)
        if not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as stored:
                arrays = {key: stored[key] for key in stored.files}
            state = json.loads(str(arrays.pop("state")))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(f"{self.path} cannot be read ({error}); remove it to start the part over") from None
        if state["plan"] != self.plan:
            differ = sorted(k for k in set(state["plan"]) | set(self.plan) if state["plan"].get(k) != self.plan.get(k))
            stored = state["plan"]
            received = ", ".join(f"{k}={stored.get(k)!r}" for k in differ)
            raise ValueError(f"{self.path} belongs to another training plan ({', '.join(differ)} differ); remove "
                             f"it to start over. Received: {received}")
        return state, arrays

    def peek(self) -> dict | None:
        """The saved state (stage, epochs, log rows), without checking the plan or reading the arrays."""
        wait_for_backup(self.path)
        if not self.path.is_file():
            return None
        with np.load(self.path, allow_pickle=False) as stored:
            return json.loads(str(stored["state"]))

    def save(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        """Write the backup to a temporary file beside it, then rename it into place.

        The rename is atomic, so a killed process leaves the previous backup or this one, never
        a part. No fsync (it doubled the cost of a save): after a machine crash the file may be
        unreadable, which `load` reports (remove it and the part starts over).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".backup.", suffix=".npz.tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                np.savez(stream, state=np.array(json.dumps({**state, "plan": self.plan})), **arrays)
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def save_in_background(self, state: dict, arrays: dict[str, np.ndarray]) -> None:
        """`save` in a thread, so that training goes on while the file is written (VGG16's weights,
        momenta and kept best weights: about 0.6 s a write on 2 CPU cores, on the training's path before).

        Waits for this backup's previous write first, so writes land in order. `state` is copied
        now (its log rows grow with the next epochs); the arrays are copies of the variables
        already. A kill during the write leaves the previous backup (`save` renames atomically), so
        the part resumes one backup earlier, with the same results. A failed write is raised by the
        next `wait_for_backup` of this path: the next save, `load`, `peek`, `remove`, or the end of the
        part (`cv.train_and_test`).
        """
        wait_for_backup(self.path)
        state = json.loads(json.dumps(state))
        failure: list[BaseException] = []

        def write() -> None:
            try:
                self.save(state, arrays)
            except BaseException as error:  # raised again in the training thread by wait_for_backup
                failure.append(error)

        thread = threading.Thread(target=write, name=f"backup {self.path}")
        _WRITES[self.path] = (thread, failure)
        thread.start()

    def remove(self) -> None:
        wait_for_backup(self.path)
        self.path.unlink(missing_ok=True)


_WRITES: dict[Path, tuple[threading.Thread, list[BaseException]]] = {}
"""Backup writes in flight (`FitBackup.save_in_background`), by backup path."""


def wait_for_backup(path: str | Path) -> None:
    """Wait until the background write of the backup at `path` (if any) has finished; raise its error."""
    pending = _WRITES.pop(Path(path), None)
    if pending is None:
        return
    thread, failure = pending
    thread.join()
    if failure:
        raise failure[0]


def _variable_arrays(prefix: str, variables) -> dict[str, np.ndarray]:
    return {f"{prefix}/{k}": np.asarray(keras.ops.convert_to_numpy(v)) for k, v in enumerate(variables)}


def _assign(prefix: str, variables, arrays: dict[str, np.ndarray]) -> None:
    stored = sorted((k for k in arrays if k.startswith(prefix + "/")), key=lambda k: int(k.rsplit("/", 1)[1]))
    if len(stored) != len(variables):
        raise ValueError(f"the backup holds {len(stored)} {prefix} variables but the model has {len(variables)}; "
                         "it was written for another model: remove it to start over")
    for key, variable in zip(stored, variables):
        if tuple(arrays[key].shape) != tuple(variable.shape):
            raise ValueError(f"backup variable {key} has shape {arrays[key].shape}, the model's "
                             f"{variable.path} {tuple(variable.shape)}: remove the backup to start over")
        variable.assign(arrays[key])


def _weights_arrays(prefix: str, weights: list[np.ndarray] | None) -> dict[str, np.ndarray]:
    return {} if weights is None else {f"{prefix}/{k}": np.asarray(w) for k, w in enumerate(weights)}


def _weights_from(prefix: str, arrays: dict[str, np.ndarray]) -> list[np.ndarray] | None:
    keys = sorted((k for k in arrays if k.startswith(prefix + "/")), key=lambda k: int(k.rsplit("/", 1)[1]))
    return [arrays[k] for k in keys] if keys else None


def _extra_variables(model: keras.Model, trained: keras.Model) -> list:
    """Variables of the trained wrapper that are not the model's (a RandomAugment seed state)."""
    own = {id(v) for v in model.variables}
    return [v for v in trained.variables if id(v) not in own]


BACKUP_EVERY = 30.0
"""Seconds: an epoch's backup is written once this long has passed since the stage began or the
last backup (a stage's end is always written). Writing every variable after each of many short
epochs cost more than the epochs (about 0.6 s per epoch for VGG16 on a CPU); a kill loses at most
this much training. 0 writes after every epoch."""


class EpochBackup(keras.callbacks.Callback):
    """Restores a resumed stage's callback states at the start of `fit`, saves the backup after an epoch
    once `every` seconds have passed since the stage began or the last save (0: after every epoch).

    Listed after the callbacks it restores, so their `on_train_begin` resets run first, and
    after those whose `on_epoch_end` changes state, so the backup holds this epoch's state.
    """

    def __init__(self, backup: FitBackup, save_state, *, restore: tuple[dict, dict] | None = None,
                 stopping: keras.callbacks.EarlyStopping | None = None,
                 plateau: keras.callbacks.ReduceLROnPlateau | None = None, every: float = BACKUP_EVERY):
        super().__init__()
        self.backup, self.save_state, self.restore = backup, save_state, restore
        self.stopping, self.plateau, self.every = stopping, plateau, float(every)
        self._saved = time.monotonic()

    def on_train_begin(self, logs=None):
        self._saved = time.monotonic()
        if self.restore is None:
            return
        state, arrays = self.restore
        if self.stopping is not None and state.get("stopping"):
            saved = state["stopping"]
            self.stopping.wait, self.stopping.stopped_epoch = saved["wait"], saved["stopped_epoch"]
            self.stopping.best, self.stopping.best_epoch = saved["best"], saved["best_epoch"]
            self.stopping.best_weights = _weights_from("stopping_weights", arrays)
        if self.plateau is not None and state.get("plateau"):
            saved = state["plateau"]
            self.plateau.wait, self.plateau.cooldown_counter = saved["wait"], saved["cooldown_counter"]
            self.plateau.best = saved["best"]

    def on_epoch_end(self, epoch, logs=None):
        if time.monotonic() - self._saved < self.every:
            return
        self.save_state(epoch + 1, bool(self.model.stop_training), self.stopping, self.plateau)
        self._saved = time.monotonic()


def fit_stages(model: keras.Model, stages: Sequence[Stage], train: tuple[np.ndarray, np.ndarray],
               val: tuple[np.ndarray, np.ndarray] | None = None, *, augment: AugmentConfig | None = None,
               seed: int = 0, log_csv: str | Path | None = None, verbose: int = 0,
               cache_features: bool = False, jit_compile: bool | str = "auto", fine_tune: str | None = None,
               selection: str = "last", snapshots: int | None = None, augment_on: str = "auto",
               backup_dir: str | Path | None = None, backup_every: float = BACKUP_EVERY,
               compile_options: dict | None = None, progress: bool = False) -> pd.DataFrame:
    """Train `model` through `stages` in order; returns the per-epoch log (also written to `log_csv`).

    Each stage sets the trainable layers and its L2 penalty, compiles a fresh optimizer (with its
    per-layer rates), and trains with its schedule: ReduceLROnPlateau for "plateau", polynomial
    or step decay for "poly"/"step", class weights per its rule, and early stopping (restoring
    the best weights) when a patience is set. Plateau, early stopping and selection watch `val`;
    without validation data they are skipped. Stages in `skip_for` of the row's `fine_tune`
    strategy do not run.

    `selection` keeps the last epoch's weights, or restores those of the best validation epoch
    over all stages (among `snapshots` evenly spaced epochs when given); the log marks it in
    the column `selected`.

    Input: grey items stay one channel in the pipeline and are repeated after augmentation
    for a model whose input has 3 channels. Each stage's data are numbered epochs
    (`make_dataset(epochs=...)`, fed with `steps_per_epoch`): one iterator, and epoch e's
    batches depend on (seed, stage, e) only. The training step is traced once per stage: the
    compiled loss and metrics are built before `fit` (`build_compiled`), and the partial last
    batch of an epoch needs no second trace, Keras tracing the step on the iterator's
    [None, ...] batch spec (neither padded nor dropped, so results are those of plain
    batching). Predictions go in batches of one shape (`FixedBatches`). Under XLA (a GPU with op
    determinism off: Keras compiles no step with XLA while it is on) the partial last batch has
    its own compiled executable, one more per stage (`benchmarks/gpu_check.sh` counts them).

    `augment_on`: "pipeline" (tf.data), "device" (a `RandomAugment` layer in the training
    step: the accelerator augments) or "auto" (device on a GPU, pipeline otherwise).

    `backup_dir`: after an epoch (once `backup_every` seconds have passed since the stage began
    or the last backup; 0: after every epoch) and at the end of every stage, the whole training
    state goes to `<backup_dir>/backup.npz` (`FitBackup`); called again with the same arguments
    after a kill, training resumes after the last backed-up epoch and ends with the same weights
    as an uninterrupted run (bitwise on a CPU: tests/training/test_resume.py).

    `progress`: a tqdm bar per stage over its epochs, with one over each epoch's steps
    (`tqdm.keras.TqdmCallback`; tqdm.auto draws the widget in Jupyter). Nothing else changes.

    A loss that becomes NaN or infinite stops training (Keras' TerminateOnNaN) and raises
    `errors.TrainingDiverged` naming the stage and epoch; the log up to there is written.

    With `cache_features`, a stage whose frozen, deterministic prefix sees unaugmented images
    (`augment` None; e.g. Chougrad's 0FT) runs the prefix once and trains only the rest of the
    network on its output (`feature_cache`); the model's own layers are trained either way.
    `jit_compile` goes to `model.compile` ("auto": XLA on GPUs, not on CPUs, as Keras decides).

    Targets given as a dict (a detector's padded boxes and labels) train with the model's own
    losses (`compile_options`, e.g. YOLOv8's box and class losses; none for keras-hub's RetinaNet),
    on the images as given, in the stages' order and with their optimizer, rate, epochs, batch and
    early stopping; class weights, augmentation and feature caching are classification steps.
    """
    if isinstance(train[1], dict):  # detection: images as the detector takes them, targets as its losses do
        return _fit_given_targets(model, stages, train, val, seed=seed, log_csv=log_csv, verbose=verbose,
                                  compile_options=compile_options or {}, jit_compile=jit_compile)
    place = augment_place(augment_on) if augment is not None else "pipeline"
    x_train, y_train = as_model_input(train[0], model, repeat=False), np.asarray(train[1]).astype(int)
    channels = input_channels(model)
    validation = None
    if val is not None and count(val[0]):  # lazy validation rows stay lazy: read per batch (`FixedBatches`)
        validation = (as_model_input(val[0], model), as_targets(val[1], model))
    rows: list[dict] = []
    built = trainable_flags(model)  # what "as_built" stages restore
    cached = CachedFeatures(as_model_input(train[0], model) if cache_features and augment is None else None,
                            None if validation is None else validation[0])
    running = runnable_stages(stages, fine_tune)
    total = sum(stage.epochs for stage in running)
    best = BestEpoch(model, selection, snapshot_epochs(total, snapshots)) if validation is not None else None
    backup = None if backup_dir is None else FitBackup(backup_dir, {
        "stages": [dataclasses.asdict(stage) for stage in running], "seed": int(seed), "n_train": count(x_train),
        "n_val": 0 if validation is None else count(validation[0]), "selection": selection,
        "augment": None if augment is None else dataclasses.asdict(augment), "augment_on": place})
    resumed = backup.load() if backup is not None else None
    done, kept = 0, 0
    if resumed is not None:
        state, arrays = resumed
        _assign("model", model.variables, arrays)
        rows.extend(state["rows"])
        done, kept = state["done"], state["kept"]
        if best is not None and state.get("best"):
            best.load_state(state["best"], _weights_from("best_weights", arrays))
    for number, stage in enumerate(running):
        apply_trainable(model, stage.trainable, built)
        apply_l2(model, stage)
        if resumed is not None and (number < resumed[0]["stage"] or
                                    (number == resumed[0]["stage"] and resumed[0]["finished"])):
            continue  # finished before the kill: its settings replayed, its weights restored
        restore = resumed if resumed is not None and number == resumed[0]["stage"] else None
        steps = int(np.ceil(count(x_train) / stage.batch_size))
        loss = "binary_crossentropy" if model.outputs[0].shape[-1] == 1 else "categorical_crossentropy"
        cut = frozen_cut(model) if cache_features and augment is None else None
        trained, stage_validation = model, validation
        targets = as_targets(y_train, model)
        first_epoch = restore[0]["epochs"] if restore is not None else 0
        stopped = bool(restore is not None and restore[0]["stop_training"])
        last_epoch = first_epoch if stopped else stage.epochs
        stage_seed = seed + 1000 * number
        if cut is None:
            cached.invalidate()
            dataset = make_dataset(x_train, targets, batch_size=stage.batch_size,
                                   augment=augment if place == "pipeline" else None, shuffle=True, seed=stage_seed,
                                   channels=channels if len(channels) > 1 else channels[0],
                                   epochs=last_epoch, first_epoch=first_epoch)
            if augment is not None and place == "device":
                trained = with_augmentation(model, augment, stage_seed)
        else:
            trained, train_features, val_features = cached.get(model, cut)
            dataset = feature_dataset(train_features, targets, batch_size=stage.batch_size,
                                      shuffle=True, seed=stage_seed, epochs=last_epoch, first_epoch=first_epoch)
            if validation is not None:
                stage_validation = (val_features, validation[1])
        if stage.class_weight == "batch":
            dataset = balance_batches(dataset)
        # Inference does not depend on a stage's optimizer, loss or trainable flags: the predict step traced
        # in an earlier stage (validation AUC, snapshots) serves this one too, instead of a trace per compile.
        predict_function, predict_jit = getattr(trained, "predict_function", None), getattr(trained, "jit_compile", None)
        with trained.distribute_strategy.scope():  # optimizer variables where the model lives
            trained.compile(optimizer=make_optimizer(stage, steps, trained), loss=loss, metrics=["accuracy"],
                            jit_compile=jit_compile)
        if predict_function is not None and trained.jit_compile == predict_jit:
            trained.predict_function = predict_function
        build_compiled(trained, dataset)
        ready_for_fit(trained, dataset)  # a no-op unless built under MultiWorkerMirroredStrategy
        if restore is not None:
            _assign("optimizer", trained.optimizer.variables, restore[1])
            _assign("extra", _extra_variables(model, trained), restore[1])
        callbacks: list[keras.callbacks.Callback] = []
        precise = precise_batchnorm(model, train[0]) if stage.precise_bn else None
        if precise is not None:  # before validation, early stopping and backups read the network
            callbacks.append(precise)
        moving_averages = cut is None and not stage.precise_bn  # inference will read Keras' moving averages
        if moving_averages:
            warn_if_stale(model, stage.name, steps, stage.epochs)
        if stage_validation is not None:  # first: the callbacks after it read its val_* numbers
            callbacks.append(ValidationMetrics(stage_validation[0], val[1], stage_validation[1]))
        callbacks.append(EpochLog(stage.name, rows, first_epoch=done, best=best, penalty_of=model))
        plateau = None
        if validation is not None and stage.schedule == "plateau":
            plateau = keras.callbacks.ReduceLROnPlateau(
                monitor=stage.monitor, factor=stage.plateau_factor, patience=stage.plateau_patience)
            callbacks.append(plateau)
        stopping = None
        if validation is not None and stage.early_stopping_patience is not None:
            stopping = keras.callbacks.EarlyStopping(
                monitor=stage.monitor, patience=stage.early_stopping_patience, restore_best_weights=True,
                mode="max" if stage.monitor in ("val_auc", "val_accuracy") else "min")
            callbacks.append(stopping)
        callbacks.append(keras.callbacks.TerminateOnNaN())
        if progress:
            from tqdm.keras import TqdmCallback

            callbacks.append(TqdmCallback(epochs=last_epoch - first_epoch, verbose=1, leave=False,
                                          desc=f"stage {stage.name}"))
        if backup is not None:
            def save_state(epochs, stop_training, stopping, plateau, *, number=number, trained=trained,
                           finished=False):
                state = {"stage": number, "epochs": epochs, "stop_training": stop_training, "finished": finished,
                         "rows": rows, "done": done, "kept": kept,
                         "stopping": None if stopping is None else {
                             "wait": int(stopping.wait), "stopped_epoch": int(stopping.stopped_epoch),
                             "best": None if stopping.best is None else float(stopping.best),
                             "best_epoch": int(stopping.best_epoch)},
                         "plateau": None if plateau is None else {
                             "wait": int(plateau.wait), "cooldown_counter": int(plateau.cooldown_counter),
                             "best": None if plateau.best is None else float(plateau.best)}}
                arrays = {**_variable_arrays("model", model.variables),
                          **_variable_arrays("optimizer", trained.optimizer.variables),
                          **_variable_arrays("extra", _extra_variables(model, trained)),
                          **_weights_arrays("stopping_weights", None if stopping is None else stopping.best_weights)}
                if best is not None:
                    best_state, best_weights = best.state()
                    state["best"] = best_state
                    arrays.update(_weights_arrays("best_weights", best_weights))
                backup.save_in_background(state, arrays)

            callbacks.append(EpochBackup(backup, save_state, restore=restore, stopping=stopping, plateau=plateau,
                                         every=backup_every))
        trained.fit(dataset, epochs=last_epoch, initial_epoch=first_epoch, steps_per_epoch=steps,
                    callbacks=callbacks, shuffle=False,
                    class_weight=class_weights(stage.class_weight, y_train), verbose=verbose)
        if rows and not np.isfinite(rows[-1].get("loss", 0.0)):
            if log_csv is not None:
                atomic_write_text(log_csv, pd.DataFrame(rows).to_csv(index=False))
            raise TrainingDiverged(stage.name, rows[-1]["epoch"], log_csv)
        # Early stopping leaves the weights of its best epoch, which the next stage starts from.
        kept = done + stopping.best_epoch + 1 if stopping is not None and stopping.best_weights is not None \
            else len(rows)
        if moving_averages and kept - done < stage.epochs:
            warn_if_stale(model, stage.name, steps, kept - done, restored=True)
        done = len(rows)
        if backup is not None:
            save_state(stage.epochs, False, None, None, finished=True)
    log = pd.DataFrame(rows)
    if best is not None and best.best_epoch is not None:
        best.restore()
        log["selected"] = log["total_epoch"] == best.best_epoch
    elif len(log):
        log["selected"] = log["total_epoch"] == kept
    if log_csv is not None:
        atomic_write_text(log_csv, log.to_csv(index=False))
    return log


def _fit_given_targets(model: keras.Model, stages: Sequence[Stage], train, val, *, seed: int,
                       log_csv: str | Path | None, verbose: int, compile_options: dict,
                       jit_compile: bool | str) -> pd.DataFrame:
    """`fit_stages` for a model that computes its own losses from structured targets (detectors)."""
    import tensorflow as tf

    x_train, y_train = np.asarray(train[0], dtype=np.float32), train[1]
    validation = None if val is None else (np.asarray(val[0], dtype=np.float32), val[1])
    rows: list[dict] = []
    built = trainable_flags(model)
    kept = 0
    for number, stage in enumerate(s for s in stages if s.epochs > 0):
        apply_trainable(model, stage.trainable, built)
        apply_l2(model, stage)
        dataset = tf.data.Dataset.from_tensor_slices((x_train, y_train))
        if stage.shuffle:
            dataset = dataset.shuffle(len(x_train), seed=seed + 1000 * number, reshuffle_each_iteration=True)
        dataset = dataset.batch(stage.batch_size).prefetch(tf.data.AUTOTUNE)
        steps = int(np.ceil(len(x_train) / stage.batch_size))
        model.compile(optimizer=make_optimizer(stage, steps, model), jit_compile=jit_compile, **compile_options)
        callbacks: list[keras.callbacks.Callback] = [EpochLog(stage.name, rows, first_epoch=len(rows))]
        stopping = None
        if validation is not None and stage.early_stopping_patience is not None:
            stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=stage.early_stopping_patience,
                                                     restore_best_weights=True)
            callbacks.append(stopping)
        before = len(rows)
        val_data = None if validation is None else tf.data.Dataset.from_tensor_slices(validation).batch(stage.batch_size)
        model.fit(dataset, epochs=stage.epochs, validation_data=val_data, callbacks=callbacks, verbose=verbose)
        kept = before + stopping.best_epoch + 1 if stopping is not None and stopping.best_weights is not None \
            else len(rows)
    log = pd.DataFrame(rows)
    if len(log):
        log["selected"] = log["total_epoch"] == kept
    if log_csv is not None:
        atomic_write_text(log_csv, log.to_csv(index=False))
    return log
