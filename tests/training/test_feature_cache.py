"""Frozen-prefix feature caching: where the cut is, parity with the full model, weights trained in place."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from mammo_keras.models.chougrad import build_chougrad
from mammo_keras.training.feature_cache import compute_features, frozen_cut, split_at
from mammo_keras.training.fit import as_model_input, fit_stages
from mammo_keras.training.stages import Stage, apply_trainable


def small_chougrad(fine_tune="0FT"):
    keras.utils.set_random_seed(0)
    return build_chougrad("vgg16", (32, 32, 1), weights=None, fine_tune=fine_tune, head_units=(8, 4))


def images_and_labels(n=24, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.normal(0.0, 0.2, (n, 32, 32)).astype(np.float32)
    images[:, 8:24, 8:24] += np.where(labels == 1, 1.0, -1.0)[:, None, None]
    return images, labels


def test_cut_follows_the_frozen_part():
    model = small_chougrad("0FT")
    # Flatten has no weights and no randomness, so the cut is after it, before the first Dense.
    assert frozen_cut(model) == "head_pool"
    apply_trainable(model, "1FT")
    assert frozen_cut(model) == "block4_pool"
    apply_trainable(model, "all")
    assert frozen_cut(model) == "imagenet_scaling"  # no weights before the first convolution
    inputs = keras.Input((4,), name="x")
    dropped = keras.layers.Dropout(0.5, name="noise")(inputs)
    outputs = keras.layers.Dense(1, name="predictions")(dropped)
    noisy = keras.Model(inputs, outputs)
    assert frozen_cut(noisy) is None  # dropout in the prefix changes it every step


def test_head_on_features_matches_the_full_model():
    model = small_chougrad("0FT")
    images, _ = images_and_labels(8)
    x = as_model_input(images, model)
    prefix, head = split_at(model, "head_pool")
    assert head.get_layer("predictions") is model.get_layer("predictions")
    features = compute_features(prefix, x, batch_size=4)
    assert features.shape == (8, 512)
    np.testing.assert_allclose(head.predict(features, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    with pytest.raises(ValueError, match="Received: cut_layer='nope'"):
        split_at(model, "nope")


def tiny_net(dropout=0.5):
    """conv (frozen by the stage) -> flatten -> dense -> [dropout] -> predictions."""
    inputs = keras.Input((32, 32, 1), name="image")
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="block1_conv1")(inputs)
    x = keras.layers.Flatten(name="head_pool")(x)
    x = keras.layers.Dense(8, activation="relu", name="head_dense1")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs)


HEAD_ONLY = "re:^(head_|predictions)"


def test_cached_training_trains_the_model_itself():
    images, labels = images_and_labels()
    keras.utils.set_random_seed(0)
    model = tiny_net()
    backbone_before = [w.copy() for w in model.get_layer("block1_conv1").get_weights()]
    head_before = model.get_layer("predictions").get_weights()[0].copy()
    stage = Stage("head", 3, optimizer="adam", learning_rate=1e-2, trainable=HEAD_ONLY, batch_size=8)
    log = fit_stages(model, [stage], (images[:16], labels[:16]), (images[16:], labels[16:]),
                     augment=None, seed=0, cache_features=True)
    assert frozen_cut(model) == "head_pool"
    assert len(log) == 3 and "val_loss" in log.columns
    for before, after in zip(backbone_before, model.get_layer("block1_conv1").get_weights()):
        np.testing.assert_array_equal(before, after)  # the frozen prefix is untouched
    assert not np.allclose(head_before, model.get_layer("predictions").get_weights()[0])
    # Parity after training: the full model on images = the trained head on cached features.
    x = as_model_input(images, model)
    prefix, head = split_at(model, "head_pool")
    np.testing.assert_allclose(model.predict(x, verbose=0), head.predict(prefix.predict(x, verbose=0), verbose=0),
                               atol=1e-6)


def test_cached_and_recomputed_training_agree():
    """Same seed, same batches: the head learns the same weights from cached features."""
    images, labels = images_and_labels()
    stage = Stage("head", 2, optimizer="sgd", learning_rate=0.05, trainable=HEAD_ONLY, batch_size=8)
    finals = []
    for cache in (False, True):
        keras.utils.set_random_seed(0)
        model = tiny_net(dropout=0.0)
        fit_stages(model, [stage], (images, labels), None, augment=None, seed=0, cache_features=cache)
        finals.append(model.get_layer("predictions").get_weights()[0])
    np.testing.assert_allclose(finals[0], finals[1], atol=1e-5)
