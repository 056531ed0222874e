"""Fixed costs: one traced training step per stage (partial last batch included), one traced predict
step, augmentation in the training step, op determinism as an option."""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from mammo_keras.data.pipeline import AugmentConfig, RandomAugment, make_dataset, preset
from mammo_keras.training import cv
from mammo_keras.training.fit import (PREDICT_BATCH_BYTES, FixedBatches, augment_place, fit_stages, predict_batch_size,
                                      predict_fixed)
from mammo_keras.training.stages import Stage


class Counting(keras.Model):
    """A functional model counting how often Keras traces its steps (Python runs them only then)."""

    traces = {"train": 0, "test": 0, "predict": 0}

    def train_step(self, data):
        Counting.traces["train"] += 1
        return super().train_step(data)

    def test_step(self, data):
        Counting.traces["test"] += 1
        return super().test_step(data)

    def predict_step(self, data):
        Counting.traces["predict"] += 1
        return super().predict_step(data)


def counting_model() -> keras.Model:
    inputs = keras.Input((12, 12, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="block1_conv1")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    return Counting(inputs, keras.layers.Dense(2, activation="softmax", name="predictions")(x))


def task(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.normal(0, 0.2, (n, 12, 12)).astype(np.float32)
    images[:, 3:9, 3:9] += np.where(labels == 1, 1.0, -1.0)[:, None, None]
    return images, labels


def test_each_stage_traces_its_steps_once_with_a_partial_last_batch():
    keras.utils.set_random_seed(0)
    (x, y), (xv, yv) = task(42), task(45, seed=1)  # 42 = 5 batches of 8 + 2; 45 validation items = 32 + 13
    Counting.traces = {"train": 0, "test": 0, "predict": 0}
    model = counting_model()
    stages = [Stage("head", 2, optimizer="adam", learning_rate=1e-2, trainable="re:^predictions", batch_size=8),
              Stage("all", 3, optimizer="adam", learning_rate=1e-2, batch_size=8)]
    log = fit_stages(model, stages, (x, y), (xv, yv), augment=AugmentConfig(rotation_range=10.0),
                     selection="best_val_auc", augment_on="pipeline")
    assert len(log) == 5
    # One trace of the training step per stage: no second trace for the partial batch of 2; one
    # predict step for the per-epoch validation AUC predictions of both stages (inference does not
    # change with a stage's compile), which give val_loss too, so Keras's test step never runs.
    assert Counting.traces == {"train": 2, "test": 0, "predict": 1}
    before = dict(Counting.traces)
    for n in (5, 13, 40):  # any number of items: one batch shape
        assert predict_fixed(model, x[:n, ..., None]).shape == (n, 2)
    assert Counting.traces == before


def test_a_single_batch_is_predicted_eagerly_and_agrees_with_the_traced_step():
    """Up to `batch_size` rows: one eager forward pass, no traced predict step (seconds for a large
    network); the outputs agree with Keras' traced predict to float32 rounding."""
    Counting.traces = {"train": 0, "test": 0, "predict": 0}
    model = counting_model()
    x = np.random.default_rng(3).random((32, 12, 12, 1), dtype=np.float32)
    eager = predict_fixed(model, x)
    assert Counting.traces["predict"] == 0 and eager.shape == (32, 2)
    traced = predict_fixed(model, np.concatenate([x, x[:1]]))[:32]  # 33 rows: two batches, traced once
    assert Counting.traces["predict"] == 1
    np.testing.assert_allclose(eager, traced, atol=1e-6)


def test_fixed_batches_pad_only_the_last_batch_and_drop_its_padding():
    model = counting_model()
    x = np.random.default_rng(0).random((37, 12, 12, 1), dtype=np.float32)
    batches = FixedBatches(x, batch_size=16)
    shapes = [tuple(batch.shape) for batch in batches.dataset]
    assert shapes == [(16, 12, 12, 1)] * 3
    np.testing.assert_allclose(batches.predict(model), model.predict(x, verbose=0), atol=1e-6)
    assert FixedBatches(x[:0]).predict(model).shape == (0, 2)


def test_prediction_batches_hold_at_most_the_byte_budget():
    """32 rows (Keras' default) unless that many float32 inputs pass PREDICT_BATCH_BYTES (32 MiB): Shen's
    whole images (1152x896 grey, 4.1 MB) go 8 a batch, 3-channel ones 2; every input of a pair counts."""
    def batch(*shapes):
        return predict_batch_size([np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (5, *shape),
                                                                   (0,) * (len(shape) + 1)) for shape in shapes])
    assert PREDICT_BATCH_BYTES == 32 * 2 ** 20
    assert batch((224, 224, 3)) == 32 and batch((75, 75, 1)) == 32
    assert batch((1152, 896, 1)) == 8 and batch((1152, 896, 3)) == 2
    assert batch((224, 224, 3), (224, 224, 3)) == 27
    assert batch((8192, 8192, 1)) == 1  # one row even when it alone passes the budget
    x = np.zeros((20, 1152, 896, 1), np.float32)
    batches = FixedBatches(x)
    assert batches.batch_size == 8 and [int(b.shape[0]) for b in batches.dataset] == [8, 8, 8]


def test_augmentation_in_the_training_step():
    config = dataclasses.replace(preset("chougrad2018"), vertical_flip=True)
    layer = RandomAugment(config, seed=4)
    part = np.random.default_rng(0).random((6, 16, 16, 1), dtype=np.float32)
    first, second = layer([part, part.copy()], training=True)
    assert not np.allclose(first.numpy(), part)
    np.testing.assert_array_equal(first.numpy(), second.numpy())  # one transform per item for both parts
    np.testing.assert_array_equal(layer(part, training=False), part)
    again = RandomAugment.from_config(layer.get_config())
    assert again.augment == config and again.seed == 4
    with pytest.raises(ValueError, match=r"`seed` must be an integer. Received: seed='1'"):
        RandomAugment(config, seed="1")
    # fit_stages puts it before the model: the model's own layers train, and the model alone predicts.
    keras.utils.set_random_seed(0)
    (x, y), (xv, yv) = task(48), task(16, seed=2)
    model = counting_model()
    log = fit_stages(model, [Stage("all", 6, optimizer="adam", learning_rate=3e-2, batch_size=8)], (x, y), (xv, yv),
                     augment=AugmentConfig(rotation_range=20.0, horizontal_flip=True), augment_on="device")
    assert log["loss"].iloc[-1] < log["loss"].iloc[0]
    assert [layer.name for layer in model.layers][0] == "image"  # the model itself is not wrapped
    assert (predict_fixed(model, xv[..., None]).argmax(axis=1) == yv).mean() >= 0.8
    assert augment_place("auto") == ("device" if tf.config.list_physical_devices("GPU") else "pipeline")
    with pytest.raises(ValueError, match=r"`augment_on` must be one of .*Received: augment_on='gpu'"):
        augment_place("gpu")


def test_grey_items_stay_one_channel_until_a_three_channel_model_needs_them():
    """fit_stages feeds a 3-channel model grey items repeated after augmentation, as make_dataset(channels=3)."""
    grey = np.random.default_rng(1).random((8, 12, 12), dtype=np.float32)
    dataset = make_dataset(grey[..., None], np.zeros(8), batch_size=8, augment=preset("jain_levy"), shuffle=False,
                           seed=0, channels=3)
    batch, _ = next(iter(dataset))
    assert batch.shape == (8, 12, 12, 3)
    np.testing.assert_array_equal(batch[..., 0], batch[..., 2])


def test_op_determinism_is_an_option():
    try:
        cv.seed_everything(1, deterministic=False)
        assert not tf_config.is_op_determinism_enabled()
        a = np.random.random()
        cv.seed_everything(1, deterministic=True)
        assert tf_config.is_op_determinism_enabled() and np.random.random() == a
    finally:
        cv.seed_everything(0)  # the default, as the rest of the suite expects
    assert cv.TrainSpec(stages=()).deterministic is True


def test_fixed_batches_feed_every_input_of_a_paired_model():
    baseline, abnormality = keras.Input((6, 6, 1), name="baseline"), keras.Input((6, 6, 1), name="abnormality")
    pooled = [keras.layers.GlobalAveragePooling2D()(t) for t in (baseline, abnormality)]
    model = keras.Model([baseline, abnormality], keras.layers.Subtract()(pooled))
    a, b = np.ones((5, 6, 6, 1), np.float32), np.zeros((5, 6, 6, 1), np.float32)
    np.testing.assert_allclose(predict_fixed(model, [a, b], batch_size=4), np.ones((5, 1)))


def test_functional_build_trains_exactly_as_keras_own_symbolic_build(monkeypatch):
    """`build_compiled` skips running a functional model symbolically; the training it leads to is
    bitwise the one after Keras's `_symbolic_build` (same metric, loss and optimizer state)."""
    from mammo_keras.training import fit

    def trained() -> list[np.ndarray]:
        keras.utils.set_random_seed(0)
        (x, y), (xv, yv) = task(24), task(8, seed=1)
        model = counting_model()
        stages = [Stage("head", 1, optimizer="adam", learning_rate=1e-2, trainable="re:^predictions", batch_size=8),
                  Stage("all", 2, optimizer="sgd", learning_rate=1e-2, momentum=0.9, batch_size=8)]
        fit_stages(model, stages, (x, y), (xv, yv), selection="best_val_auc", augment_on="pipeline")
        return [np.asarray(w) for w in model.get_weights()]

    calls = []
    real = fit._functional_build
    monkeypatch.setattr(fit, "_functional_build", lambda model, batch: calls.append(1) or real(model, batch))
    fast = trained()
    assert len(calls) == 2  # one build per stage, both on the fast path
    monkeypatch.setattr(fit, "_functional_build", lambda model, batch: False)  # Keras's own build
    for mine, keras_own in zip(fast, trained(), strict=True):
        np.testing.assert_array_equal(mine, keras_own)
    # A model that is not functional is left to Keras.
    assert fit._functional_build(keras.Sequential([keras.layers.Dense(1)]), np.zeros((1, 3))) is False


def test_validation_numbers_come_from_one_pass_and_equal_kerass_own_evaluation():
    """`val_loss` and `val_accuracy` come from the predictions each epoch makes for `val_auc`, instead of
    a second pass over the validation rows (Keras's `validation_data`): the numbers Keras's evaluation
    gives for the same weights (per batch, weighted by batch size), the L2 penalty included, to
    float32 rounding."""
    (x, y), (xv, yv) = task(42), task(45, seed=1)
    stages = [Stage("head", 2, optimizer="adam", learning_rate=1e-2, trainable="re:^predictions", batch_size=8,
                    l2=0.05, l2_layers="re:^predictions"),
              Stage("all", 3, optimizer="adam", learning_rate=1e-2, batch_size=8, l2=0.05, l2_layers="re:^predictions")]
    keras.utils.set_random_seed(0)
    model = counting_model()
    log = fit_stages(model, stages, (x, y), (xv, yv), selection="last")
    assert {"val_loss", "val_accuracy", "val_auc"} <= set(log.columns) and (log["penalty"] > 0).all()
    evaluated = model.evaluate(xv[..., None], keras.utils.to_categorical(yv, 2), batch_size=32, return_dict=True,
                               verbose=0)  # the last epoch's weights ("last" selection), 45 rows = 32 + 13
    np.testing.assert_allclose(log["val_loss"].iloc[-1], evaluated["loss"], rtol=1e-6)
    np.testing.assert_allclose(log["val_accuracy"].iloc[-1], evaluated["accuracy"], rtol=1e-6)


def test_validation_of_a_multiclass_network_on_a_part_holding_two_of_its_classes():
    """No positive-class AUC for a 5-way softmax, even where the validation patients hold only
    classes 0 and 2 (before: 'y_true must hold the labels 0 and 1' ended the fold)."""
    from mammo_keras.training.fit import ValidationMetrics

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(inputs))
    model.compile(loss="categorical_crossentropy")
    x = np.random.default_rng(0).random((6, 4)).astype("float32")
    labels = np.array([0, 2, 0, 2, 2, 0])
    callback = ValidationMetrics(x, labels, keras.utils.to_categorical(labels, 5))
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert np.isnan(logs["val_auc"]) and np.isfinite(logs["val_loss"]) and 0 <= logs["val_accuracy"] <= 1
    binary = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    binary.compile(loss="binary_crossentropy")
    callback = ValidationMetrics(x, labels // 2, (labels // 2)[:, None])
    callback.set_model(binary)
    callback.on_epoch_end(0, logs)
    assert 0 <= logs["val_auc"] <= 1
