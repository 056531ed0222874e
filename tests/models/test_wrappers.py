"""Flip test-time augmentation: the Flip layer and the flip_tta wrapper."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from mammo_keras.models.wrappers import Flip, flip_tta

SHAPE = (4, 5, 2)


def _images(n=3, seed=0):
    # Small integers: every sum in the tests is exact in float32, so results compare exactly
    # whatever order a kernel accumulates in.
    return np.random.default_rng(seed).integers(-3, 4, size=(n, *SHAPE)).astype("float32")


def _position_model(name="position") -> keras.Model:
    """A model that sees where things are (flatten + dense, integer weights), so flips matter."""
    inputs = keras.Input(SHAPE, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    outputs = keras.layers.Dense(3, name="scores")(x)
    model = keras.Model(inputs, outputs, name=name)
    rng = np.random.default_rng(1)
    model.set_weights([rng.integers(-3, 4, size=w.shape).astype("float32") for w in model.weights])
    return model


@pytest.mark.parametrize("mode, axes", [("none", ()), ("h", (2,)), ("v", (1,)), ("hv", (1, 2))])
def test_flip_layer_matches_numpy(mode, axes):
    x = _images()
    expected = np.flip(x, axis=axes) if axes else x
    np.testing.assert_array_equal(np.asarray(Flip(mode)(x)), expected)
    assert Flip.from_config(Flip(mode, name="f").get_config()).mode == mode


def test_flip_layer_validation():
    with pytest.raises(ValueError, match="mode"):
        Flip("diagonal")
    with pytest.raises(ValueError, match="batch, height, width, channels"):
        Flip("h")(np.zeros((2, 3), "float32"))


def test_tta_of_flip_invariant_model_equals_model():
    inputs = keras.Input(SHAPE)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalMaxPooling2D()(inputs))
    model = keras.Model(inputs, outputs, name="invariant")
    x = _images()
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(flip_tta(model).predict(x, verbose=0), expected, rtol=1e-6)


def test_tta_is_mean_of_the_four_flipped_predictions():
    model = _position_model()
    x = _images()
    p = [model.predict(np.flip(x, axis=axes) if axes else x, verbose=0)
         for axes in ((), (2,), (1,), (1, 2))]
    expected = (p[0] + p[1] + p[2] + p[3]) / np.float32(4)
    tta = flip_tta(model)
    np.testing.assert_array_equal(tta.predict(x, verbose=0), expected)
    assert not np.allclose(expected, p[0])  # the flips matter for this model
    assert [layer.name for layer in tta.layers if isinstance(layer, Flip)] == [
        "flip_none", "flip_h", "flip_v", "flip_hv"]
    assert tta.name == "position_flip_tta"
    two = flip_tta(model, flips=("none", "h"))
    np.testing.assert_array_equal(two.predict(x, verbose=0), (p[0] + p[1]) / np.float32(2))


def test_tta_flips_every_input_of_a_pair_alike():
    first, second = keras.Input(SHAPE, name="baseline"), keras.Input(SHAPE, name="abnormality")
    difference = keras.layers.Subtract()([first, second])
    pair_model = keras.Model([first, second], keras.layers.Flatten()(difference), name="pair")
    a, b = _images(seed=2), _images(seed=3)
    expected = np.mean([(np.flip(a, axes) - np.flip(b, axes)).reshape(3, -1)
                        for axes in ((), (2,), (1,), (1, 2))], axis=0)
    tta = flip_tta(pair_model)
    assert [t.name for t in tta.inputs] == ["baseline", "abnormality"]
    np.testing.assert_allclose(tta.predict([a, b], verbose=0), expected, rtol=1e-6, atol=1e-6)


def test_tta_validation_and_round_trip(tmp_path):
    model = _position_model()
    with pytest.raises(ValueError, match="without repeats"):
        flip_tta(model, flips=("h", "h"))
    with pytest.raises(ValueError, match="subset"):
        flip_tta(model, flips=())
    tta = flip_tta(model)
    x = _images()
    expected = tta.predict(x, verbose=0)
    from_json = keras.models.model_from_json(tta.to_json())
    from_json.set_weights(tta.get_weights())
    np.testing.assert_array_equal(from_json.predict(x, verbose=0), expected)
    tta.save(tmp_path / "tta.keras")
    loaded = keras.models.load_model(tmp_path / "tta.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
