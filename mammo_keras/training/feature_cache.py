"""Frozen-prefix feature caching: run the frozen part of a network once, train only the rest.

When every layer up to some tensor is frozen and deterministic (no trainable weights, no
dropout or noise, BatchNormalization in inference mode) and the images reach it unaugmented,
that tensor is the same every epoch. Chougrad's 0FT head training and every evaluation pass
are such cases: the backbone's features are computed once and the head trains on them.

    cut = frozen_cut(model)                   # e.g. "head_pool" for a 0FT Chougrad network
    prefix, head = split_at(model, cut)       # head shares the model's layers (same weights)
    features = prefix.predict(images)
    head.fit(features, targets, ...)          # trains `model`'s own head layers

`head` is built from the model's own layer objects, so training it trains `model`: the saved
full model is the trained one, and `model.predict(images)` equals `head.predict(features)`
(tests/training/test_feature_cache.py checks both).

Reference: Chougrad et al. 2018, §2.2.3 (0FT: the backbone as a fixed feature extractor).
"""
from __future__ import annotations

import contextlib

import keras
import numpy as np

from mammo_keras.data.rows import is_lazy
from mammo_keras.models.backbones import layer_parents

STOCHASTIC_LAYERS = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
                     keras.layers.SpatialDropout3D, keras.layers.GaussianNoise,
                     keras.layers.GaussianDropout, keras.layers.AlphaDropout)


def _is_fixed(layer: keras.layers.Layer) -> bool:
    """No trainable weights and no randomness in training mode (nested layers included)."""
    if layer.trainable_weights:
        return False
    for inner in layer._flatten_layers(include_self=True):
        if isinstance(inner, STOCHASTIC_LAYERS) or type(inner).__name__.startswith("Random"):
            return False
    return True


def frozen_cut(model: keras.Model) -> str | None:
    """The deepest layer whose output alone feeds every trainable layer, all upstream fixed.

    Returns None when there is no such layer (the first layer trains, or the graph has no
    single-tensor cut before its trainable part). Layers are found by graph, not position.
    """
    parents = layer_parents(model)
    order = [layer.name for layer in model.layers]
    output_layers = {tensor._keras_history.operation.name for tensor in model.outputs}
    upstream: dict[str, set[str]] = {}
    for name in order:  # functional models list layers in topological order
        upstream[name] = {name}.union(*(upstream[p] for p in parents[name]))
    fixed = {layer.name for layer in model.layers if _is_fixed(layer)}
    best = None
    for name in order:
        if name in output_layers or len(model.get_layer(name)._inbound_nodes) != 1:
            continue
        if not upstream[name] <= fixed:
            continue
        below = upstream[name]
        rest = [other for other in order if other not in below]
        if rest and not any(isinstance(model.get_layer(other), keras.layers.InputLayer) for other in rest) \
                and all(parents[other] <= set(rest) | {name} for other in rest):
            best = name
    if best is not None and isinstance(model.get_layer(best), keras.layers.InputLayer):
        return None
    return best


def split_at(model: keras.Model, cut_layer: str) -> tuple[keras.Model, keras.Model]:
    """(prefix, head): inputs -> `cut_layer`'s output, and that output -> the model's outputs.

    Both are built from `model`'s own layers, so they share its weights.
    """
    try:
        tensor = model.get_layer(cut_layer).output
    except ValueError as error:
        raise ValueError(f"`cut_layer` must name a layer of the model. Received: cut_layer={cut_layer!r}") from error
    prefix = keras.Model(model.inputs, tensor, name=f"{model.name}_prefix")
    head = keras.Model(tensor, model.outputs if len(model.outputs) > 1 else model.outputs[0],
                       name=f"{model.name}_head")
    return prefix, head


def compute_features(prefix: keras.Model, images: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
    """The prefix's output for every image, in order (one inference pass).

    Lazy rows (`data.rows.ItemRows`) are read per batch, in the batches `predict` cuts from arrays
    (`batch_size` rows, the last partial): the images are never in memory, only their features."""
    if is_lazy(images):
        from mammo_keras.data.pipeline import ordered_batches

        return np.asarray(prefix.predict(ordered_batches(images, batch_size=batch_size), verbose=0))
    return np.asarray(prefix.predict(images, batch_size=batch_size, verbose=0))


def feature_dataset(features: np.ndarray, targets: np.ndarray, *, batch_size: int, shuffle: bool,
                    seed: int, epochs: int | None = None, first_epoch: int = 0):
    """Batches of (features, targets) from memory, reshuffled each epoch reproducibly from `seed`.

    The schedule of `pipeline.make_dataset` (indices shuffled, batches gathered; with `epochs`
    numbered, epoch e a function of (seed, e), so a resumed stage sees the same batches).
    """
    import tensorflow as tf

    from mammo_keras.data.pipeline import make_dataset

    features = np.asarray(features, np.float32)
    flat = features.reshape(len(features), 1, 1, -1)  # make_dataset gathers NHWC arrays
    dataset = make_dataset(flat, np.asarray(targets), batch_size=batch_size, augment=None, shuffle=shuffle,
                           seed=seed, epochs=epochs, first_epoch=first_epoch)
    shape = features.shape[1:]
    return dataset.map(tf.autograph.experimental.do_not_convert(lambda x, y: (tf.reshape(x, [-1, *shape]), y)))


class CachedFeatures:
    """Features of the train and validation images at one cut, kept while the prefix is unchanged.

    `fit_stages` asks for the features of each stage's cut; they are computed once and reused
    by later stages with the same cut, and forgotten when a stage trains the whole model.
    """

    def __init__(self, train_images: np.ndarray, val_images: np.ndarray | None, *, batch_size: int = 32):
        self.train_images, self.val_images, self.batch_size = train_images, val_images, batch_size
        self._cut: str | None = None
        self._features: tuple[np.ndarray, np.ndarray | None] | None = None

    def get(self, model: keras.Model, cut: str) -> tuple[keras.Model, np.ndarray, np.ndarray | None]:
        """(head, train features, validation features) for `cut`, computing them if needed."""
        strategy = getattr(model, "_distribute_strategy", None)  # build the head where the model lives
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            prefix, head = split_at(model, cut)
        if self._cut != cut or self._features is None:
            train = compute_features(prefix, self.train_images, batch_size=self.batch_size)
            val = None if self.val_images is None else compute_features(prefix, self.val_images,
                                                                       batch_size=self.batch_size)
            self._cut, self._features = cut, (train, val)
        return head, *self._features

    def invalidate(self) -> None:
        self._cut, self._features = None, None
