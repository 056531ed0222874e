"""One generic loop that runs any list of stages on in-memory arrays."""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from mammo_keras.data.pipeline import AugmentConfig, make_dataset
from mammo_keras.fileio import atomic_write_text
from mammo_keras.training.distribute import ready_for_fit
from mammo_keras.training.feature_cache import CachedFeatures, feature_dataset, frozen_cut
from mammo_keras.training.stages import Stage, apply_trainable, make_optimizer


# Parts of a paired item in prepared arrays (N, 2, H, W): Coccomini's [lesion, baseline].
PAIR_PARTS = ("abnormality", "baseline")


def _channels(images: np.ndarray, channels: int) -> np.ndarray:
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 1 and channels == 3:
        images = np.repeat(images, 3, axis=-1)
    return images


def as_model_input(images: np.ndarray, model: keras.Model) -> np.ndarray | list[np.ndarray]:
    """(N, H, W) grey arrays -> (N, H, W, C) as the model's input expects (C = 1 or 3).

    A model with several inputs (the siamese network) takes paired items, (N, parts, H, W):
    part k feeds the input named PAIR_PARTS[k] when the model names its inputs that way,
    otherwise input k.
    """
    images = np.asarray(images, dtype=np.float32)
    if len(model.inputs) == 1:
        return _channels(images, model.inputs[0].shape[-1])
    if images.ndim < 4 or images.shape[1] != len(model.inputs):
        raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs and needs paired items "
                         f"of shape (N, {len(model.inputs)}, H, W). Received: shape={images.shape}")
    names = [tensor.name.split(":")[0] for tensor in model.inputs]
    order = ([PAIR_PARTS.index(n) for n in names] if sorted(names) == sorted(PAIR_PARTS)
             else list(range(len(names))))
    return [_channels(images[:, part], tensor.shape[-1]) for part, tensor in zip(order, model.inputs)]


def count(inputs: np.ndarray | Sequence[np.ndarray]) -> int:
    """Number of items in a model input (an array or a list of arrays, one per model input)."""
    return len(inputs[0]) if isinstance(inputs, (list, tuple)) else len(inputs)


def as_targets(labels: np.ndarray, model: keras.Model) -> np.ndarray:
    """Integer labels -> one-hot for a softmax output, float column for a single sigmoid unit."""
    labels = np.asarray(labels).astype(int)
    units = model.outputs[0].shape[-1]
    if units == 1:
        return labels.astype(np.float32)[:, None]
    return keras.utils.to_categorical(labels, units).astype(np.float32)


def positive_scores(predictions: np.ndarray) -> np.ndarray:
    """Probability of class 1 from a softmax (last column) or sigmoid output."""
    predictions = np.asarray(predictions)
    return predictions[:, -1] if predictions.ndim == 2 else predictions.ravel()


def balanced_class_weight(labels: np.ndarray) -> dict[int, float]:
    """n / (k * count_c), scikit-learn's 'balanced' rule."""
    labels = np.asarray(labels).astype(int)
    classes, counts = np.unique(labels, return_counts=True)
    return {int(c): float(len(labels) / (len(classes) * n)) for c, n in zip(classes, counts)}


class EpochLog(keras.callbacks.Callback):
    """Collects one row per epoch (stage, epoch, metrics, learning rate, seconds)."""

    def __init__(self, stage: str, rows: list[dict]):
        super().__init__()
        self.stage, self.rows = stage, rows
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        rate = self.model.optimizer.learning_rate
        self.rows.append({"stage": self.stage, "epoch": epoch + 1,
                          "learning_rate": float(keras.ops.convert_to_numpy(rate)),
                          "seconds": round(time.perf_counter() - self._started, 3),
                          **{k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"}})


def fit_stages(model: keras.Model, stages: Sequence[Stage], train: tuple[np.ndarray, np.ndarray],
               val: tuple[np.ndarray, np.ndarray] | None = None, *, augment: AugmentConfig | None = None,
               seed: int = 0, log_csv: str | Path | None = None, verbose: int = 0,
               cache_features: bool = False, jit_compile: bool | str = "auto") -> pd.DataFrame:
    """Train `model` through `stages` in order; returns the per-epoch log (also written to `log_csv`).

    Each stage sets the trainable layers, compiles a fresh optimizer, and trains with
    its schedule: ReduceLROnPlateau for "plateau", PolynomialDecay for "poly", and
    early stopping (restoring the best weights) when a patience is set. Plateau and early
    stopping watch `stage.monitor` on `val`; without validation data they are skipped.

    With `cache_features`, a stage whose frozen, deterministic prefix sees unaugmented images
    (`augment` None; e.g. Chougrad's 0FT) runs the prefix once and trains only the rest of the
    network on its output (`feature_cache`); the model's own layers are trained either way.
    `jit_compile` goes to `model.compile` ("auto": XLA on GPUs, not on CPUs, as Keras decides).
    """
    x_train, y_train = as_model_input(train[0], model), np.asarray(train[1]).astype(int)
    validation = None
    if val is not None and count(val[0]):
        validation = (as_model_input(val[0], model), as_targets(val[1], model))
    rows: list[dict] = []
    cached = CachedFeatures(x_train, None if validation is None else validation[0])
    for number, stage in enumerate(stages):
        if stage.epochs == 0:
            continue
        apply_trainable(model, stage.trainable)
        steps = int(np.ceil(count(x_train) / stage.batch_size))
        loss = "binary_crossentropy" if model.outputs[0].shape[-1] == 1 else "categorical_crossentropy"
        cut = frozen_cut(model) if cache_features and augment is None else None
        trained, stage_validation = model, validation
        if cut is None:
            cached.invalidate()
            dataset = make_dataset(x_train, as_targets(y_train, model), batch_size=stage.batch_size,
                                   augment=augment, shuffle=True, seed=seed + 1000 * number)
        else:
            trained, train_features, val_features = cached.get(model, cut)
            dataset = feature_dataset(train_features, as_targets(y_train, model), batch_size=stage.batch_size,
                                      shuffle=True, seed=seed + 1000 * number)
            if validation is not None:
                stage_validation = (val_features, validation[1])
        with trained.distribute_strategy.scope():  # optimizer variables where the model lives
            trained.compile(optimizer=make_optimizer(stage, steps), loss=loss, metrics=["accuracy"],
                            jit_compile=jit_compile)
        ready_for_fit(trained, dataset)  # a no-op unless built under MultiWorkerMirroredStrategy
        callbacks: list[keras.callbacks.Callback] = [EpochLog(stage.name, rows)]
        if validation is not None and stage.schedule == "plateau":
            callbacks.append(keras.callbacks.ReduceLROnPlateau(
                monitor=stage.monitor, factor=stage.plateau_factor, patience=stage.plateau_patience))
        if validation is not None and stage.early_stopping_patience is not None:
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor=stage.monitor, patience=stage.early_stopping_patience, restore_best_weights=True))
        trained.fit(dataset, epochs=stage.epochs, validation_data=stage_validation, callbacks=callbacks,
                    shuffle=False,
                    class_weight=balanced_class_weight(y_train) if stage.class_weight else None,
                    verbose=verbose)
    log = pd.DataFrame(rows)
    if log_csv is not None:
        atomic_write_text(log_csv, log.to_csv(index=False))
    return log
