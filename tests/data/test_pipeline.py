"""Tests for the in-graph ImageDataGenerator-equivalent augmentation and make_dataset."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from mammo_keras.data.pipeline import (
    FILL_MODES, PARAM_KEYS, PRESETS, AugmentConfig, affine_matrices, apply_transform, make_dataset, preset,
    random_augment, sample_transform, transform_vectors,
)

SIZE = 32


def smooth_image(height: int = SIZE, width: int = SIZE) -> np.ndarray:
    """A 3-channel image in [0, 1]: two gradients and a channel with two Gaussian blobs."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    blobs = (0.5 + 0.45 * np.exp(-((xx - 10) ** 2 + (yy - 20) ** 2) / 30.0)
             - 0.3 * np.exp(-((xx - 22) ** 2 + (yy - 8) ** 2) / 20.0))
    return np.stack([xx / (width - 1), yy / (height - 1), blobs], axis=-1).astype(np.float32)


def identity_params(batch: int, **overrides) -> dict[str, tf.Tensor]:
    values = {"theta": 0.0, "tx": 0.0, "ty": 0.0, "shear": 0.0, "zx": 1.0, "zy": 1.0,
              "flip_horizontal": False, "flip_vertical": False, "channel_shift_intensity": 0.0}
    values.update(overrides)
    return {key: tf.constant(np.broadcast_to(value, [batch])) for key, value in values.items()}


# ---------------------------------------------------------------- options and presets

@pytest.mark.parametrize("options, field", [
    ({"fill_mode": "mirror"}, "fill_mode"),
    ({"shear_range": 28.6}, "shear_range"),
    ({"rotation_range": -5}, "rotation_range"),
    ({"width_shift_range": float("nan")}, "width_shift_range"),
    ({"zoom_range": (1.2, 0.8)}, "zoom_range"),
    ({"zoom_range": (0.5, 1.0, 1.5)}, "zoom_range"),
    ({"zoom_range": 1.0}, "zoom_range"),
    ({"horizontal_flip": "yes"}, "horizontal_flip"),
    ({"interpolation_order": 3}, "interpolation_order"),
    ({"channel_shift_range": "20"}, "channel_shift_range"),
])
def test_invalid_options_name_the_rule_and_the_value(options, field):
    with pytest.raises(ValueError, match=rf"`{field}`.*Received: {field}="):
        AugmentConfig(**options)


def test_zoom_float_becomes_keras_interval_and_config_is_frozen():
    config = AugmentConfig(zoom_range=0.2)
    assert config.zoom_range == pytest.approx((0.8, 1.2))
    assert AugmentConfig(zoom_range=[0.5, 1.5]).zoom_range == (0.5, 1.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.rotation_range = 10.0


def test_presets_hold_the_papers_values():
    chougrad = preset("chougrad2018")
    assert (chougrad.width_shift_range, chougrad.height_shift_range) == (0.25, 0.25)
    assert chougrad.rotation_range == 40.0 and chougrad.interpolation_order == 0
    assert (chougrad.shear_range, chougrad.zoom_range, chougrad.fill_mode) == (0.5, (0.5, 1.5), "nearest")
    assert chougrad.horizontal_flip and not chougrad.vertical_flip
    shen = preset("shen2017")
    assert (shen.rotation_range, shen.shear_range, shen.zoom_range, shen.channel_shift_range) == (
        25.0, 0.2, (0.8, 1.2), 20.0)
    assert shen.horizontal_flip and shen.vertical_flip and shen.width_shift_range == 0.0
    assert PRESETS["cocc_pretrained"] == AugmentConfig(rotation_range=360.0, horizontal_flip=True,
                                                       vertical_flip=True)
    scratch = preset("cocc_scratch")
    assert (scratch.width_shift_range, scratch.height_shift_range, scratch.zoom_range) == (
        0.1, 0.1, pytest.approx((0.9, 1.1)))
    assert scratch.shear_range == pytest.approx(0.01 * math.pi / 180)
    with pytest.raises(ValueError, match=r"Valid names: \['chougrad2018', .*Received: name='keras'"):
        preset("keras")


# ---------------------------------------------------------------- sampling

def test_sample_transform_keys_ranges_and_determinism():
    config = dataclasses.replace(preset("chougrad2018"), vertical_flip=True, channel_shift_range=20.0)
    params = {k: v.numpy() for k, v in sample_transform(config, tf.constant([3, 4]), 256, 40, 20).items()}
    assert tuple(params) == PARAM_KEYS
    assert all(value.shape == (256,) for value in params.values())
    assert np.abs(params["theta"]).max() <= 40.0 and np.abs(params["theta"]).max() > 35.0
    assert np.abs(params["tx"]).max() <= 0.25 * 20 and np.abs(params["tx"]).max() > 4.0
    assert np.abs(params["ty"]).max() <= 0.25 * 40 and np.abs(params["ty"]).max() > 8.0
    assert np.abs(params["shear"]).max() <= 0.5
    for key in ("zx", "zy"):
        assert 0.5 <= params[key].min() and params[key].max() <= 1.5
    assert not np.array_equal(params["zx"], params["zy"])
    assert 0.35 < params["flip_horizontal"].mean() < 0.65 and params["flip_vertical"].dtype == bool
    assert np.abs(params["channel_shift_intensity"]).max() <= 20.0

    again = sample_transform(config, tf.constant([3, 4]), 256, 40, 20)
    other = sample_transform(config, tf.constant([3, 5]), 256, 40, 20)
    assert all(np.array_equal(params[k], again[k].numpy()) for k in PARAM_KEYS)
    assert not np.array_equal(params["theta"], other["theta"].numpy())


def test_disabled_options_sample_the_identity_and_integer_shifts_are_whole_pixels():
    params = sample_transform(AugmentConfig(width_shift_range=3), tf.constant([0, 1]), 200, 16, 16)
    assert set(np.unique(params["tx"].numpy())) == {-2.0, -1.0, 0.0, 1.0, 2.0}
    identity = {k: v.numpy() for k, v in identity_params(200).items()}
    for key in PARAM_KEYS:
        if key != "tx":
            np.testing.assert_array_equal(params[key].numpy(), identity[key], err_msg=key)


# ---------------------------------------------------------------- parity with ImageDataGenerator

def keras_generator(config: AugmentConfig):
    """Keras' own ImageDataGenerator (Keras 3 ships the legacy one)."""
    legacy = pytest.importorskip("keras.src.legacy.preprocessing.image")
    return legacy.ImageDataGenerator(fill_mode=config.fill_mode, cval=config.cval,
                                     interpolation_order=config.interpolation_order)


@pytest.mark.parametrize("fill_mode, order, mean_tolerance", [
    ("nearest", 1, 1e-5), ("reflect", 1, 1e-5), ("constant", 1, 0.025), ("wrap", 1, 0.025),
    ("nearest", 0, 1e-5), ("constant", 0, 0.025),
])
def test_matches_keras_image_data_generator(fill_mode, order, mean_tolerance):
    """Same parameters through both (shear converted radians -> degrees for modern Keras).

    Tolerance (pixel values in [0, 1]): max abs diff < 1e-5 wherever the sampled point lies at
    least one pixel inside the input; mean abs diff over the whole image < 1e-5 for "nearest"
    and "reflect", < 0.025 for "constant" (scipy vs TF seam at the fill border) and "wrap"
    (scipy's period n-1 vs TF's n in the filled region).
    """
    config = AugmentConfig(rotation_range=40.0, width_shift_range=0.2, height_shift_range=0.2,
                           shear_range=0.5, zoom_range=(0.5, 1.5), fill_mode=fill_mode, cval=0.25,
                           interpolation_order=order)
    image, batch = smooth_image(), 6
    params = sample_transform(config, tf.constant([7, 11]), batch, SIZE, SIZE)
    ours = apply_transform(np.repeat(image[None], batch, axis=0), params, config).numpy()
    matrices = affine_matrices(params, SIZE, SIZE).numpy()
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    points = np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
    generator = keras_generator(config)
    for i in range(batch):
        keras_params = {key: float(params[key][i]) for key in ("theta", "tx", "ty", "zx", "zy")}
        keras_params["shear"] = math.degrees(float(params["shear"][i]))
        expected = generator.apply_transform(image, keras_params)
        source_x, source_y = (matrices[i] @ points)[:2]
        inside = ((source_x >= 1) & (source_x <= SIZE - 2) & (source_y >= 1)
                  & (source_y <= SIZE - 2)).reshape(SIZE, SIZE)
        assert inside.sum() > 100
        difference = np.abs(ours[i] - expected)
        assert difference[inside].max() < 1e-5
        assert difference.mean() < mean_tolerance


def test_whole_pixel_translation_is_exact_and_matches_keras():
    image = smooth_image()
    config = AugmentConfig(width_shift_range=0.2, height_shift_range=0.2, fill_mode="constant", cval=-1.0)
    shifted = apply_transform(image[None], identity_params(1, tx=3.0, ty=-2.0), config).numpy()[0]
    expected = np.full_like(image, -1.0)
    expected[2:, :SIZE - 3] = image[:SIZE - 2, 3:]
    np.testing.assert_array_equal(shifted, expected)
    keras_result = keras_generator(config).apply_transform(image, {"tx": 3.0, "ty": -2.0})
    np.testing.assert_array_equal(shifted, keras_result)

    nearest = dataclasses.replace(config, fill_mode="nearest")
    shifted = apply_transform(image[None], identity_params(1, tx=-1.0), nearest).numpy()[0]
    np.testing.assert_array_equal(shifted, np.concatenate([image[:, :1], image[:, :-1]], axis=1))


def test_rotation_turns_about_the_centre_of_a_non_square_image():
    image = smooth_image(5, 8)
    config = AugmentConfig(rotation_range=180.0)
    rotated = apply_transform(image[None], identity_params(1, theta=180.0), config).numpy()[0]
    np.testing.assert_allclose(rotated, image[::-1, ::-1], atol=1e-5)


# ---------------------------------------------------------------- flips, channel shift, dtypes

def test_flips_are_exact():
    image = smooth_image()
    batch = np.stack([image] * 4)
    config = AugmentConfig(horizontal_flip=True, vertical_flip=True)
    params = identity_params(4)
    params["flip_horizontal"] = tf.constant([True, False, True, False])
    params["flip_vertical"] = tf.constant([False, True, True, False])
    out = apply_transform(batch, params, config).numpy()
    for result, expected in zip(out, [image[:, ::-1], image[::-1], image[::-1, ::-1], image]):
        np.testing.assert_array_equal(result, expected)


def test_sampled_flips_give_only_the_four_mirror_images():
    image = smooth_image()
    config = AugmentConfig(horizontal_flip=True, vertical_flip=True)
    out = random_augment(np.stack([image] * 32), config, tf.constant([1, 2])).numpy()
    mirrors = [image, image[:, ::-1], image[::-1], image[::-1, ::-1]]
    seen = {next(k for k, m in enumerate(mirrors) if np.array_equal(result, m)) for result in out}
    assert seen == {0, 1, 2, 3}


def test_channel_shift_adds_one_value_clipped_to_the_image_range():
    image = smooth_image()
    config = AugmentConfig(channel_shift_range=0.5)
    out = apply_transform(image[None], identity_params(1, channel_shift_intensity=0.3), config).numpy()[0]
    np.testing.assert_allclose(out, np.clip(image + 0.3, image.min(), image.max()), atol=1e-7)
    sampled = sample_transform(config, tf.constant([5, 5]), 500, SIZE, SIZE)
    sampled = sampled["channel_shift_intensity"].numpy()
    assert -0.5 <= sampled.min() < -0.45 and 0.45 < sampled.max() <= 0.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shape_and_dtype_are_preserved(dtype):
    config = preset("shen2017")
    batch = np.stack([smooth_image(12, 20)] * 3).astype(dtype)
    out = random_augment(batch, config, tf.constant([0, 0]))
    assert out.shape == (3, 12, 20, 3) and out.dtype == dtype
    single = apply_transform(batch[0], {k: v[0] for k, v in identity_params(1).items()}, config)
    assert single.shape == (12, 20, 3)
    np.testing.assert_array_equal(single.numpy(), batch[0])


def test_same_result_inside_tf_function_and_dataset_map():
    config = preset("cocc_scratch")
    batch = np.stack([smooth_image()] * 4)
    seed = tf.constant([9, 9], tf.int64)
    eager = random_augment(batch, config, seed).numpy()
    graph = tf.function(lambda x, s: random_augment(x, config, s))(batch, seed).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors((batch, seed)).map(
        lambda x, s: random_augment(x, config, s)))).numpy()
    np.testing.assert_allclose(graph, eager, atol=1e-6)
    np.testing.assert_allclose(mapped, eager, atol=1e-6)
    assert not np.allclose(eager[0], eager[1])


# ---------------------------------------------------------------- make_dataset

def tiny_arrays(n: int = 10):
    images = np.arange(n * 4 * 4 * 1, dtype=np.float32).reshape(n, 4, 4, 1)
    return images, np.arange(n)


def epochs(dataset: tf.data.Dataset, count: int = 2) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    return [[(x.numpy(), y.numpy()) for x, y in dataset] for _ in range(count)]


def test_dataset_without_augmentation_returns_the_inputs_in_order():
    images, labels = tiny_arrays()
    batches = list(make_dataset(images, labels, batch_size=4, augment=None, shuffle=False, seed=0))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), images)
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), labels)
    dropped = make_dataset(images, None, batch_size=4, augment=None, shuffle=False, seed=0,
                           drop_remainder=True, cache=True)
    assert [x.shape[0] for x in dropped] == [4, 4]


def test_dataset_is_reproducible_from_the_seed_and_changes_each_epoch():
    images, labels = tiny_arrays()
    config = AugmentConfig(rotation_range=30.0, horizontal_flip=True)
    def build(seed: int) -> tf.data.Dataset:
        return make_dataset(images, labels, batch_size=4, augment=config, shuffle=True, seed=seed)

    first, second, other = epochs(build(1)), epochs(build(1)), epochs(build(2))
    for batch, again in zip(first[0] + first[1], second[0] + second[1]):
        np.testing.assert_array_equal(batch[0], again[0])
        np.testing.assert_array_equal(batch[1], again[1])
    def order(epoch) -> np.ndarray:
        return np.concatenate([y for _, y in epoch])

    assert sorted(order(first[0])) == list(range(10))
    assert not np.array_equal(order(first[0]), order(first[1]))
    assert not np.array_equal(order(first[0]), order(other[0]))


def test_make_dataset_rejects_bad_inputs():
    images, labels = tiny_arrays()
    with pytest.raises(ValueError, match=r"NHWC.*Received: shape=\(10, 4, 4\)"):
        make_dataset(images[..., 0], labels, batch_size=2, augment=None, shuffle=False, seed=0)
    with pytest.raises(ValueError, match="Received: 10 images, 9 labels"):
        make_dataset(images, labels[:9], batch_size=2, augment=None, shuffle=False, seed=0)
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        make_dataset(images, labels, batch_size=0, augment=None, shuffle=False, seed=0)


# ---------------------------------------------------------------- the fast path: folded flips, XLA gather

def reference_transform(images: np.ndarray, params: dict, config: AugmentConfig) -> np.ndarray:
    """ImageDataGenerator's order with TF's kernel: affine (3x3 matrices), channel shift, then the flips."""
    x = tf.constant(images)
    if config.has_affine:
        m = affine_matrices(params, images.shape[1], images.shape[2])
        transforms = tf.concat([m[:, 0, :], m[:, 1, :], tf.zeros_like(m[:, 2, :2])], axis=-1)
        x = tf.raw_ops.ImageProjectiveTransformV3(
            images=x, transforms=transforms, output_shape=tf.shape(x)[1:3], fill_value=config.cval,
            interpolation="BILINEAR" if config.interpolation_order == 1 else "NEAREST",
            fill_mode=config.fill_mode.upper())
    if config.channel_shift_range:
        shift = tf.reshape(params["channel_shift_intensity"], [-1, 1, 1, 1])
        x = tf.clip_by_value(x + shift, tf.reduce_min(x, axis=[1, 2, 3], keepdims=True),
                             tf.reduce_max(x, axis=[1, 2, 3], keepdims=True))
    x = x.numpy()
    flips_h, flips_v = params["flip_horizontal"].numpy(), params["flip_vertical"].numpy()
    for i in range(len(x)):
        if config.horizontal_flip and flips_h[i]:
            x[i] = x[i, :, ::-1]
        if config.vertical_flip and flips_v[i]:
            x[i] = x[i, ::-1]
    return x


@pytest.mark.parametrize("fill_mode", FILL_MODES)
@pytest.mark.parametrize("order", [0, 1])
def test_fast_path_equals_kernel_then_flips(fill_mode, order):
    """Flips folded into the matrix and the XLA gather resampler reproduce kernel + flips.

    Tolerance (values in [0, 1]): bilinear max abs diff < 1e-4; nearest neighbour picks the same
    source pixel for all but 0.1% of pixels (those whose sampled point lies within float32
    rounding of a half-pixel boundary: the matrix is composed in another order, and XLA may fuse
    a multiply-add). Both resamplers are checked against the reference.
    """
    config = AugmentConfig(rotation_range=40.0, width_shift_range=0.2, height_shift_range=0.2, shear_range=0.3,
                           zoom_range=(0.6, 1.4), horizontal_flip=True, vertical_flip=True, fill_mode=fill_mode,
                           cval=0.25, channel_shift_range=0.1, interpolation_order=order)
    batch = np.stack([smooth_image(), smooth_image()[::-1]] * 6)
    params = sample_transform(config, tf.constant([4, 2]), len(batch), SIZE, SIZE)
    assert params["flip_horizontal"].numpy().any() and params["flip_vertical"].numpy().any()
    expected = reference_transform(batch, params, config)
    for resampler in ("xla", "kernel"):
        ours = apply_transform(batch, params, config, resampler=resampler).numpy()
        if order == 1:
            assert np.abs(ours - expected).max() < 1e-4, resampler
        else:
            assert np.mean(ours != expected) < 1e-3, resampler


def test_flip_only_is_exact_and_transform_vectors_match_the_matrices():
    image = smooth_image(12, 20)
    config = AugmentConfig(horizontal_flip=True, vertical_flip=True, interpolation_order=1)
    params = identity_params(4)
    params["flip_horizontal"] = tf.constant([True, False, True, False])
    params["flip_vertical"] = tf.constant([False, True, True, False])
    out = apply_transform(np.stack([image] * 4), params, config).numpy()
    for result, expected in zip(out, [image[:, ::-1], image[::-1], image[::-1, ::-1], image]):
        np.testing.assert_array_equal(result, expected)
    affine = AugmentConfig(rotation_range=30.0, shear_range=0.2, zoom_range=0.3, width_shift_range=0.1)
    drawn = sample_transform(affine, tf.constant([1, 9]), 16, 12, 20)
    matrices = affine_matrices(drawn, 12, 20).numpy()
    vectors = transform_vectors(drawn, 12, 20, affine).numpy()
    np.testing.assert_allclose(vectors[:, :6], matrices[:, :2, :].reshape(16, 6), atol=2e-5)
    np.testing.assert_array_equal(vectors[:, 6:], 0.0)


def test_grey_augmented_then_repeated_equals_three_identical_channels_augmented():
    grey = np.random.default_rng(3).random((10, 16, 16, 1), dtype=np.float32)
    config = preset("chougrad2018")
    grey_rgb = make_dataset(grey, None, batch_size=4, augment=config, shuffle=True, seed=5, channels=3)
    rgb = make_dataset(np.repeat(grey, 3, axis=-1), None, batch_size=4, augment=config, shuffle=True, seed=5)
    for a, b in zip(grey_rgb, rgb):
        assert a.shape[-1] == 3
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match=r"repeat one grey channel 3 times.*Received: channels=2"):
        make_dataset(grey, None, batch_size=4, augment=None, shuffle=False, seed=0, channels=2)


def test_numbered_epochs_resume_where_they_left_off():
    images, labels = tiny_arrays()
    config = AugmentConfig(rotation_range=30.0, horizontal_flip=True)

    def stream(**options):
        dataset = make_dataset(images, labels, batch_size=4, augment=config, shuffle=True, seed=3, **options)
        return [(x.numpy(), y.numpy()) for x, y in dataset]

    whole = stream(epochs=3)
    assert len(whole) == 9  # three epochs of 4 + 4 + 2 in one pass
    for (x, y), (x_again, y_again) in zip(stream(epochs=3, first_epoch=1), whole[3:]):
        np.testing.assert_array_equal(x, x_again)
        np.testing.assert_array_equal(y, y_again)
    orders = [np.concatenate([y for _, y in whole[3 * e:3 * e + 3]]) for e in range(3)]
    assert all(sorted(order) == list(range(10)) for order in orders)
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    with pytest.raises(ValueError, match=r"`first_epoch` needs `epochs`.*Received: first_epoch=1"):
        make_dataset(images, labels, batch_size=4, augment=None, shuffle=True, seed=0, first_epoch=1)
    with pytest.raises(ValueError, match=r"`first_epoch` must be an integer from 0 to `epochs`"):
        make_dataset(images, labels, batch_size=4, augment=None, shuffle=True, seed=0, epochs=2, first_epoch=3)
