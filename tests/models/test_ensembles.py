"""Averaging, weighted averaging (weights chosen on validation data) and stacking ensembles."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from mammo_keras.models.ensembles import (WeightedAverage, average_ensemble, select_weights,
                                          stack_ensemble, weighted_average_ensemble)

BIASES = (0.25, 0.5, 1.0, 0.125)  # four members, as Shen's four-model average


def _constant_member(value: float, name: str, width: int = 1) -> keras.Model:
    """A model whose output is `value` for every input (zero kernel, bias = value)."""
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(width, kernel_initializer="zeros",
                               bias_initializer=keras.initializers.Constant(value), name="out")
    return keras.Model(inputs, dense(inputs), name=name)


def _linear_member(seed: int, name: str) -> keras.Model:
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, activation="relu", name="hidden")(inputs)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="out")(x)
    model = keras.Model(inputs, outputs, name=name)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.weights])
    return model


def _x(n=2):
    return np.random.default_rng(0).normal(size=(n, 4)).astype("float32")


def test_average_is_exact_mean_of_member_outputs():
    members = [_constant_member(v, f"m{i}") for i, v in enumerate(BIASES)]
    ensemble = average_ensemble(members)
    assert sum(BIASES) / 4 == 0.46875  # exactly representable: the mean must come out exact
    np.testing.assert_array_equal(ensemble.predict(_x(), verbose=0), np.full((2, 1), 0.46875))
    assert ensemble.get_layer("average").__class__ is keras.layers.Average


def test_weighted_average_normalises_weights():
    members = [_constant_member(v, f"m{i}") for i, v in enumerate(BIASES)]
    ensemble = weighted_average_ensemble(members, (1.0, 2.0, 1.0, 0.0))
    expected = 0.25 * 0.25 + 0.5 * 0.5 + 0.25 * 1.0 + 0.0 * 0.125
    np.testing.assert_array_equal(ensemble.predict(_x(), verbose=0), np.full((2, 1), expected))
    layer = ensemble.get_layer("weighted_average")
    assert layer.get_config()["member_weights"] == [1.0, 2.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="one value per model"):
        weighted_average_ensemble(members, (1.0, 1.0))
    with pytest.raises(ValueError, match="not\\s+all zero"):
        WeightedAverage((0.0, 0.0))
    with pytest.raises(ValueError, match="distinct names"):
        average_ensemble([members[0], members[0]])


def test_select_weights_picks_best_triple_on_validation_data():
    # Member 0 is always wrong; members 1 and 2 are each right on half, and right everywhere
    # when averaged. The first best grid triple in product order is (0, 0.34, 0.34) -> (0, .5, .5).
    y_val = np.array([1, 1, 0, 0])
    predictions = [np.array([0.0, 0.0, 1.0, 1.0]),
                   np.array([0.9, 0.45, 0.2, 0.55]),
                   np.array([0.45, 0.9, 0.55, 0.2])]
    search = select_weights(predictions, y_val)
    assert search.weights == (0.0, 0.5, 0.5)
    assert search.accuracy == 1.0
    # The same search on 2-class probabilities with one-hot labels.
    as_softmax = [np.stack([1 - p, p], axis=1) for p in predictions]
    assert select_weights(as_softmax, np.eye(2)[y_val]).weights == (0.0, 0.5, 0.5)
    # A member right on its own, between two always-wrong ones, takes all the weight.
    right, wrong = np.array([0.9, 0.8, 0.1, 0.2]), np.array([0.1, 0.2, 0.9, 0.8])
    assert select_weights([wrong, right, wrong], y_val) == ((0.0, 1.0, 0.0), 1.0)


def test_select_weights_needs_a_weighted_blend():
    # Of the 63 grid triples only (0.34, 0.67, 0.67) / 1.68 = (0.20, 0.40, 0.40), the report's
    # M/C weights, classifies all six right (found by exhaustive search over random members).
    y_val = np.array([1, 0, 1, 0, 1, 0])
    predictions = [np.array([0.8, 0.13, 0.22, 0.7, 0.28, 0.69]),
                   np.array([0.35, 0.28, 0.75, 0.2, 0.21, 0.2]),
                   np.array([0.5, 0.79, 0.88, 0.68, 0.94, 0.42])]
    search = select_weights(predictions, y_val)
    assert search.accuracy == 1.0
    np.testing.assert_allclose(search.weights, (0.34 / 1.68, 0.67 / 1.68, 0.67 / 1.68), rtol=1e-12)
    # Without the 0.34/0.67 steps the blend is out of reach: member 1 alone (4 of 6) is best.
    assert select_weights(predictions, y_val, grid=(0.0, 1.0)) == ((0.0, 1.0, 0.0), 4 / 6)
    with pytest.raises(ValueError, match="same shape"):
        select_weights(predictions[:1], y_val)


def test_stack_freezes_members_and_trains_level1():
    keras.utils.set_random_seed(0)
    members = [_linear_member(seed, f"member{seed}") for seed in range(3)]
    before = [m.get_weights() for m in members]
    stacked = stack_ensemble(members, hidden=(4,))
    assert all(not m.trainable for m in members)
    assert [layer.name for layer in stacked.layers[-3:]] == ["level0_outputs", "level1_dense1",
                                                             "level1_predictions"]
    assert stacked.get_layer("level0_outputs").output.shape == (None, 3)
    assert {v.path.split("/")[0] for v in stacked.trainable_weights} == {"level1_dense1",
                                                                          "level1_predictions"}
    stacked.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
    x, y = _x(8), np.array([0, 1] * 4, dtype="float32")
    level1_before = stacked.get_layer("level1_dense1").get_weights()
    stacked.fit(x, y, epochs=2, verbose=0)
    for member, weights in zip(members, before):
        for now, then in zip(member.get_weights(), weights):
            np.testing.assert_array_equal(now, then)
    assert not np.array_equal(stacked.get_layer("level1_dense1").get_weights()[0], level1_before[0])
    level0 = np.concatenate([m.predict(x, verbose=0) for m in members], axis=1)
    probe = keras.Model(stacked.input, stacked.get_layer("level0_outputs").output)
    np.testing.assert_allclose(probe.predict(x, verbose=0), level0, rtol=1e-6)


def test_ensembles_round_trip_json_and_keras_safe_mode(tmp_path):
    members = [_linear_member(seed, f"member{seed}") for seed in range(3)]
    for ensemble in (weighted_average_ensemble(members, (0.34, 0.67, 0.67)),
                     stack_ensemble(members, hidden=(4,))):
        expected = ensemble.predict(_x(), verbose=0)
        from_json = keras.models.model_from_json(ensemble.to_json())
        from_json.set_weights(ensemble.get_weights())
        np.testing.assert_array_equal(from_json.predict(_x(), verbose=0), expected)
        path = tmp_path / f"{ensemble.name}.keras"
        ensemble.save(path)
        loaded = keras.models.load_model(path, safe_mode=True)
        np.testing.assert_array_equal(loaded.predict(_x(), verbose=0), expected)
