"""GoogLeNet (Inception v1, no auxiliary heads): size, names, fine-tuning depths, weights."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from mammo_keras.models import get
from mammo_keras.models.alexnet import LocalResponseNormalization
from mammo_keras.models.googlenet import (googlenet_lr_multipliers, jain_levy_googlenet,
                                          set_googlenet_fine_tuning)

TINY = (32, 32, 3)  # 32 -> 16 -> 8 -> 4 -> 2 -> 1 through the stride-2 stages
MODULES = ["3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"]
BRANCHES = ["1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj"]
# Szegedy et al. 2015, Table 1, typed in independently of the implementation:
# (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) per module.
TABLE_1 = [(64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), (192, 96, 208, 16, 48, 64),
           (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64), (112, 144, 288, 32, 64, 64),
           (256, 160, 320, 32, 128, 128), (256, 160, 320, 32, 128, 128),
           (384, 192, 384, 48, 128, 128)]


def _reference_parameter_count(classes: int) -> int:
    """Weights + biases of Table 1's layers: conv1 7x7x3x64, conv2 1x1 64 + 3x3 192, modules, FC."""
    total = (7 * 7 * 3 * 64 + 64) + (64 * 64 + 64) + (3 * 3 * 64 * 192 + 192)
    channels = 192
    for n1, r3, n3, r5, n5, proj in TABLE_1:
        total += (channels * n1 + n1) + (channels * r3 + r3) + (9 * r3 * n3 + n3)
        total += (channels * r5 + r5) + (25 * r5 * n5 + n5) + (channels * proj + proj)
        channels = n1 + n3 + n5 + proj
    return total + channels * classes + classes


@pytest.fixture(scope="module")
def tiny_googlenet():
    return get("jain_levy_googlenet", input_shape=TINY)


def test_parameter_count_matches_table_1():
    assert _reference_parameter_count(1000) == 6_998_552
    model = jain_levy_googlenet(num_classes=1000)
    assert model.count_params() == 6_998_552
    assert model.get_layer("inception_5b_output").output.shape == (None, 7, 7, 1024)
    assert model.get_layer("pool4_3x3_s2").output.shape == (None, 7, 7, 832)


def test_caffe_names_and_structure(tiny_googlenet):
    names = {layer.name for layer in tiny_googlenet.layers}
    stem = ["conv1_7x7_s2", "pool1_3x3_s2", "pool1_norm1", "conv2_3x3_reduce", "conv2_3x3",
            "conv2_norm2", "pool2_3x3_s2", "pool3_3x3_s2", "pool4_3x3_s2", "pool5_7x7_s1",
            "pool5_drop_7x7_s1", "loss3_classifier"]
    assert set(stem) <= names
    for module in MODULES:
        assert {f"inception_{module}_{b}" for b in BRANCHES + ["pool", "output"]} <= names
    assert not any("aux" in n or n.startswith(("loss1", "loss2")) for n in names)
    for lrn in ("pool1_norm1", "conv2_norm2"):
        layer = tiny_googlenet.get_layer(lrn)
        assert isinstance(layer, LocalResponseNormalization)
        assert (layer.depth_radius, layer.alpha, layer.beta) == (2, pytest.approx(2e-5), 0.75)
    assert tiny_googlenet.get_layer("pool5_drop_7x7_s1").rate == 0.4
    assert tiny_googlenet.output.shape == (None, 2)
    assert tiny_googlenet.get_layer("inception_4e_output").output.shape[-1] == 832


def _trainable_weighted(model):
    return {layer.name for layer in model.layers if layer.weights and layer.trainable}


def test_fine_tuning_depths_select_by_name(tiny_googlenet):
    def module_convs(module):
        return {f"inception_{module}_{b}" for b in BRANCHES}

    set_googlenet_fine_tuning(tiny_googlenet, "shallow")
    assert _trainable_weighted(tiny_googlenet) == module_convs("5b") | {"loss3_classifier"}
    set_googlenet_fine_tuning(tiny_googlenet, "deeper")
    assert _trainable_weighted(tiny_googlenet) == (module_convs("5a") | module_convs("5b")
                                                   | {"loss3_classifier"})
    set_googlenet_fine_tuning(tiny_googlenet, "all")
    assert len(_trainable_weighted(tiny_googlenet)) == 3 + 9 * 6 + 1
    with pytest.raises(ValueError, match="shallow"):
        set_googlenet_fine_tuning(tiny_googlenet, "5b")
    built = jain_levy_googlenet(TINY, fine_tune="shallow")
    assert _trainable_weighted(built) == module_convs("5b") | {"loss3_classifier"}


def test_lr_multipliers_follow_the_paper(tiny_googlenet):
    rates = googlenet_lr_multipliers(tiny_googlenet, "deeper")
    assert rates["loss3_classifier"] == (10.0, 20.0)
    assert rates["inception_5a_3x3"] == (1.0, 2.0)
    assert rates["inception_4e_1x1"] == (0.1, 0.2)
    assert rates["conv1_7x7_s2"] == (0.1, 0.2)
    assert len(rates) == 3 + 9 * 6 + 1


def test_weights_imagenet_refused_and_local_file_loads_by_name(tmp_path):
    with pytest.raises(ValueError, match="no ImageNet weights for GoogLeNet.*bvlc_googlenet"):
        jain_levy_googlenet(TINY, weights="imagenet")
    keras.utils.set_random_seed(0)
    source = jain_levy_googlenet(TINY, num_classes=1000, name="imagenet_like")
    source.save_weights(tmp_path / "googlenet.weights.h5")
    target = jain_levy_googlenet(TINY, num_classes=2, weights=tmp_path / "googlenet.weights.h5")
    np.testing.assert_array_equal(target.get_layer("inception_5b_5x5").kernel.numpy(),
                                  source.get_layer("inception_5b_5x5").kernel.numpy())
    assert target.get_layer("loss3_classifier").kernel.shape == (1024, 2)


def test_round_trip_keras_safe_mode(tmp_path, tiny_googlenet):
    x = np.random.default_rng(0).normal(size=(2, *TINY)).astype("float32")
    expected = tiny_googlenet.predict(x, verbose=0)
    tiny_googlenet.save(tmp_path / "googlenet.keras")
    loaded = keras.models.load_model(tmp_path / "googlenet.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-7)
