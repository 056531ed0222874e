"""Arrays to what a model takes: channels, paired inputs, targets, positive-class scores.

Models take one grey channel (and replicate it themselves when their backbone wants three) or
three; siamese models take a pair. These adapters sit with the models, below training,
evaluation and the app, which all feed models.
"""
from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from mammo_keras.data.rows import is_lazy

# Parts of a paired item in prepared arrays (N, 2, H, W): Coccomini's [lesion, baseline].
PAIR_PARTS = ("abnormality", "baseline")


def _channels(images: np.ndarray, channels: int) -> np.ndarray:
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 1 and channels == 3:
        images = np.repeat(images, 3, axis=-1)
    return images


def input_channels(model: keras.Model) -> list[int]:
    """The channel count of each model input."""
    return [int(tensor.shape[-1]) for tensor in model.inputs]


def _input_order(images: np.ndarray, model: keras.Model) -> list[int]:
    """Which part of a paired item feeds each model input (PAIR_PARTS names, else by position)."""
    if images.ndim < 4 or images.shape[1] != len(model.inputs):
        raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs and needs paired items "
                         f"of shape (N, {len(model.inputs)}, H, W). Received: shape={images.shape}")
    names = [tensor.name.split(":")[0] for tensor in model.inputs]
    return ([PAIR_PARTS.index(n) for n in names] if sorted(names) == sorted(PAIR_PARTS)
            else list(range(len(names))))


def as_model_input(images: np.ndarray, model: keras.Model, *, repeat: bool = True) -> np.ndarray | list[np.ndarray]:
    """(N, H, W) grey arrays -> (N, H, W, C) as the model's input expects (C = 1 or 3).

    A model whose input has 3 channels gets the grey channel repeated here, unless `repeat`
    is False (the training pipeline then repeats it after augmentation,
    `make_dataset(channels=...)`). Lazy rows (`data.rows.ItemRows`) stay lazy for a one-input
    model, their channels added when each batch is read. A model with several inputs (the siamese network) takes
    paired items, (N, parts, H, W): part k feeds the input named PAIR_PARTS[k] when the model
    names its inputs that way, otherwise input k.
    """
    if is_lazy(images) and len(model.inputs) == 1 and images.ndim == 3:  # read per batch, channels added then
        return images.with_channels(model.inputs[0].shape[-1] if repeat else 1)
    if is_lazy(images) and len(model.inputs) == 1 and images.channels:
        return images
    images = np.asarray(images, dtype=np.float32)
    if len(model.inputs) == 1:
        return _channels(images, model.inputs[0].shape[-1] if repeat else 1)
    order = _input_order(images, model)
    return [_channels(images[:, part], tensor.shape[-1] if repeat else 1)
            for part, tensor in zip(order, model.inputs)]


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
