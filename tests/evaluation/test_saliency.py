"""Grad-CAM and saliency on tiny hand-weighted models whose answers are known in advance."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from PIL import Image

import pandas as pd

from mammo_keras.evaluation.saliency import feature_layers, grad_cam, grad_cam_sheet, overlay, saliency_map

# Two 16 x 16 images, each with one bright 5 x 5 square: rows, columns (half-open).
SQUARES = [((2, 7), (3, 8)), ((9, 14), (8, 13))]


def _images() -> np.ndarray:
    images = np.zeros((2, 16, 16), np.float32)
    for image, ((r0, r1), (c0, c1)) in zip(images, SQUARES):
        image[r0:r1, c0:c1] = 1.0
    return images


def _head(features) -> keras.layers.Layer:
    """GAP then a softmax whose class-1 logit grows with brightness: logits = (-4 m, 4 m)."""
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(features)
    dense = keras.layers.Dense(2, activation="softmax", name="predictions")
    outputs = dense(pooled)
    dense.set_weights([np.array([[-4.0, 4.0]], np.float32), np.zeros(2, np.float32)])
    return outputs


def _square_model() -> keras.Model:
    """3 x 3 box blur, identity 1 x 1 conv, 2 x 2 max pool (an 8 x 8 map to upsample), head."""
    inputs = keras.Input((16, 16, 1), name="image")
    x = keras.layers.Conv2D(1, 3, padding="same", use_bias=False, name="conv1",
                            kernel_initializer=keras.initializers.Constant(1 / 9))(inputs)
    x = keras.layers.Conv2D(1, 1, use_bias=False, name="conv2",
                            kernel_initializer=keras.initializers.Constant(1.0))(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    return keras.Model(inputs, _head(x), name="square")


def _left_half_model() -> keras.Model:
    """The output sees only columns 0-7: Cropping2D drops the right half before anything else."""
    inputs = keras.Input((16, 16, 1), name="image")
    x = keras.layers.Cropping2D(((0, 0), (0, 8)), name="left_half")(inputs)
    x = keras.layers.Conv2D(1, 1, use_bias=False, name="conv",
                            kernel_initializer=keras.initializers.Constant(1.0))(x)
    return keras.Model(inputs, _head(x), name="left")


def _inside(index: tuple[int, int], square) -> bool:
    (r0, r1), (c0, c1) = square
    return r0 <= index[0] < r1 and c0 <= index[1] < c1


def test_feature_layers_are_the_4d_layers_in_order():
    assert feature_layers(_square_model()) == ["conv1", "conv2", "pool"]


@pytest.mark.parametrize("layer_name", [None, "conv1", "conv2", "pool"])
def test_grad_cam_peaks_inside_the_square(layer_name):
    maps = grad_cam(_square_model(), _images(), layer_name=layer_name)
    assert maps.shape == (2, 16, 16) and maps.dtype == np.float32
    np.testing.assert_array_equal(maps.max(axis=(1, 2)), [1.0, 1.0])
    np.testing.assert_array_equal(maps.min(axis=(1, 2)), [0.0, 0.0])
    for heatmap, square in zip(maps, SQUARES):
        assert _inside(np.unravel_index(np.argmax(heatmap), heatmap.shape), square)


def test_grad_cam_default_layer_and_class():
    model, images = _square_model(), _images()
    # Default layer is the last 4-D one; both images are predicted malignant (class 1).
    np.testing.assert_array_equal(grad_cam(model, images), grad_cam(model, images, layer_name="pool",
                                                                     class_index=1))
    # At full resolution with a box blur the map is the blurred square itself: 1 in its 3 x 3 core.
    maps = grad_cam(model, images[:, :, :, None], layer_name="conv2")
    (r0, r1), (c0, c1) = SQUARES[0]
    np.testing.assert_allclose(maps[0, r0 + 1:r1 - 1, c0 + 1:c1 - 1], 1.0, rtol=1e-6)
    assert maps[0, 0, 15] == 0.0


def test_grad_cam_against_class_stays_zero():
    # Brightness lowers the benign score: every channel weight is negative, the ReLU leaves nothing.
    maps = grad_cam(_square_model(), _images(), class_index=0)
    np.testing.assert_array_equal(maps, np.zeros((2, 16, 16), np.float32))


def test_grad_cam_unknown_layer_lists_valid_ones():
    with pytest.raises(ValueError, match=r"\['conv1', 'conv2', 'pool'\]\. Received: layer_name='gap'"):
        grad_cam(_square_model(), _images(), layer_name="gap")


def test_class_index_out_of_range():
    with pytest.raises(ValueError, match="Received: class_index=2"):
        grad_cam(_square_model(), _images(), class_index=2)


def test_saliency_zero_where_the_output_cannot_look():
    maps = saliency_map(_left_half_model(), _images())
    assert maps.shape == (2, 16, 16) and maps.dtype == np.float32
    # d score / d pixel is the same for every pixel the model sees, and exactly 0 elsewhere.
    np.testing.assert_array_equal(maps[:, :, :8], np.ones((2, 16, 8), np.float32))
    np.testing.assert_array_equal(maps[:, :, 8:], np.zeros((2, 16, 8), np.float32))


def test_overlay_blends_grey_and_jet(tmp_path):
    image = np.array([[0.0, 50.0], [100.0, 200.0]])  # stretched: 0, 0.25, 0.5, 1
    heat = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)
    grey = overlay(image, heat, alpha=0.0)
    assert grey.dtype == np.uint8 and grey.shape == (2, 2, 3)
    np.testing.assert_array_equal(grey[..., 0], [[0, 64], [128, 255]])
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
    colours = overlay(image, heat, tmp_path / "overlay.png", alpha=1.0)
    np.testing.assert_array_equal(colours[0, 0], [0, 0, 128])  # jet(0): dark blue
    np.testing.assert_array_equal(colours[1, 1], [128, 0, 0])  # jet(1): dark red
    with Image.open(tmp_path / "overlay.png") as written:
        np.testing.assert_array_equal(np.asarray(written), colours)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlay.png"]


def test_overlay_resizes_heatmap_and_checks_alpha():
    image = np.arange(16.0).reshape(4, 4)
    rgb = overlay(image, np.ones((2, 2), np.float32))
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, overlay(image, np.ones((4, 4), np.float32)))
    with pytest.raises(ValueError, match="Received: alpha=1.5"):
        overlay(np.zeros((4, 4)), np.zeros((4, 4)), alpha=1.5)


def test_grad_cam_sheet_tiles_the_top_items_of_each_class(tmp_path):
    images = np.concatenate([_images(), _images()[::-1]])  # 4 images, squares in either place
    predictions = pd.DataFrame({"label": [0, 1, 0, 1], "score": [0.2, 0.9, 0.4, 0.6]})
    path = grad_cam_sheet(_square_model(), images[..., None], predictions, tmp_path / "cam.png", per_class=1)
    sheet = np.asarray(Image.open(path))
    assert sheet.shape == (16, 32, 3)  # one tile per class, side by side
    # Tile 0 is the benign item scored 0.4 (index 2, square at the bottom right): hottest inside it.
    red = sheet[:, :16, 0].astype(int) - sheet[:, :16, 2].astype(int)
    assert _inside(np.unravel_index(np.argmax(red), red.shape), SQUARES[1])
    dense_only = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Flatten(), keras.layers.Dense(1)])
    assert grad_cam_sheet(dense_only, images[..., None], predictions, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
