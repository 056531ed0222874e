"""Precise BatchNorm: a trained network's BatchNorm statistics recomputed from its training items.

Keras keeps each BatchNormalization layer's inference statistics as an exponential moving average
of batch statistics (momentum 0.99 by default: about 460 steps to forget 99% of the initial mean 0
and variance 1). A fold of a few dozen items trains for two steps an epoch, so after tens of steps
the averages are still mostly their initial values. On mini-MIAS mass vs calcification (56
training patches, Coccomini's scratch CNN) the first BatchNorm's moving variance was 1,000-1,900
times its input's variance and its mean 3.6-3.9 standard deviations off after early stopping's
epoch: the network's inference outputs had a spread of 0.0002-0.001 (a `collapsed` row), where the
same weights with their inputs' true statistics spread 0.22-0.43.

`recalibrate` replaces the moving mean and variance of every trainable top-level BatchNormalization
layer by the exact mean and variance of that layer's inputs over the given items, computed in
inference mode (dropout off, as at prediction) layer by layer in graph order, so each layer's
statistics are those of the inputs it sees once the layers before it are recalibrated. Frozen
BatchNorm layers (a pretrained backbone run in inference mode) are left alone. This is "PreciseBN"
(Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", Sec. 3), with exact population statistics of
the items rather than an average of batch statistics.
"""
from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np


def recalibrated_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The layers `recalibrate` sets: trainable BatchNormalization layers of the model's own graph."""
    return [layer for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def nested_batchnorm(model: keras.Model) -> list[str]:
    """Names of BatchNormalization layers inside nested models, which `recalibrate` cannot reach."""
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            names += [f"{layer.name}/{inner.name}" for inner in layer._flatten_layers(include_self=False)
                      if isinstance(inner, keras.layers.BatchNormalization)]
    return names


def _moments(extractor: keras.Model, inputs, batch_size: int, axes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) variance over every item and position, accumulated in float64 by batch."""
    total, total_sq, count = 0.0, 0.0, 0
    n = len(inputs)
    for start in range(0, n, batch_size):
        batch = np.asarray(inputs[start:start + batch_size], dtype=np.float32)
        values = keras.ops.convert_to_numpy(extractor(batch, training=False)).astype(np.float64)
        total = total + values.sum(axis=tuple(axes))
        total_sq = total_sq + np.square(values).sum(axis=tuple(axes))
        count += int(np.prod([values.shape[a] for a in axes]))
    mean = total / count
    return mean, np.maximum(total_sq / count - np.square(mean), 0.0)


def recalibrate(model: keras.Model, inputs, *, batch_size: int = 64) -> list[str]:
    """Set each trainable top-level BatchNorm layer's moving statistics to its inputs' over `inputs`.

    Args:
        model: a functional model (its BatchNorm layers are in `model.layers`).
        inputs: the items the statistics describe (the training items, unaugmented), as the model
            takes them; an array or a memory-mapped array, read `batch_size` items at a time.

    Returns:
        The names of the layers set, in the order they were set.
    """
    if len(inputs) == 0:
        raise ValueError("recalibrate needs at least one item. Received: 0 items")
    names = []
    for layer in recalibrated_layers(model):
        extractor = keras.Model(model.inputs[0], layer.input)
        axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        rank = len(layer.input.shape)
        kept = {a % rank for a in axis}
        mean, variance = _moments(extractor, inputs, batch_size, [a for a in range(rank) if a not in kept])
        layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
        layer.moving_variance.assign(variance.astype(layer.moving_variance.dtype))
        names.append(layer.name)
    return names


class PreciseBatchNorm(keras.callbacks.Callback):
    """After every epoch, before validation and early stopping read the model: `recalibrate` on `inputs`.

    Validation losses, the epoch early stopping keeps and the weights it restores are then those of
    the network with its inputs' statistics, not those of a moving average that has not caught up.
    """

    def __init__(self, target: keras.Model, inputs, *, batch_size: int = 64):
        super().__init__()
        self.target, self.inputs, self.batch_size = target, inputs, batch_size

    def on_epoch_end(self, epoch, logs=None):
        recalibrate(self.target, self.inputs, batch_size=self.batch_size)
