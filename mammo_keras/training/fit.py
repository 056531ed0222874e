"""One generic loop that runs any list of stages on in-memory arrays."""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from mammo_keras.data.pipeline import AugmentConfig, balance_batches, make_dataset
from mammo_keras.errors import TrainingDiverged
from mammo_keras.fileio import atomic_write_text
from mammo_keras.models.inputs import PAIR_PARTS, as_model_input, as_targets, count, positive_scores  # noqa: F401
from mammo_keras.training.distribute import ready_for_fit
from mammo_keras.training.feature_cache import CachedFeatures, feature_dataset, frozen_cut
from mammo_keras.training.stages import Stage, apply_l2, apply_trainable, make_optimizer, trainable_flags
from mammo_keras.vocabulary import SELECTIONS



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


class ValidationAUC(keras.callbacks.Callback):
    """Adds `val_auc` (ROC AUC of the positive-class score on the validation part) to the epoch logs."""

    def __init__(self, inputs, labels: np.ndarray, batch_size: int):
        super().__init__()
        self.inputs, self.labels, self.batch_size = inputs, np.asarray(labels).astype(int), batch_size

    def on_epoch_end(self, epoch, logs=None):
        from mammo_keras.evaluation.metrics import auc

        scores = positive_scores(self.model.predict(self.inputs, batch_size=self.batch_size, verbose=0))
        if logs is not None:
            logs["val_auc"] = auc(self.labels, scores) if len(np.unique(self.labels)) == 2 else float("nan")


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


class EpochLog(keras.callbacks.Callback):
    """One row per epoch: stage, epochs, metrics, learning rate, seconds, penalty and data loss."""

    def __init__(self, stage: str, rows: list[dict], *, first_epoch: int = 0, best: BestEpoch | None = None,
                 penalty_of: keras.Model | None = None):
        super().__init__()
        self.stage, self.rows, self.first_epoch, self.best = stage, rows, first_epoch, best
        self.penalty_of = penalty_of
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        rate = self.model.optimizer.learning_rate
        penalty = regularisation_penalty(self.penalty_of or self.model)
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


def runnable_stages(stages: Sequence[Stage], fine_tune: str | None) -> list[Stage]:
    """The stages that run for a model row: epochs > 0 and not skipped for its fine-tuning strategy."""
    return [stage for stage in stages if stage.epochs > 0 and not (fine_tune and fine_tune in stage.skip_for)]


def fit_stages(model: keras.Model, stages: Sequence[Stage], train: tuple[np.ndarray, np.ndarray],
               val: tuple[np.ndarray, np.ndarray] | None = None, *, augment: AugmentConfig | None = None,
               seed: int = 0, log_csv: str | Path | None = None, verbose: int = 0,
               cache_features: bool = False, jit_compile: bool | str = "auto", fine_tune: str | None = None,
               selection: str = "last", snapshots: int | None = None,
               compile_options: dict | None = None) -> pd.DataFrame:
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
    x_train, y_train = as_model_input(train[0], model), np.asarray(train[1]).astype(int)
    validation = None
    if val is not None and count(val[0]):
        validation = (as_model_input(val[0], model), as_targets(val[1], model))
    rows: list[dict] = []
    built = trainable_flags(model)  # what "as_built" stages restore
    cached = CachedFeatures(x_train, None if validation is None else validation[0])
    running = runnable_stages(stages, fine_tune)
    total = sum(stage.epochs for stage in running)
    best = BestEpoch(model, selection, snapshot_epochs(total, snapshots)) if validation is not None else None
    done = 0
    for number, stage in enumerate(running):
        apply_trainable(model, stage.trainable, built)
        apply_l2(model, stage)
        steps = int(np.ceil(count(x_train) / stage.batch_size))
        loss = "binary_crossentropy" if model.outputs[0].shape[-1] == 1 else "categorical_crossentropy"
        cut = frozen_cut(model) if cache_features and augment is None else None
        trained, stage_validation = model, validation
        targets = as_targets(y_train, model)
        if cut is None:
            cached.invalidate()
            dataset = make_dataset(x_train, targets, batch_size=stage.batch_size,
                                   augment=augment, shuffle=True, seed=seed + 1000 * number)
        else:
            trained, train_features, val_features = cached.get(model, cut)
            dataset = feature_dataset(train_features, targets, batch_size=stage.batch_size,
                                      shuffle=True, seed=seed + 1000 * number)
            if validation is not None:
                stage_validation = (val_features, validation[1])
        if stage.class_weight == "batch":
            dataset = balance_batches(dataset)
        with trained.distribute_strategy.scope():  # optimizer variables where the model lives
            trained.compile(optimizer=make_optimizer(stage, steps, trained), loss=loss, metrics=["accuracy"],
                            jit_compile=jit_compile)
        ready_for_fit(trained, dataset)  # a no-op unless built under MultiWorkerMirroredStrategy
        callbacks: list[keras.callbacks.Callback] = []
        if stage_validation is not None and (selection == "best_val_auc" or stage.monitor == "val_auc"):
            callbacks.append(ValidationAUC(stage_validation[0], val[1], stage.batch_size))
        callbacks.append(EpochLog(stage.name, rows, first_epoch=done, best=best, penalty_of=model))
        if validation is not None and stage.schedule == "plateau":
            callbacks.append(keras.callbacks.ReduceLROnPlateau(
                monitor=stage.monitor, factor=stage.plateau_factor, patience=stage.plateau_patience))
        stopping = None
        if validation is not None and stage.early_stopping_patience is not None:
            stopping = keras.callbacks.EarlyStopping(
                monitor=stage.monitor, patience=stage.early_stopping_patience, restore_best_weights=True,
                mode="max" if stage.monitor in ("val_auc", "val_accuracy") else "min")
            callbacks.append(stopping)
        callbacks.append(keras.callbacks.TerminateOnNaN())
        trained.fit(dataset, epochs=stage.epochs, validation_data=stage_validation, callbacks=callbacks,
                    shuffle=False, class_weight=class_weights(stage.class_weight, y_train), verbose=verbose)
        if rows and not np.isfinite(rows[-1].get("loss", 0.0)):
            if log_csv is not None:
                atomic_write_text(log_csv, pd.DataFrame(rows).to_csv(index=False))
            raise TrainingDiverged(stage.name, rows[-1]["epoch"], log_csv)
        # Early stopping leaves the weights of its best epoch, which the next stage starts from.
        kept = done + stopping.best_epoch + 1 if stopping is not None and stopping.best_weights is not None \
            else len(rows)
        done = len(rows)
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
