"""LevyNet and Coccomini's scratch CNN: layer lists and exact parameter counts."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from mammo_keras.models import get
from mammo_keras.models.small_cnns import coccomini_scratch_cnn, jain_levy_levynet, output_layer


def _conv(c_in, c_out, k=3):
    return k * k * c_in * c_out + c_out


def _dense(n_in, n_out):
    return n_in * n_out + n_out


def test_levynet_layers_and_parameter_count():
    model = jain_levy_levynet()
    names = [layer.name for layer in model.layers]
    assert names == ["input",
                     "conv1", "conv1_bn", "conv1_relu", "pool1",
                     "conv2", "conv2_bn", "conv2_relu", "pool2",
                     "conv3", "conv3_bn", "conv3_relu", "pool3",
                     "flatten", "fc1", "fc2", "predictions"]
    # 224 -conv-> 222 -pool-> 111 -conv-> 109 -pool-> 54 -conv-> 52 -pool-> 26.
    assert model.get_layer("pool3").output.shape == (None, 26, 26, 64)
    expected = (_conv(3, 32) + 4 * 32 + _conv(32, 32) + 4 * 32 + _conv(32, 64) + 4 * 64
                + _dense(26 * 26 * 64, 128) + _dense(128, 64) + _dense(64, 2))
    assert expected == 5_575_458
    assert model.count_params() == expected
    assert model.get_layer("predictions").activation is keras.activations.softmax
    assert model.get_layer("fc1").kernel_initializer.__class__.__name__ == "LecunUniform"


def test_coccomini_scratch_layers_and_parameter_count():
    model = coccomini_scratch_cnn()
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs == ["block1_conv1", "block1_conv2", "block1_conv3", "block2_conv1", "block2_conv2",
                     "block3_conv1", "block3_conv2", "block4_conv1"]
    assert model.get_layer("block1_conv1").strides == (2, 2)
    assert model.get_layer("block1_pool").pool_size == (3, 3)
    # 150 -s2-> 75 -pool 3/2-> 38 -> 19 -> 10 -> 5; no conv-512 block for 150x150 inputs.
    assert model.get_layer("block4_pool").output.shape == (None, 5, 5, 256)
    expected = (_conv(1, 32) + 2 * _conv(32, 32) + _conv(32, 64) + _conv(64, 64)
                + _conv(64, 128) + _conv(128, 128) + _conv(128, 256)
                + 4 * (3 * 32 + 2 * 64 + 2 * 128 + 256)          # conv batch norms
                + _dense(5 * 5 * 256, 2048) + _dense(2048, 2048) + 2 * 4 * 2048 + _dense(2048, 1))
    assert expected == 17_917_825
    assert model.count_params() == expected
    assert model.output.shape == (None, 1)
    assert model.get_layer("predictions").activation is keras.activations.sigmoid
    assert [model.get_layer(n).rate for n in ("block1_dropout", "flatten_dropout", "fc2_dropout")] == [
        0.1, 0.5, 0.5]


def test_coccomini_m2_adds_l1_l2_penalties():
    small = (32, 32, 1)
    assert len(coccomini_scratch_cnn(small, variant="M1").losses) == 0
    m2 = coccomini_scratch_cnn(small, variant="M2")
    reg = m2.get_layer("block2_conv1").kernel_regularizer
    assert (reg.l1, reg.l2) == (pytest.approx(1e-5), pytest.approx(1e-4))
    assert len(m2.losses) == 8 + 3  # every conv and dense kernel
    with pytest.raises(ValueError, match="M1"):
        coccomini_scratch_cnn(small, variant="M3")


def test_output_layer_and_weights_checks(tmp_path):
    assert output_layer(1).activation is keras.activations.sigmoid
    assert output_layer(3).units == 3
    with pytest.raises(ValueError, match="num_classes"):
        output_layer(0)
    with pytest.raises(ValueError, match="trained from scratch"):
        get("jain_levy_levynet", input_shape=(32, 32, 3), weights="imagenet")
    keras.utils.set_random_seed(0)
    model = get("coccomini_scratch_cnn", input_shape=(32, 32, 1))
    model.save_weights(tmp_path / "scratch.weights.h5")
    again = get("coccomini_scratch_cnn", input_shape=(32, 32, 1), weights=tmp_path / "scratch.weights.h5")
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 1)).astype("float32")
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))
