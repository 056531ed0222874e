"""AlexNet (BVLC Caffe reference) and the LocalResponseNormalization layer."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mammo_keras.errors import DataError
from mammo_keras.models import get
from mammo_keras.models.alexnet import LocalResponseNormalization, jain_levy_alexnet

TINY = (67, 67, 3)  # conv1 11x11/4 -> 15, pool -> 7, pool -> 3, pool5 -> 1


def _tensor(shape=(2, 3, 4, 7), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_lrn_matches_tensorflow():
    x = _tensor()
    layer = LocalResponseNormalization(depth_radius=2, bias=1.5, alpha=0.3, beta=0.75)
    expected = tf.nn.local_response_normalization(x, depth_radius=2, bias=1.5, alpha=0.3, beta=0.75)
    np.testing.assert_allclose(np.asarray(layer(x)), expected.numpy(), rtol=1e-6, atol=1e-7)


def test_lrn_from_caffe_divides_alpha_by_local_size():
    layer = LocalResponseNormalization.from_caffe(local_size=5, alpha=1e-4, beta=0.75, k=1.0)
    assert (layer.depth_radius, layer.alpha, layer.beta, layer.bias) == (2, 2e-5, 0.75, 1.0)
    # Caffe: x / (k + alpha / n * sum over the n-channel window of x^2) ** beta, written out.
    x = _tensor((1, 1, 1, 6)) * 30
    channels = x[0, 0, 0]
    expected = [c / (1.0 + 1e-4 / 5 * np.sum(channels[max(0, d - 2):d + 3] ** 2)) ** 0.75
                for d, c in enumerate(channels)]
    np.testing.assert_allclose(np.asarray(layer(x))[0, 0, 0], expected, rtol=1e-6)


def test_lrn_config_round_trip_and_validation():
    layer = LocalResponseNormalization(depth_radius=3, bias=2.0, alpha=1e-3, beta=0.5, name="lrn")
    config = layer.get_config()
    assert {k: config[k] for k in ("depth_radius", "bias", "alpha", "beta")} == {
        "depth_radius": 3, "bias": 2.0, "alpha": 1e-3, "beta": 0.5}
    assert LocalResponseNormalization.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="depth_radius"):
        LocalResponseNormalization(depth_radius=-1)
    with pytest.raises(ValueError, match="bias"):
        LocalResponseNormalization(bias=0.0)
    with pytest.raises(ValueError, match="local_size"):
        LocalResponseNormalization.from_caffe(local_size=4)


def test_lrn_model_round_trips_json_and_keras_safe_mode(tmp_path):
    inputs = keras.Input((3, 4, 7))
    outputs = LocalResponseNormalization(depth_radius=1, alpha=0.5, name="lrn")(inputs)
    model = keras.Model(inputs, outputs)
    x = _tensor()
    expected = model.predict(x, verbose=0)
    from_json = keras.models.model_from_json(model.to_json())
    np.testing.assert_array_equal(from_json.predict(x, verbose=0), expected)
    model.save(tmp_path / "lrn.keras")
    loaded = keras.models.load_model(tmp_path / "lrn.keras", safe_mode=True)
    assert isinstance(loaded.get_layer("lrn"), LocalResponseNormalization)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)


def test_alexnet_parameter_count_equals_caffe_reference():
    # BVLC bvlc_alexnet: 60,965,224 parameters (conv1..conv5 2,334,080; fc6..fc8 58,631,144).
    assert jain_levy_alexnet(num_classes=1000).count_params() == 60_965_224


def test_alexnet_layers_follow_caffe():
    model = get("jain_levy_alexnet", input_shape=TINY)
    names = [layer.name for layer in model.layers]
    assert names == ["input", "conv1", "norm1", "pool1", "conv2", "norm2", "pool2", "conv3", "conv4",
                     "conv5", "pool5", "flatten", "fc6", "drop6", "fc7", "drop7", "fc8"]
    assert model.get_layer("conv2").kernel.shape == (5, 5, 48, 256)  # 2 groups of 48 inputs
    assert model.get_layer("conv4").kernel.shape == (3, 3, 192, 384)
    assert model.get_layer("conv3").kernel.shape == (3, 3, 256, 384)
    assert model.get_layer("norm1").alpha == pytest.approx(2e-5)
    assert model.output.shape == (None, 2)
    assert model.get_layer("drop6").rate == 0.5


def test_alexnet_weights(tmp_path):
    with pytest.raises(ValueError, match="no ImageNet weights for AlexNet"):
        jain_levy_alexnet(TINY, weights="imagenet")
    keras.utils.set_random_seed(0)
    source = jain_levy_alexnet(TINY, num_classes=5, name="source")
    source.save_weights(tmp_path / "alexnet.weights.h5")
    target = jain_levy_alexnet(TINY, num_classes=2, weights=tmp_path / "alexnet.weights.h5")
    np.testing.assert_array_equal(target.get_layer("conv1").kernel.numpy(),
                                  source.get_layer("conv1").kernel.numpy())
    np.testing.assert_array_equal(target.get_layer("fc7").kernel.numpy(),
                                  source.get_layer("fc7").kernel.numpy())
    assert target.get_layer("fc8").kernel.shape == (4096, 2)  # new head kept
    same = jain_levy_alexnet(TINY, num_classes=5, weights=tmp_path / "alexnet.weights.h5")
    x = _tensor((2, *TINY))
    np.testing.assert_array_equal(same.predict(x, verbose=0), source.predict(x, verbose=0))
    with pytest.raises(DataError, match="fc6"):  # a larger input changes fc6's rows
        jain_levy_alexnet((99, 99, 3), weights=tmp_path / "alexnet.weights.h5")


def test_alexnet_pools_round_up_as_caffe_so_bvlc_weights_fit_jain_levys_224_crops():
    """Caffe's pools output ceil((n - 3) / 2) + 1 where Keras floors: at 224x224 (Jain & Levy's
    crops) Caffe's AlexNet ends at 6x6x256, as at 227, so fc6's 9,216 x 4,096 BVLC weights load."""
    from mammo_keras.models.alexnet import caffe_max_pool

    for side in (224, 227):
        model = jain_levy_alexnet((side, side, 3), num_classes=1000)
        assert model.get_layer("pool5").output.shape == (None, 6, 6, 256)
        assert model.get_layer("fc6").kernel.shape == (9216, 4096)
    assert "pool1_ceil_pad" in [layer.name for layer in jain_levy_alexnet((224, 224, 3)).layers]  # 54 -> 27, not 26
    inputs = keras.Input((27, 27, 2))
    pooled = keras.Model(inputs, caffe_max_pool(inputs, 3, 2, "pool"))
    x = np.random.default_rng(0).random((1, 27, 27, 2)).astype("float32")  # >= 0, as after ReLU
    # Caffe's windows: start 2i, the last clipped at the edge (13 outputs from 27 inputs).
    expected = np.array([[x[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(0, 1)) for j in range(13)]
                         for i in range(13)])
    np.testing.assert_array_equal(pooled.predict(x, verbose=0)[0], expected)
