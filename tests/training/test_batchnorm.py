"""Precise BatchNorm (training.batchnorm): statistics recomputed from the training items."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from mammo_keras.training.batchnorm import (MovingAverageWarning, nested_batchnorm, recalibrate, recalibrated_layers,
                                            stale_share, warn_if_stale)
from mammo_keras.training.fit import fit_stages
from mammo_keras.training.stages import Stage, preset


def bn_model(dropout: float = 0.5) -> keras.Model:
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    x = keras.layers.ReLU(name="conv1_relu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Dense(6, name="fc1")(x)
    x = keras.layers.BatchNormalization(name="fc1_bn")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="predictions")(keras.layers.ReLU()(x))
    return keras.Model(inputs, outputs)


def items(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (20.0 + 0.1 * rng.normal(size=(n, 8, 8, 1))).astype(np.float32)  # far from BatchNorm's initial 0 / 1


def test_each_layer_gets_its_inputs_mean_and_variance():
    keras.utils.set_random_seed(0)
    model, x = bn_model(), items(37)
    assert recalibrate(model, x, batch_size=8) == ["conv1_bn", "fc1_bn"]  # 37 = 4 batches of 8 + 5
    assert model.get_layer("dropout").rate == 0.5  # switched off for the pass only
    # the first layer's inputs do not depend on any BatchNorm: its statistics are exact
    first = model.get_layer("conv1_bn")
    inputs = keras.ops.convert_to_numpy(keras.Model(model.inputs[0], first.input)(x))
    np.testing.assert_allclose(first.moving_mean.numpy(), inputs.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first.moving_variance.numpy(), inputs.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-7)
    # the second layer's are those of its inputs with the first normalising by batch (PreciseBN), close to
    # the exact ones of inference; its inference output is standardised
    second = model.get_layer("fc1_bn")
    inputs = keras.ops.convert_to_numpy(keras.Model(model.inputs[0], second.input)(x, training=False))
    np.testing.assert_allclose(second.moving_mean.numpy(), inputs.mean(axis=0), atol=0.05 * inputs.std(axis=0).max())
    np.testing.assert_allclose(second.moving_variance.numpy(), inputs.var(axis=0), rtol=0.25)
    fc = keras.ops.convert_to_numpy(keras.Model(model.inputs[0], second.output)(x, training=False))
    np.testing.assert_allclose(fc.mean(axis=0), 0.0, atol=0.1)
    np.testing.assert_allclose(fc.std(axis=0), 1.0, rtol=0.15)


def test_frozen_batchnorm_layers_keep_their_statistics():
    model = bn_model()
    model.get_layer("conv1_bn").trainable = False
    assert [layer.name for layer in recalibrated_layers(model)] == ["fc1_bn"]
    recalibrate(model, items(10))
    np.testing.assert_array_equal(model.get_layer("conv1_bn").moving_mean.numpy(), np.zeros(4))
    np.testing.assert_array_equal(model.get_layer("conv1_bn").moving_variance.numpy(), np.ones(4))
    with pytest.raises(ValueError, match="at least one item. Received: 0 items"):
        recalibrate(model, items(0))


def test_a_few_steps_leave_moving_averages_that_collapse_the_scores_and_precise_bn_does_not():
    """The defect it fixes: two steps an epoch, inputs far from 0 / 1, Keras' momentum 0.99."""
    rng = np.random.default_rng(1)
    x = items(40)
    labels = (rng.random(40) < 0.5).astype(int)
    x[labels == 1, 2:6, 2:6] += 0.3  # a small, learnable signal on a large offset
    spreads = {}
    for precise in (False, True):
        keras.utils.set_random_seed(0)
        model = bn_model(dropout=0.0)
        stage = Stage("train", 3, optimizer="adam", learning_rate=1e-2, batch_size=20, precise_bn=precise)
        log = fit_stages(model, [stage], (x[..., 0], labels), (x[..., 0], labels), seed=0)
        assert len(log) == 3 and np.isfinite(log["val_loss"]).all()
        spreads[precise] = float(model.predict(x, verbose=0).std())
        if precise:  # what the callback left after the last epoch: the items' statistics
            inputs = keras.ops.convert_to_numpy(keras.Model(model.inputs[0], model.get_layer("conv1_bn").input)(x))
            np.testing.assert_allclose(model.get_layer("conv1_bn").moving_mean.numpy(),
                                       inputs.mean(axis=(0, 1, 2)), rtol=1e-5)
    assert spreads[False] < 1e-3 < 0.02 < spreads[True]


def test_precise_bn_refuses_batchnorm_it_cannot_reach():
    inner = bn_model()
    inputs = keras.Input((8, 8, 1))
    outer = keras.Model(inputs, inner(inputs))
    assert nested_batchnorm(outer)[:1] == [f"{inner.name}/conv1_bn"]
    stage = Stage("train", 1, optimizer="adam", batch_size=8, precise_bn=True)
    with pytest.raises(ValueError, match="BatchNorm layers inside nested models"):
        fit_stages(outer, [stage], (items(8)[..., 0], np.arange(8) % 2), None, seed=0)


def test_precise_bn_accepts_a_frozen_nested_backbone_and_a_model_without_batchnorm(monkeypatch):
    """Frozen nested BatchNorm runs on its moving statistics (nothing to set), and a model with no
    trainable BatchNorm layer (VGG16) trains with precise_bn as without it: no recalibration pass."""
    from mammo_keras.training import batchnorm

    inner = bn_model()
    inner.trainable = False
    inputs = keras.Input((8, 8, 1))
    outer = keras.Model(inputs, inner(inputs))
    assert nested_batchnorm(outer) == [] and recalibrated_layers(outer) == []
    calls = []
    monkeypatch.setattr(batchnorm, "recalibrate", lambda *a, **k: calls.append(1) or [])
    stage = Stage("train", 2, optimizer="adam", batch_size=8, trainable="as_built", precise_bn=True)
    log = fit_stages(outer, [stage], (items(8)[..., 0], np.arange(8) % 2), None, seed=0)
    assert len(log) == 2 and calls == []


def test_the_mias_preset_with_precise_bn_is_mias_scratch_plus_the_flag():
    (plain,), (precise,) = preset("mias_scratch"), preset("mias_scratch_precise_bn")
    assert precise.precise_bn and not plain.precise_bn
    assert {**vars(precise), "precise_bn": False} == vars(plain)


def test_a_stage_too_short_for_the_moving_averages_is_warned_about_and_a_precise_one_is_not():
    model = bn_model()
    assert stale_share(model, 2 * 20) == pytest.approx((0.99 ** 40, 0.99))
    with pytest.warns(MovingAverageWarning, match=r"stage 'train': 2 steps an epoch x 20 epochs leave 67% .*precise_bn"):
        warn_if_stale(model, "train", 2, 20)
    assert warn_if_stale(model, "train", 100, 20) is None  # 0.99 ** 2000: nothing left
    x, labels = items(8)[..., 0], np.arange(8) % 2
    with pytest.warns(MovingAverageWarning):
        fit_stages(model, [Stage("train", 1, optimizer="adam", batch_size=8)], (x, labels), None, seed=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", MovingAverageWarning)
        fit_stages(bn_model(), [Stage("train", 1, optimizer="adam", batch_size=8, precise_bn=True)],
                   (x, labels), None, seed=0)
    frozen = bn_model()
    for layer in frozen.layers:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    assert stale_share(frozen, 1) is None


def test_grey_items_are_given_the_models_channels_one_batch_at_a_time():
    """A three-channel model's statistics from (N, H, W) grey items: the same as from the repeated array."""
    from mammo_keras.models.inputs import as_model_input

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(2, 3, name="conv")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(x)))
    grey = items(20)[..., 0]
    seen = []

    def to_input(part):
        seen.append(len(part))
        return as_model_input(part, model)

    recalibrate(model, grey, batch_size=8, to_input=to_input)
    assert seen == [8, 8, 4]
    by_batch = model.get_layer("bn").moving_variance.numpy().copy()
    recalibrate(model, np.repeat(grey[..., None], 3, axis=-1), batch_size=8)
    np.testing.assert_allclose(model.get_layer("bn").moving_variance.numpy(), by_batch, rtol=1e-6)


def test_early_stopping_restoring_an_early_epoch_is_warned_about_when_the_stage_would_not_be():
    """30 epochs of 8 steps leave 9% of the averages (no warning before the stage); the epoch early
    stopping restores, with its few steps, leaves far more, and that is what inference uses."""
    import warnings

    assert warn_if_stale(bn_model(), "train", 8, 30) is None
    with pytest.warns(MovingAverageWarning):
        message = warn_if_stale(bn_model(), "train", 8, 2, restored=True)
    assert message.startswith("stage 'train': early stopping restored epoch 2: 8 steps an epoch x 2 epochs leave 85%")
    x, labels = items(8)[..., 0], np.arange(8) % 2
    stage = Stage("train", 30, optimizer="sgd", learning_rate=5.0, batch_size=1, early_stopping_patience=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log = fit_stages(bn_model(), [stage], (x, labels), (x, labels), seed=0)
    restored = [str(w.message) for w in caught if "early stopping restored" in str(w.message)]
    assert len(log) < 30 and len(restored) == 1, (len(log), restored)
    kept = int(log.loc[log["selected"], "epoch"].iloc[0])
    assert f"restored epoch {kept}:" in restored[0]
