"""Shen et al. 2017 patch classifiers: heads, cut points, parameter counts, weights files."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from mammo_keras import models
from mammo_keras.models import shen

TINY_PATCH = (32, 32, 3)
# keras.applications include_top=False parameter counts + the 5-way Dense (2048*5+5, 512*5+5).
EXPECTED_PARAMS = {"resnet50": 23_587_712 + 10_245, "vgg16": 14_714_688 + 2_565}


@pytest.fixture(scope="module", params=["resnet50", "vgg16"])
def patch_model(request):
    keras.utils.set_random_seed(0)
    return request.param, models.get(f"shen_patch_{request.param}", input_shape=TINY_PATCH)


def _images(shape, n=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype("float32")


def test_patch_classifier_is_backbone_gap_softmax(patch_model):
    arch, model = patch_model
    cut = shen.CUT_LAYERS[arch]
    assert model.name == f"shen_patch_{arch}"
    assert [layer.name for layer in model.layers[-2:]] == ["avg_pool", "predictions"]
    assert model.get_layer("avg_pool").input is model.get_layer(cut).output
    head = model.get_layer("predictions")
    assert head.units == 5 and head.activation is keras.activations.softmax
    assert not {"flatten", "fc1", "fc2"} & {layer.name for layer in model.layers}
    assert model.count_params() == EXPECTED_PARAMS[arch]
    scores = model.predict(_images(TINY_PATCH), verbose=0)
    assert scores.shape == (3, 5)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)


def test_vgg16_patch_classifier_has_no_batch_norm():
    model = shen.shen_patch_classifier("vgg16", TINY_PATCH)
    layers = model.layers
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in layers) == 13
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in layers)


def test_weights_file_round_trip(tmp_path):
    keras.utils.set_random_seed(1)
    model = shen.shen_patch_vgg16(TINY_PATCH)
    path = tmp_path / "patch.weights.h5"
    model.save_weights(path)
    keras.utils.set_random_seed(2)
    reloaded = shen.shen_patch_vgg16(TINY_PATCH, weights=str(path))
    images = _images(TINY_PATCH)
    np.testing.assert_array_equal(model.predict(images, verbose=0), reloaded.predict(images, verbose=0))


def test_grey_input_repeats_the_channel():
    keras.utils.set_random_seed(3)
    grey = shen.shen_patch_vgg16((32, 32, 1), num_classes=3)
    rgb = shen.shen_patch_vgg16(TINY_PATCH, num_classes=3)
    assert grey.get_layer("grey_to_rgb").output.shape[-1] == 3
    rgb.set_weights(grey.get_weights())
    images = _images((32, 32, 1))
    np.testing.assert_allclose(grey.predict(images, verbose=0),
                               rgb.predict(np.repeat(images, 3, axis=-1), verbose=0), rtol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(arch="alexnet"), "`arch` must be one of"),
    (dict(arch="vgg16", weights="no/such/file.h5"), "`weights` must be None"),
    (dict(arch="vgg16", num_classes=1), "`num_classes` must be at least 2"),
])
def test_invalid_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        shen.shen_patch_classifier(input_shape=TINY_PATCH, **kwargs)
    assert "Received:" in str(error.value)


def test_registered_under_shen2017():
    names = models.list(paper="shen2017")
    assert {"shen_patch_resnet50", "shen_patch_vgg16"} <= set(names)
    assert models.entry("shen_patch_vgg16").task == "patch"
    assert shen.PATCH_CLASSES[0] == "background" and len(shen.PATCH_CLASSES) == 5
