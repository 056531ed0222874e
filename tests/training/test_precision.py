"""Mixed precision: policy by device, scoped global state, float32 outputs, parity with float32."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from mammo_keras.training.precision import policy_name, precision_scope, prediction_parity, with_float32_output


def small_net():
    inputs = keras.Input((16, 16, 1), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="block1_conv1")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs)


def test_policy_names_and_errors():
    assert policy_name("float32") == "float32"
    assert policy_name("mixed") in ("mixed_float16", "mixed_bfloat16")
    assert policy_name("mixed_bfloat16") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="Received: precision='half'"):
        policy_name("half")


def test_scope_restores_the_global_policy_even_on_error():
    before = keras.config.dtype_policy().name
    with pytest.raises(RuntimeError):
        with precision_scope("mixed_bfloat16") as name:
            assert name == keras.config.dtype_policy().name == "mixed_bfloat16"
            raise RuntimeError("boom")
    assert keras.config.dtype_policy().name == before


def test_mixed_model_gives_float32_probabilities_close_to_float32():
    keras.utils.set_random_seed(0)
    reference = small_net()
    with precision_scope("mixed_bfloat16"):
        mixed = small_net()
    assert mixed.get_layer("block1_conv1").compute_dtype == "bfloat16"
    assert mixed.get_layer("block1_conv1").kernel.dtype == "float32"  # variables stay float32
    mixed.set_weights(reference.get_weights())
    converted = with_float32_output(mixed)
    assert with_float32_output(reference) is reference
    assert converted.get_layer("predictions").compute_dtype == "float32"
    assert converted.get_layer("block1_conv1").compute_dtype == "bfloat16"
    images = np.random.default_rng(0).normal(size=(16, 16, 16, 1)).astype(np.float32)
    probabilities = converted.predict(images, verbose=0)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-6)  # a float32 softmax
    parity = prediction_parity(reference, converted, images)
    assert parity["max_abs_diff"] < 0.02 and parity["same_class"] >= 0.9, parity
