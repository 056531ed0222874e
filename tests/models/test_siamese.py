"""Baseline-patch siamese network and Coccomini's pretrained classifiers / approaches A and B."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from mammo_keras.models import get
from mammo_keras.models.coccomini import add_mc_prediction
from mammo_keras.models.layers import GreyToRGB
from mammo_keras.models.siamese import coccomini_siamese

PATCH = (16, 16, 1)
SMALL = (32, 32, 1)  # the smallest input of the VGG16/ResNet50 backbones


def _patches(n=3, seed=0, shape=PATCH):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype("float32")


@pytest.fixture(scope="module")
def scratch_siamese():
    keras.utils.set_random_seed(0)
    return coccomini_siamese(PATCH)


def test_difference_is_signed_and_zero_for_identical_inputs(scratch_siamese):
    model = scratch_siamese
    probe = keras.Model(model.inputs, [model.get_layer("difference").output,
                                       model.get_layer("features").output, model.output])
    a, b = _patches(seed=1), _patches(seed=2)
    diff_ab, features_ab, _ = probe.predict([a, b], verbose=0)
    diff_ba, _, _ = probe.predict([b, a], verbose=0)
    np.testing.assert_array_equal(diff_ba, -diff_ab)
    np.testing.assert_allclose(features_ab, diff_ab / 65535.0, rtol=1e-6)
    encoder = model.get_layer("encoder")
    np.testing.assert_allclose(diff_ab, encoder.predict(a, verbose=0) - encoder.predict(b, verbose=0),
                               rtol=1e-5, atol=1e-5)
    zero_a, _, score_a = probe.predict([a, a], verbose=0)
    _, _, score_b = probe.predict([b, b], verbose=0)
    assert not zero_a.any()
    np.testing.assert_array_equal(score_a, score_b)  # identical pairs carry no information


def test_one_shared_encoder_and_head(scratch_siamese):
    model = scratch_siamese
    assert [t.shape for t in model.inputs] == [(None, *PATCH), (None, *PATCH)]
    assert [layer.name for layer in model.layers] == ["baseline", "abnormality", "encoder",
                                                     "difference", "features", "head_dense",
                                                     "predictions"]
    convs = [l.name for l in model.get_layer("encoder").layers if isinstance(l, keras.layers.Conv2D)]
    assert convs == [f"block{b}_conv{i}" for b in (1, 2) for i in (1, 2, 3)]
    assert model.get_layer("head_dense").units == 256
    assert model.output.shape == (None, 1)


def test_pretrained_encoder_fine_tunes_last_block():
    model = coccomini_siamese(SMALL, encoder="vgg16", fine_tune="last_block")
    encoder = model.get_layer("encoder")
    assert isinstance(encoder.get_layer("grey_to_rgb"), GreyToRGB)
    trainable = {l.name for l in encoder.layers if l.weights and l.trainable}
    assert trainable == {"block5_conv1", "block5_conv2", "block5_conv3"}
    with pytest.raises(ValueError, match="scratch encoder"):
        coccomini_siamese(PATCH, fine_tune="last_block")
    with pytest.raises(ValueError, match="fine_tune"):
        coccomini_siamese(SMALL, encoder="vgg16", fine_tune="block5")


def test_siamese_round_trips_keras_safe_mode(tmp_path, scratch_siamese):
    pair = [_patches(seed=3), _patches(seed=4)]
    expected = scratch_siamese.predict(pair, verbose=0)
    scratch_siamese.save(tmp_path / "siamese.keras")
    loaded = keras.models.load_model(tmp_path / "siamese.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(pair, verbose=0), expected)


@pytest.mark.parametrize("family, last_block", [
    ("vgg16", {"block5_conv1", "block5_conv2", "block5_conv3"}),
    ("resnet50", {"conv5_block3_1_conv", "conv5_block3_1_bn", "conv5_block3_2_conv",
                  "conv5_block3_2_bn", "conv5_block3_3_conv", "conv5_block3_3_bn"}),
])
def test_pretrained_classifier_head_and_fine_tuning(family, last_block):
    model = get(f"coccomini_{family}", input_shape=SMALL)
    names = [layer.name for layer in model.layers]
    assert names[:3] == ["input", "grey_to_rgb", "imagenet_scaling"]
    assert names[-3:] == ["features", "head_dense", "predictions"]
    assert isinstance(model.get_layer("features"), keras.layers.Flatten)
    assert model.get_layer("head_dense").units == 256
    assert model.get_layer("predictions").activation is keras.activations.sigmoid
    head = {"head_dense", "predictions"}
    assert {l.name for l in model.layers if l.weights and l.trainable} == head
    tuned = get(f"coccomini_{family}", input_shape=SMALL, fine_tune="last_block")
    assert {l.name for l in tuned.layers if l.weights and l.trainable} == head | last_block


def test_approach_a_concatenates_mc_prediction_with_siamese_features():
    keras.utils.set_random_seed(0)
    bm = coccomini_siamese(PATCH, name="bm_siamese")
    model = add_mc_prediction(bm)
    assert [t.shape for t in model.inputs] == [(None, *PATCH), (None, *PATCH), (None, 1)]
    assert model.inputs[2].name == "mc_prediction"
    extractor = model.get_layer("bm_siamese_features")
    assert not extractor.trainable
    concat = model.get_layer("features_and_mc")
    width = bm.get_layer("features").output.shape[-1]
    assert concat.output.shape == (None, width + 1)
    pair = [_patches(seed=5), _patches(seed=6)]
    features = keras.Model(bm.inputs, bm.get_layer("features").output).predict(pair, verbose=0)
    mc = np.array([[1.0], [0.0], [1.0]], dtype="float32")
    probe = keras.Model(model.inputs, concat.output)
    np.testing.assert_array_equal(probe.predict([*pair, mc], verbose=0),
                                  np.concatenate([features, mc], axis=1))
    registered = get("coccomini_approach_a", input_shape=SMALL)
    assert [t.shape for t in registered.inputs] == [(None, *SMALL), (None, *SMALL), (None, 1)]


def test_approach_b_uses_single_patch_features():
    model = get("coccomini_approach_b", input_shape=SMALL)
    assert [t.shape for t in model.inputs] == [(None, *SMALL), (None, 1)]
    extractor = model.get_layer("coccomini_resnet50_features")
    assert extractor.output.shape == (None, 2048)  # 1x1x2048 flattened at 32x32
    assert model.get_layer("features_and_mc").output.shape == (None, 2049)
    assert {l.name for l in model.layers if l.weights and l.trainable} == {"head_dense", "predictions"}
    with pytest.raises(ValueError, match="'features'"):
        add_mc_prediction(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]))
