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
layer by its inputs' mean and variance over the given items, as PreciseBN does (Wu & Johnson 2021,
"Rethinking 'Batch' in BatchNorm", Sec. 3): one forward pass over the items in batches, each
BatchNorm layer normalising with its batch's statistics as in training (dropout off, as at
prediction), every layer's input moments accumulated over all batches (the variance as the mean of
the batch second moments less the squared mean: the population variance of all items). One pass
instead of one per layer: with batches of tens of items, the upstream layers' normalisation by batch
rather than population statistics changes the downstream statistics by little (tested against the
exact layer-by-layer statistics). Frozen BatchNorm layers (a pretrained backbone run in inference
mode) are left alone.
"""
from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np


def recalibrated_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The layers `recalibrate` sets: trainable BatchNormalization layers of the model's own graph."""
    return [layer for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def nested_batchnorm(model: keras.Model) -> list[str]:
    """Names of trainable BatchNormalization layers inside nested models, which `recalibrate` cannot
    reach (frozen ones run on their moving statistics and are left alone anyway)."""
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            names += [f"{layer.name}/{inner.name}" for inner in layer._flatten_layers(include_self=False)
                      if isinstance(inner, keras.layers.BatchNormalization) and inner.trainable]
    return names


def recalibrate(model: keras.Model, inputs, *, batch_size: int = 64,
                to_input: Callable[[object], np.ndarray] | None = None) -> list[str]:
    """Set each trainable top-level BatchNorm layer's moving statistics to its inputs' over `inputs`.

    Args:
        model: a functional model with one input (its BatchNorm layers are in `model.layers`).
        inputs: the items the statistics describe (the training items, unaugmented); an array or
            lazy rows, read `batch_size` items at a time.
        to_input: turns a slice of `inputs` into what the model takes (e.g. grey repeated to three
            channels), one batch at a time, so no model-shaped copy of every item is held.

    Returns:
        The names of the layers set.
    """
    n = len(inputs)
    if n == 0:
        raise ValueError("recalibrate needs at least one item. Received: 0 items")
    layers = recalibrated_layers(model)
    if not layers:
        return []
    extractor = keras.Model(model.inputs[0], [layer.input for layer in layers])
    dropouts = [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, keras.layers.Dropout)]
    rates = [layer.rate for layer in dropouts]
    saved = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers]
    sums: list = [0.0] * len(layers)
    squares: list = [0.0] * len(layers)
    counts = [0] * len(layers)
    try:
        for layer in dropouts:  # batch statistics as in training, without training's dropout
            layer.rate = 0.0
        for start in range(0, n, batch_size):
            part = inputs[start:start + batch_size]
            batch = np.asarray(part if to_input is None else to_input(part), dtype=np.float32)
            outputs = extractor(batch, training=True)
            for k, (layer, values) in enumerate(zip(layers, outputs)):
                values = keras.ops.convert_to_numpy(values).astype(np.float64)
                axes = _reduced_axes(layer, values.ndim)
                sums[k] = sums[k] + values.sum(axis=axes)
                squares[k] = squares[k] + np.square(values).sum(axis=axes)
                counts[k] += int(np.prod([values.shape[a] for a in axes]))
    except BaseException:
        for layer, (mean, variance) in zip(layers, saved):  # training mode moved them: put them back
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        raise
    finally:
        for layer, rate in zip(dropouts, rates):
            layer.rate = rate
    for k, layer in enumerate(layers):
        mean = sums[k] / counts[k]
        variance = np.maximum(squares[k] / counts[k] - np.square(mean), 0.0)
        layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
        layer.moving_variance.assign(variance.astype(layer.moving_variance.dtype))
    return [layer.name for layer in layers]


def _reduced_axes(layer: keras.layers.BatchNormalization, rank: int) -> tuple[int, ...]:
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    kept = {a % rank for a in axis}
    return tuple(a for a in range(rank) if a not in kept)


class MovingAverageWarning(UserWarning):
    """A stage too short for its BatchNorm layers' moving averages to describe the data."""


def stale_share(model: keras.Model, steps: int) -> tuple[float, float] | None:
    """(share of the initial statistics left after `steps` training steps, momentum) for the trainable
    BatchNorm layer with the highest momentum (nested ones included), or None without one."""
    momenta = [float(layer.momentum) for layer in model._flatten_layers(include_self=False)
               if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    if not momenta:
        return None
    momentum = max(momenta)
    return momentum ** max(0, steps), momentum


def warn_if_stale(model: keras.Model, stage_name: str, steps_per_epoch: int, epochs: int,
                  threshold: float = 0.1, *, restored: bool = False) -> str | None:
    """Warn (and return the message) when a stage's steps leave more than `threshold` of its BatchNorm
    moving averages at their initial values (mean 0, variance 1): inference would then use statistics
    that do not describe the data, and scores can collapse. `precise_bn` on the stage avoids it.
    `restored`: `epochs` is the epoch early stopping restored (its weights, moving averages included),
    which can be stale where the whole stage would not be."""
    import warnings

    stale = stale_share(model, steps_per_epoch * epochs)
    if stale is None or stale[0] <= threshold:
        return None
    what = f"early stopping restored epoch {epochs}: " if restored else ""
    message = (f"stage {stage_name!r}: {what}{steps_per_epoch} steps an epoch x {epochs} epochs leave {stale[0]:.0%} of "
               f"the BatchNorm moving averages at their initial values (momentum {stale[1]:g}); inference "
               "will normalise with statistics that do not describe the data. Set precise_bn on the stage "
               "(mammo_keras.training.batchnorm) or train for more steps")
    warnings.warn(message, MovingAverageWarning, stacklevel=3)
    return message


class PreciseBatchNorm(keras.callbacks.Callback):
    """After every epoch, before validation and early stopping read the model: `recalibrate` on `inputs`.

    Validation losses, the epoch early stopping keeps and the weights it restores are then those of
    the network with its inputs' statistics, not those of a moving average that has not caught up.
    """

    def __init__(self, target: keras.Model, inputs, *, batch_size: int = 64,
                 to_input: Callable[[object], np.ndarray] | None = None):
        super().__init__()
        self.target, self.inputs, self.batch_size, self.to_input = target, inputs, batch_size, to_input

    def on_epoch_end(self, epoch, logs=None):
        recalibrate(self.target, self.inputs, batch_size=self.batch_size, to_input=self.to_input)
