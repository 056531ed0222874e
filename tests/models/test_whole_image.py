"""Shen et al. 2017 whole-image converters: cut point, top blocks per Table 2/3 row, heatmap,
freezing, serialization. Tiny patch classifiers (16x16, stride 4) keep every build fast."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from mammo_keras import models
from mammo_keras.models import whole_image as wi

IMAGE = (64, 48, 3)
PATCH = (16, 16, 3)


def tiny_patch_model(seed: int = 0) -> keras.Model:
    """A 5-class patch classifier shaped like Shen's: conv layers, `block5_pool`, GAP, softmax."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(PATCH, name="patch")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="block1_conv1")(inputs)
    x = keras.layers.BatchNormalization(name="block1_bn")(x)
    x = keras.layers.MaxPooling2D(2, name="block1_pool")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="block5_conv1")(x)
    x = keras.layers.MaxPooling2D(2, name="block5_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(5, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="tiny_patch")


def _images(shape, n=2, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, *shape)).astype("float32")


def _top_conv_names(model):
    return {layer.name for layer in model.layers
            if wi.is_top_layer(layer.name) and isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))}


def _expected_top(preset: dict) -> dict[str, int]:
    """Name -> filters/units of every weighted top layer the preset's table row describes."""
    expected = {}
    if preset["top"] == "resnet":
        for i, ((a, b, c), n) in enumerate(preset["blocks"], 1):
            expected[f"top{i}_unit1_0_conv"] = c
            for j in range(1, n + 1):
                expected.update({f"top{i}_unit{j}_1_conv": a, f"top{i}_unit{j}_2_conv": b,
                                 f"top{i}_unit{j}_3_conv": c})
    elif preset["top"] == "vgg":
        for i, (depth, k) in enumerate(preset["blocks"], 1):
            expected.update({f"top{i}_conv{j}": depth for j in range(1, k + 1)})
    else:
        fc1, fc2 = preset["fc_units"]
        expected.update({"top_fc1": fc1, "top_fc2": fc2, "top_logits": 2, "top_shortcut": 2})
    if preset["top"] != "fc":
        expected["predictions"] = 2
    return expected


@pytest.mark.parametrize("preset_name", sorted(wi.PRESETS))
def test_every_table_row_builds_with_its_exact_top_blocks(preset_name):
    preset = wi.PRESETS[preset_name]
    args = {key: value for key, value in preset.items() if key != "patch"}
    model = wi.whole_image_from_patch(tiny_patch_model(), input_shape=IMAGE, **args)
    expected = _expected_top(preset)
    assert _top_conv_names(model) == set(expected)
    for layer_name, width in expected.items():
        layer = model.get_layer(layer_name)
        assert (layer.filters if isinstance(layer, keras.layers.Conv2D) else layer.units) == width
    if preset["top"] == "resnet":
        for i in range(1, len(preset["blocks"]) + 1):
            assert model.get_layer(f"top{i}_unit1_1_conv").strides == (2, 2)
    if preset["top"] == "fc":
        pool = preset["heatmap_pool"]
        assert model.get_layer("top_heatmap_pool").pool_size == (pool, pool)
    assert ("heatmap" in [layer.name for layer in model.layers]) == bool(preset.get("heatmap"))
    scores = keras.ops.convert_to_numpy(model(_images(IMAGE), training=False))
    assert scores.shape == (2, 2)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)


def test_presets_cover_both_tables():
    assert sum(name.startswith("table2_") for name in wi.PRESETS) == 12
    assert sum(name.startswith("table3_") for name in wi.PRESETS) == 9
    assert wi.PRESETS["table2_row7"] == dict(patch="resnet50", top="vgg", blocks=[(256, 1), (128, 1)])
    assert set(wi.BEST_MODELS.values()) <= set(wi.PRESETS)


def test_cut_point_copies_patch_layers_with_weights():
    patch = tiny_patch_model()
    model = wi.whole_image_from_patch(patch, input_shape=IMAGE, top="vgg", blocks=[(8, 1)])
    names = [layer.name for layer in model.layers]
    assert names[:6] == ["image", "block1_conv1", "block1_bn", "block1_pool", "block5_conv1", "block5_pool"]
    assert "avg_pool" not in names and names.count("predictions") == 1
    assert model.get_layer("top1_conv1").input is model.get_layer("block5_pool").output
    assert model.get_layer("block5_pool").output.shape == (None, 16, 12, 16)
    copied = model.get_layer("block5_conv1")
    assert copied is not patch.get_layer("block5_conv1")
    for mine, theirs in zip(copied.get_weights(), patch.get_layer("block5_conv1").get_weights()):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("activation", ["softmax", "relu"])
def test_heatmap_is_the_patch_classifier_scanned(activation):
    patch = tiny_patch_model()
    same_size = wi.whole_image_from_patch(patch, input_shape=PATCH, top="vgg", blocks=[(4, 1)],
                                          heatmap=True, heatmap_activation=activation)
    heatmap = keras.Model(same_size.input, same_size.get_layer("heatmap").output)
    patches = _images(PATCH, n=4)
    features = keras.Model(patch.input, patch.get_layer("avg_pool").output).predict(patches, verbose=0)
    kernel, bias = patch.get_layer("predictions").get_weights()
    logits = features @ kernel + bias
    expected = patch.predict(patches, verbose=0) if activation == "softmax" else np.maximum(logits, 0)
    np.testing.assert_allclose(heatmap.predict(patches, verbose=0)[:, 0, 0, :], expected,
                               rtol=1e-5, atol=1e-6)
    assert same_size.get_layer("heatmap_window").pool_size == (4, 4)


def test_softmax_heatmap_on_a_whole_image_sums_to_one():
    model = wi.whole_image_from_patch(tiny_patch_model(), input_shape=IMAGE, heatmap=True,
                                      heatmap_activation="softmax", blocks=[((8, 8, 16), 1)])
    heatmap = keras.Model(model.input, model.get_layer("heatmap").output).predict(_images(IMAGE), verbose=0)
    assert heatmap.shape == (2, 13, 9, 5)  # 16x12 features, 4x4 patch window, stride 1
    np.testing.assert_allclose(heatmap.sum(axis=-1), 1.0, rtol=1e-5)
    assert model.get_layer("top1_unit1_1_conv").input is model.get_layer("top_heatmap_pool").output


def test_freezing_selects_patch_layers_by_name():
    model = wi.whole_image_from_patch(tiny_patch_model(), input_shape=IMAGE, heatmap=True,
                                      blocks=[((8, 8, 16), 2)], freeze_patch=True)
    weighted = {layer.name: layer.trainable for layer in model.layers if layer.weights}
    frozen = {"block1_conv1", "block1_bn", "block5_conv1", "heatmap_conv"}
    assert {name for name, trainable in weighted.items() if not trainable} == frozen
    assert {name for name, trainable in weighted.items() if trainable} == set(weighted) - frozen
    assert len(model.trainable_weights) == 7 * 2 + 7 * 2 + 2  # 7 top convs, 7 BN (gamma, beta), Dense
    changed = wi.set_patch_trainable(model, True)
    assert set(changed) == frozen | {"block1_pool", "block5_pool", "heatmap_window", "heatmap"}
    assert all(layer.trainable for layer in model.layers)


@pytest.mark.parametrize("options", [
    dict(top="resnet", heatmap=True, heatmap_activation="softmax", blocks=[((8, 8, 16), 2)]),
    dict(top="vgg", blocks=[(8, 2), (4, 1)]),
    dict(top="fc", heatmap=True, heatmap_pool=2, fc_units=(8, 4)),
])
def test_json_and_keras_round_trips_predict_identically(tmp_path, options):
    model = wi.whole_image_from_patch(tiny_patch_model(), input_shape=IMAGE, weight_decay=1e-3,
                                      **options)
    images = _images(IMAGE, n=3, seed=5)
    expected = model.predict(images, verbose=0)
    from_json = keras.models.model_from_json(model.to_json())
    from_json.set_weights(model.get_weights())
    assert [layer.name for layer in from_json.layers] == [layer.name for layer in model.layers]
    np.testing.assert_array_equal(from_json.predict(images, verbose=0), expected)
    path = tmp_path / "whole.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), expected)


@pytest.mark.parametrize("kwargs, message", [
    (dict(top="dense"), "`top` must be one of"),
    (dict(top="fc"), "needs heatmap=True"),
    (dict(top="resnet", blocks=[(512, 2)]), r"must be \(\(a, b, c\), n\)"),
    (dict(top="vgg", blocks=[((64, 64, 256), 1)]), r"must be \(depth, n\)"),
    (dict(top="fc", heatmap=True, blocks=[(8, 1)]), "`blocks` is for top="),
    (dict(heatmap_pool=2), "set heatmap=True"),
    (dict(cut_layer="block9_pool"), "`cut_layer` must name a layer"),
    (dict(heatmap=True, heatmap_window=20), "smaller than one patch window"),
    (dict(top="fc", heatmap=True, heatmap_pool=14), "smaller than the pool size"),
    (dict(input_shape=(64, 48, 1)), "3 channels"),
    (dict(top="fc", heatmap=True, heatmap_pool=2, fc_units=(0,)), "`fc_units` must list"),
])
def test_invalid_arguments_raise(kwargs, message):
    options = dict(input_shape=IMAGE) | kwargs
    with pytest.raises(ValueError, match=message) as error:
        wi.whole_image_from_patch(tiny_patch_model(), **options)
    assert "Received:" in str(error.value)


def test_preset_of_another_architecture_is_refused():
    with pytest.raises(ValueError, match="is for the resnet50 patch classifier"):
        models.get("shen_whole_vgg16", preset="table2_row3")
    with pytest.raises(ValueError, match="`preset` must be one of"):
        wi.build_preset("table4_row1")


def test_registered_builder_loads_trained_patch_and_whole_weights(tmp_path):
    keras.utils.set_random_seed(7)
    patch = models.get("shen_patch_vgg16", input_shape=(32, 32, 3))
    patch_file = tmp_path / "patch.weights.h5"
    patch.save_weights(patch_file)
    model = wi.build_preset("table3_row2", input_shape=IMAGE, patch_input_shape=(32, 32, 3),
                            patch_weights=str(patch_file))
    assert model.name == "shen_whole_vgg16"
    assert [model.get_layer(f"top{i}_conv1").filters for i in (1, 2)] == [512, 512]
    np.testing.assert_array_equal(model.get_layer("block5_conv3").get_weights()[0],
                                  patch.get_layer("block5_conv3").get_weights()[0])
    whole_file = tmp_path / "whole.weights.h5"
    model.save_weights(whole_file)
    reloaded = models.get("shen_whole_vgg16", preset="table3_row2", input_shape=IMAGE,
                          patch_input_shape=(32, 32, 3), weights=str(whole_file))
    images = _images(IMAGE, seed=9)
    np.testing.assert_array_equal(reloaded.predict(images, verbose=0), model.predict(images, verbose=0))
    with pytest.raises(ValueError, match="not both"):
        models.get("shen_whole_vgg16", weights="imagenet", patch_weights=str(patch_file))


TINY_KWARGS = {
    "shen_whole_resnet50": dict(input_shape=(64, 64, 3), patch_input_shape=(32, 32, 3)),
    "shen_whole_vgg16": dict(input_shape=(64, 64, 3), patch_input_shape=(32, 32, 3)),
    "shen_whole_resnet50_heatmap": dict(input_shape=(64, 64, 3), patch_input_shape=(32, 32, 3)),
    "shen_whole_resnet50_heatmap_fc": dict(input_shape=(64, 64, 3), patch_input_shape=(32, 32, 3),
                                           heatmap_pool=2),
    "shen_whole_vgg16_heatmap_fc": dict(input_shape=(64, 64, 3), patch_input_shape=(32, 32, 3),
                                        heatmap_pool=2),
}


def test_every_registered_whole_image_model_is_listed():
    assert set(models.list("shen_whole_*")) == set(TINY_KWARGS)
    assert all(models.entry(name).task == "whole_image" for name in TINY_KWARGS)


@pytest.mark.parametrize("name", sorted(TINY_KWARGS))
def test_registered_whole_image_models_cut_their_real_patch_classifier(name):
    model = models.get(name, **TINY_KWARGS[name])
    arch = "resnet50" if "resnet50" in name else "vgg16"
    cut = {"resnet50": "conv5_block3_out", "vgg16": "block5_pool"}[arch]
    names = {layer.name for layer in model.layers}
    assert model.name == f"shen_whole_{arch}"
    assert model.output.shape == (None, 2)
    assert {"image", cut} <= names and not {"avg_pool", "patch"} & names
    assert model.get_layer(cut).output.shape == (None, 2, 2, 2048 if arch == "resnet50" else 512)
    assert ("heatmap" in names) == ("heatmap" in name)
    first_top = "heatmap_window" if "heatmap" in name else ("top1_unit1_1_conv" if arch == "resnet50"
                                                            else "top1_conv1")
    assert model.get_layer(first_top).input is model.get_layer(cut).output


def test_paper_input_size_gives_the_paper_feature_map_sizes():
    """1152x896 -> 36x28 patch features; 224-pixel patches -> a 7x7 heatmap window (graph only)."""
    model = models.get("shen_whole_vgg16")
    assert model.input.shape == (None, 1152, 896, 3)
    assert model.get_layer("block5_pool").output.shape == (None, 36, 28, 512)
    assert model.get_layer("top1_pool").output.shape == (None, 18, 14, 256)
    assert model.get_layer("top2_pool").output.shape == (None, 9, 7, 128)
    heatmap_fc = models.get("shen_whole_vgg16_heatmap_fc")
    assert heatmap_fc.get_layer("heatmap_window").pool_size == (7, 7)
    assert heatmap_fc.get_layer("heatmap").output.shape == (None, 30, 22, 5)
    assert heatmap_fc.get_layer("top_flatten").output.shape == (None, 6 * 4 * 5)
