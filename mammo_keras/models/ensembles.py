"""Ensembles of trained models as plain keras.Models: averaging, weighted averaging, stacking.

    ensemble = average_ensemble([resnet_resnet, vgg_vgg, resnet_vgg, vgg_resnet])   # Shen
    search = select_weights([m.predict(x_val) for m in members], y_val)             # validation!
    ensemble = weighted_average_ensemble(members, search.weights)
    stacked = stack_ensemble(members, hidden=(16,))                                  # Coccomini
    stacked.compile(...); stacked.fit(x_train, y_train, validation_data=...)

Members keep their own names and must share input shapes; each is nested once in the ensemble.

Reference: Shen et al. 2019, Sec. 3.3 (four-model averaging); Coccomini et al., Ch. 7
(stack model, weighted average model with a {0, 0.34, 0.67, 1} grid search).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import keras
import numpy as np
from keras import layers

COCCOMINI_GRID = (0.0, 0.34, 0.67, 1.0)


@keras.saving.register_keras_serializable(package="mammo_keras")
class WeightedAverage(layers.Layer):
    """Weighted mean of same-shaped inputs: sum(w_i * x_i) / sum(w_i).

    Args:
        member_weights: one non-negative weight per input, not all zero; normalised by their sum.
            (Not `weights`, which Keras layers reserve for their variables.)
    """

    def __init__(self, member_weights: Sequence[float] = (1.0, 1.0), **kwargs):
        super().__init__(**kwargs)
        weights = [float(w) for w in member_weights]
        if len(weights) < 2 or any(not math.isfinite(w) or w < 0 for w in weights) or not sum(weights):
            raise ValueError("`member_weights` must be two or more finite non-negative numbers, not "
                             f"all zero. Received: member_weights={member_weights!r}")
        self.member_weights = weights

    def build(self, input_shape):
        if len(input_shape) != len(self.member_weights):
            raise ValueError(f"WeightedAverage has {len(self.member_weights)} weights but receives "
                             f"{len(input_shape)} inputs. Received: member_weights={self.member_weights!r}")

    def call(self, inputs):
        total = sum(self.member_weights)
        output = inputs[0] * (self.member_weights[0] / total)
        for tensor, weight in zip(inputs[1:], self.member_weights[1:]):
            output = output + tensor * (weight / total)
        return output

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "member_weights": list(self.member_weights)}


class WeightSearch(NamedTuple):
    """Result of `select_weights`: normalised member weights and their validation accuracy."""

    weights: tuple[float, ...]
    accuracy: float


def select_weights(predictions_val: Sequence[np.ndarray], y_val: np.ndarray,
                   grid: Sequence[float] = COCCOMINI_GRID) -> WeightSearch:
    """Grid-search ensemble weights that maximise accuracy on VALIDATION predictions.

    Every combination of `grid` values (one per member, all-zero excluded) is normalised by its
    sum; the first combination (in `itertools.product` order) with the highest accuracy wins.
    Pass validation (or out-of-fold) predictions only: choosing weights on the test set, as the
    report did, leaks the test labels into the model and inflates the reported accuracy.

    Args:
        predictions_val: one array per member, (n,) or (n, 1) sigmoid scores (threshold 0.5)
            or (n, k) class probabilities (argmax).
        y_val: validation labels, (n,) integers or (n, k) one-hot.
        grid: candidate weight values per member.

    Returns:
        `WeightSearch(weights, accuracy)` with weights summing to 1.

    Reference: Coccomini et al., Ch. 7.3 (grid {0, 0.34, 0.67, 1}, weights normalised).
    """
    members = [_as_scores(np.asarray(p, dtype=np.float64)) for p in predictions_val]
    if len(members) < 2 or len({m.shape for m in members}) != 1:
        raise ValueError("`predictions_val` must hold two or more arrays of the same shape. "
                         f"Received shapes: {[np.shape(p) for p in predictions_val]}")
    labels = _as_labels(np.asarray(y_val))
    if labels.shape[0] != members[0].shape[0]:
        raise ValueError("`y_val` must have one label per prediction row. "
                         f"Received: {labels.shape[0]} labels for {members[0].shape[0]} predictions")
    grid = tuple(float(g) for g in grid)
    if not grid or any(g < 0 or not math.isfinite(g) for g in grid) or not any(grid):
        raise ValueError("`grid` must hold finite non-negative values, one of them > 0. "
                         f"Received: grid={grid!r}")
    best = None
    for combination in itertools.product(grid, repeat=len(members)):
        total = sum(combination)
        if total == 0:
            continue
        weights = tuple(w / total for w in combination)
        blended = sum(w * m for w, m in zip(weights, members))
        accuracy = float(np.mean(_decide(blended) == labels))
        if best is None or accuracy > best.accuracy:
            best = WeightSearch(weights, accuracy)
    return best


def average_ensemble(models: Sequence[keras.Model], *, name: str = "average_ensemble") -> keras.Model:
    """The mean of the members' outputs (model averaging).

    Reference: Shen et al. 2019, Sec. 3.3 ("four-model averaging"); Coccomini et al., Ch. 7.3.
    """
    inputs, outputs = _members_on_shared_inputs(models)
    return keras.Model(inputs, layers.Average(name="average")(outputs), name=name)


def weighted_average_ensemble(models: Sequence[keras.Model], weights: Sequence[float], *,
                              name: str = "weighted_average_ensemble") -> keras.Model:
    """The members' outputs averaged with `weights` (normalised by their sum).

    Choose `weights` with `select_weights` on validation predictions, never on the test set.

    Reference: Coccomini et al., Ch. 7.3.
    """
    if len(weights) != len(models):
        raise ValueError("`weights` must have one value per model. "
                         f"Received: {len(weights)} weights for {len(models)} models")
    inputs, outputs = _members_on_shared_inputs(models)
    output = WeightedAverage(weights, name="weighted_average")(outputs)
    return keras.Model(inputs, output, name=name)


def stack_ensemble(models: Sequence[keras.Model], hidden: Sequence[int] = (16,), *,
                   name: str = "stack_ensemble") -> keras.Model:
    """A trainable level-1 MLP on the concatenated outputs of frozen level-0 members.

    The members are set `trainable=False` (in place): their weights stay fixed and their batch
    normalisation runs in inference mode. Their dropout layers still drop during `fit`, as in the
    Keras stacking recipe the report follows (a functional model replays the caller's `training`
    flag into nested models); at prediction time the members are deterministic. The output layer
    has the members' output width: one sigmoid unit for sigmoid members, else a softmax.

    Args:
        models: trained level-0 models with the same output width.
        hidden: widths of the ReLU layers of the level-1 MLP (the report leaves it unspecified).

    Reference: Coccomini et al., Ch. 7.2 (stack model; level 1 trained 40 epochs, early
    stopping on validation loss with patience 3).
    """
    if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError("`hidden` must be a non-empty sequence of positive integers. "
                         f"Received: hidden={hidden!r}")
    for member in models:
        member.trainable = False
    inputs, outputs = _members_on_shared_inputs(models)
    widths = {int(o.shape[-1]) for o in outputs}
    if len(widths) != 1:
        raise ValueError(f"Stacked models must have the same output width. Received widths: {sorted(widths)}")
    width = widths.pop()
    x = layers.Concatenate(name="level0_outputs")(outputs)
    for index, units in enumerate(hidden, start=1):
        x = layers.Dense(units, activation="relu", name=f"level1_dense{index}")(x)
    activation = "sigmoid" if width == 1 else "softmax"
    output = layers.Dense(width, activation=activation, name="level1_predictions")(x)
    return keras.Model(inputs, output, name=name)


def _members_on_shared_inputs(models: Sequence[keras.Model]):
    """New inputs shaped like the first member's, and each member's output on them."""
    models = list(models)
    if len(models) < 2:
        raise ValueError(f"An ensemble needs two or more models. Received: {len(models)}")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError("Ensemble members must have distinct names (build them with name=...). "
                         f"Received names: {names}")
    specs = [tuple(tuple(t.shape[1:]) for t in m.inputs) for m in models]
    if len(set(specs)) != 1:
        raise ValueError(f"Ensemble members must take the same inputs. Received input shapes: {specs}")
    if any(len(m.outputs) != 1 for m in models):
        raise ValueError("Ensemble members must have a single output. Received output counts: "
                         f"{[len(m.outputs) for m in models]}")
    single = len(specs[0]) == 1
    inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name="input" if single else f"input_{i}")
              for i, t in enumerate(models[0].inputs)]
    member_input = inputs[0] if len(inputs) == 1 else inputs
    outputs = [m(member_input) for m in models]
    return member_input, outputs


def _as_scores(predictions: np.ndarray) -> np.ndarray:
    return predictions[:, 0] if predictions.ndim == 2 and predictions.shape[1] == 1 else predictions


def _as_labels(labels: np.ndarray) -> np.ndarray:
    if labels.ndim == 2:
        return labels[:, 0].astype(int) if labels.shape[1] == 1 else np.argmax(labels, axis=1)
    return labels.astype(int)


def _decide(scores: np.ndarray) -> np.ndarray:
    return (scores > 0.5).astype(int) if scores.ndim == 1 else np.argmax(scores, axis=1)
