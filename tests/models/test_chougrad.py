"""Chougrad 2018 networks: head layout, grey/scaling layers, Table 1 layer counts per strategy."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from mammo_keras import models
from mammo_keras.models import backbones as bb
from mammo_keras.models.chougrad import PAPER_TABLE1, fine_tuned_layer_counts
from mammo_keras.models.layers import GreyToRGB, ImageNetScaling

TINY = {"vgg16": (32, 32, 1), "resnet50": (32, 32, 1), "inceptionv3": (75, 75, 1)}
# Ours: trainable Conv2D layers, and layers of the opened blocks counted as Table 1 does.
OURS = {
    "vgg16": {"1FT": {"conv": 3, "layers": 4}, "2FT": {"conv": 6, "layers": 8},
              "3FT": {"conv": 9, "layers": 12}},
    "resnet50": {"1FT": {"conv": 3, "layers": 10}, "2FT": {"conv": 6, "layers": 20},
                 "3FT": {"conv": 10, "layers": 32}},
    "inceptionv3": {"1FT": {"conv": 9, "layers": 22}, "2FT": {"conv": 18, "layers": 44},
                    "3FT": {"conv": 24, "layers": 58}},
}
# Paper minus ours (Table 1 counting): VGG16 exact; ResNet50 +2 throughout (Keras-1 avg_pool
# + one unexplained); InceptionV3 1FT +3 unexplained, 2FT and 3FT exact.
PAPER_MINUS_OURS = {"vgg16": (0, 0, 0), "resnet50": (2, 2, 2), "inceptionv3": (3, 0, 0)}


@pytest.fixture(scope="module")
def built():
    keras.utils.set_random_seed(0)
    return {family: models.get(f"chougrad_{family}", input_shape=shape)
            for family, shape in TINY.items()}


@pytest.mark.parametrize("family", bb.FAMILIES)
def test_table1_counts_next_to_the_paper(built, family):
    model = built[family]
    counts = fine_tuned_layer_counts(model)
    assert counts == OURS[family]
    differences = tuple(PAPER_TABLE1[family][s] - counts[s]["layers"] for s in ("1FT", "2FT", "3FT"))
    assert differences == PAPER_MINUS_OURS[family]
    for strategy in ("1FT", "2FT", "3FT"):
        bb.set_fine_tuning(model, strategy)
        assert bb.trainable_conv_layers(model) == counts[strategy]["conv"]
    bb.set_fine_tuning(model, "2FT")


@pytest.mark.parametrize("family", bb.FAMILIES)
def test_head_is_five_layers_with_dropout_l2_and_softmax(built, family):
    model = built[family]
    names = ["head_pool", "head_dense1", "head_dropout", "head_dense2", "predictions"]
    assert [layer.name for layer in model.layers[-5:]] == names
    pool = keras.layers.GlobalAveragePooling2D if family == "resnet50" else keras.layers.Flatten
    assert isinstance(model.get_layer("head_pool"), pool)
    assert [model.get_layer(n).units for n in ("head_dense1", "head_dense2", "predictions")] == [256, 128, 2]
    assert model.get_layer("head_dropout").rate == 0.5
    assert model.get_layer("predictions").activation is keras.activations.softmax
    for name in ("head_dense1", "head_dense2", "predictions"):
        assert model.get_layer(name).kernel_regularizer.l2 == pytest.approx(0.1)
        assert model.get_layer(name).trainable
    kernel = model.get_layer("predictions").kernel
    penalty = 0.1 * float(np.sum(keras.ops.convert_to_numpy(kernel) ** 2))
    assert any(float(loss) == pytest.approx(penalty, rel=1e-5) for loss in model.losses)
    assert model.output_shape == (None, 2)


def test_grey_input_gets_a_named_grey_to_rgb_layer(built):
    model = built["vgg16"]
    assert isinstance(model.get_layer("grey_to_rgb"), GreyToRGB)
    assert model.get_layer("block1_conv1").input.shape == (None, 32, 32, 3)
    rgb = models.get("chougrad_vgg16", input_shape=(32, 32, 3), head_units=(4,))
    assert not any(isinstance(layer, GreyToRGB) for layer in rgb.layers)


def test_grey_to_rgb_repeats_the_channel():
    grey = np.arange(6, dtype="float32").reshape(1, 2, 3, 1)
    rgb = keras.ops.convert_to_numpy(GreyToRGB()(grey))
    np.testing.assert_array_equal(rgb, np.repeat(grey, 3, axis=-1))
    with pytest.raises(ValueError, match=r"single grey channel.*Received: input_shape=\(1, 2, 3, 3\)"):
        GreyToRGB()(rgb)


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
def test_imagenet_scaling_equals_keras_preprocess_input(mode):
    image = np.array([[[[0.0, 127.5, 255.0], [10.0, 20.0, 30.0]]]], "float32")
    expected = keras.applications.imagenet_utils.preprocess_input(image.copy(), mode=mode)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ImageNetScaling(mode)(image)), expected, atol=1e-5)


def test_imagenet_input_scaling_follows_the_family():
    model = models.get("chougrad_inceptionv3", input_shape=(75, 75, 1), head_units=(4,),
                       input_scaling="imagenet")
    assert model.get_layer("imagenet_scaling").mode == "tf"
    assert model.get_layer("imagenet_scaling").get_config()["mode"] == "tf"


def test_2ft_freezes_everything_below_the_last_two_blocks(built):
    model = built["vgg16"]
    trainable = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    assert trainable == {"block4_conv1", "block4_conv2", "block4_conv3", "block5_conv1",
                         "block5_conv2", "block5_conv3", "head_dense1", "head_dense2", "predictions"}


def test_random_init_refuses_pretrained_weights():
    with pytest.raises(ValueError, match=r'fine_tune="random".*Received: weights=\'imagenet\''):
        models.get("chougrad_vgg16", input_shape=(32, 32, 3), weights="imagenet", fine_tune="random")


def test_random_init_names_the_gaussian_that_drew_the_kernels():
    """The plan's `kernel_init` and the saved JSON read the layers' initialisers: after the N(0, 0.05)
    draw they name it, not the builder's GlorotUniform (what plan format 2 printed)."""
    from mammo_keras.plan import _kernel_initializers

    model = models.get("chougrad_vgg16", input_shape=(32, 32, 1), fine_tune="random")
    kernels = [layer for layer in model.layers if getattr(layer, "kernel", None) is not None]
    assert _kernel_initializers(model) == {"RandomNormal": len(kernels)} and len(kernels) == 16
    for layer in kernels:
        assert layer.get_config()["kernel_initializer"]["config"]["stddev"] == 0.05
        assert layer.get_config()["bias_initializer"]["class_name"] == "Zeros"
        assert abs(float(np.std(keras.ops.convert_to_numpy(layer.kernel))) - 0.05) < 0.005
    assert _kernel_initializers(models.get("chougrad_vgg16", input_shape=(32, 32, 1), fine_tune="0FT",
                                           weights=None)) == {"GlorotUniform": 16}


def test_a_cut_backbone_feeds_the_head_from_the_named_layer_and_stays_frozen():
    from mammo_keras.training.feature_cache import frozen_cut

    model = models.get("chougrad_vgg16", input_shape=(32, 32, 1), fine_tune="0FT", feature_layer="block4_pool")
    names = [layer.name for layer in model.layers]
    assert "block4_pool" in names and not any(name.startswith("block5_") for name in names)
    assert model.get_layer("head_pool").input.shape[1:] == (2, 2, 512)  # 32 px / 16: block4's output
    trainable = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    assert trainable == {"head_dense1", "head_dense2", "predictions"}
    assert frozen_cut(model) == "head_pool"  # the frozen backbone runs once per fold (feature cache)
    with pytest.raises(ValueError, match=r'only its frozen use fine_tune="0FT".*fine_tune=\'2FT\''):
        models.get("chougrad_vgg16", input_shape=(32, 32, 1), fine_tune="2FT", feature_layer="block4_pool")
    with pytest.raises(ValueError, match=r"'block6_pool' is not a layer of the vgg16 backbone.*block5_pool"):
        models.get("chougrad_vgg16", input_shape=(32, 32, 1), fine_tune="0FT", feature_layer="block6_pool")


def test_head_pooling_replaces_the_papers_flatten_and_the_plan_names_it():
    from mammo_keras.plan import model_summary
    from mammo_keras.training.feature_cache import frozen_cut

    paper = models.get("chougrad_vgg16", input_shape=(64, 64, 1), fine_tune="0FT")
    pooled = models.get("chougrad_vgg16", input_shape=(64, 64, 1), fine_tune="0FT", head_pooling="avg")
    assert model_summary(paper)["head_input"] == "Flatten"
    assert model_summary(pooled)["head_input"] == "GlobalAveragePooling2D"
    assert pooled.get_layer("head_dense1").kernel.shape == (512, 256)  # 512 channel means, not 2 x 2 x 512
    assert paper.get_layer("head_dense1").kernel.shape == (2048, 256)
    assert frozen_cut(pooled) == "head_pool"  # still cached per fold: the pooling is frozen too
    resnet = models.get("chougrad_resnet50", input_shape=(64, 64, 1), fine_tune="0FT")
    assert model_summary(resnet)["head_input"] == "GlobalAveragePooling2D"  # the paper's own for ResNet50
    with pytest.raises(ValueError, match=r"`head_pooling` must be None or one of \('flatten', 'avg', 'max'\). Received: head_pooling='mean'"):
        models.get("chougrad_vgg16", input_shape=(64, 64, 1), fine_tune="0FT", head_pooling="mean")


def test_builders_are_registered_for_the_paper():
    assert models.list("chougrad_*") == ["chougrad_inceptionv3", "chougrad_resnet50", "chougrad_vgg16"]
    assert {models.entry(name).paper for name in models.list("chougrad_*")} == {"chougrad2018"}
