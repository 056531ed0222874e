"""tf.data input pipelines with Keras ImageDataGenerator's random affine augmentation, in-graph.

`AugmentConfig` takes ImageDataGenerator's option names and meanings, so a paper's
`ImageDataGenerator(...)` call is copied field by field. `sample_transform` draws the same
parameters as `ImageDataGenerator.get_random_transform` (same keys) from a stateless seed, and
`apply_transform` builds the same affine matrix as Keras' `apply_affine_transform` (rotation,
shift, shear, zoom composed around the image centre) and resamples with
`tf.raw_ops.ImageProjectiveTransformV3`, then applies the channel shift and the flips in
ImageDataGenerator's order. Everything runs inside the TF graph (tf.data `.map`, tf.function).

Differences from Keras' ImageDataGenerator, on purpose:

- `shear_range` and the `shear` parameter are in RADIANS, as in Keras 1 and early Keras 2,
  the tool the papers used. Modern ImageDataGenerator takes degrees (0.5 here = 28.65 there).
- Shift keys mean what the option names say: `tx` is the horizontal (x, column) shift drawn
  from `width_shift_range` x width, `ty` the vertical one from `height_shift_range` x height.
  Modern Keras draws `tx` from the *height* range but `apply_transform` moves x by `tx`, so
  its `height_shift_range` shifts horizontally. With equal ranges on square images (every
  preset) the two give the same distribution; our `params` feed Keras' `apply_transform` as is.
- The centre is ((width-1)/2, (height-1)/2). Modern Keras swaps height and width there, which
  only matters for non-square images.

Parity with `ImageDataGenerator.apply_transform` (scipy `affine_transform`) for the same
parameters, measured by tests/data/test_pipeline.py on a smooth 32x32x3 image with values in
[0, 1]: scipy's order-1 spline is plain bilinear interpolation, as TF's BILINEAR, and order 0
is nearest neighbour, as TF's NEAREST. Wherever the sampled point lies at least one pixel
inside the input image, the two agree to float32 rounding (max abs diff < 1e-5, every fill
mode). They differ only where pixels are filled: "nearest" and "reflect" agree everywhere
(mean abs diff < 1e-5); with "constant" scipy puts cval at any point outside [0, n-1] while TF
blends cval into the last half pixel (a one-pixel seam); with "wrap" scipy repeats with period
n-1 and TF, as Keras documents the mode (abcd|abcd), with period n. For those two the mean abs
diff over the image stays below 0.025. Flips and whole-pixel translations are exact.

Interpolation: `interpolation_order` 1 (bilinear, modern Keras' default) or 0 (nearest
neighbour; Keras 1 resampled with scipy order=0).

Reference: Chougrad et al. 2018 §2.2.1 (3); Shen et al. 2017 §3.1.2 (and lishen/end2end-all-conv
image_clf_train.py); Coccomini 2021 Ch. 3.2 and Ch. 4 (see papers/protocols_*.md).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from mammo_keras.registry import Registry

FILL_MODES = ("nearest", "constant", "reflect", "wrap")
INTERPOLATION_ORDERS = (0, 1)
PARAM_KEYS = ("theta", "tx", "ty", "shear", "zx", "zy", "flip_horizontal", "flip_vertical",
              "channel_shift_intensity")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation options, named and meant as in Keras' ImageDataGenerator.

    Args:
        rotation_range: degrees; theta ~ U(-rotation_range, rotation_range).
        width_shift_range: fraction of the width when < 1, pixels when >= 1; a Python int
            n >= 1 draws whole pixels in [0, n) with a random sign, as ImageDataGenerator.
        height_shift_range: the same along the height.
        shear_range: RADIANS (Keras 1 / early Keras 2); shear ~ U(-shear_range, shear_range).
            Modern ImageDataGenerator takes degrees. Must be below pi/2.
        zoom_range: z gives [1 - z, 1 + z]; or a pair (low, high). zx, zy drawn independently;
            values above 1 zoom out.
        horizontal_flip, vertical_flip: flip each image with probability 1/2.
        fill_mode: "nearest", "constant", "reflect" or "wrap"; cval fills "constant".
        channel_shift_range: adds one U(-r, r) value to every channel, clipped to the image's
            min and max (as ImageDataGenerator).
        interpolation_order: 1 bilinear (modern default), 0 nearest neighbour (Keras 1).
    """

    rotation_range: float = 0.0
    width_shift_range: float = 0.0
    height_shift_range: float = 0.0
    shear_range: float = 0.0
    zoom_range: float | tuple[float, float] = 0.0
    horizontal_flip: bool = False
    vertical_flip: bool = False
    fill_mode: str = "nearest"
    cval: float = 0.0
    channel_shift_range: float = 0.0
    interpolation_order: int = 1

    def __post_init__(self):
        for name in ("rotation_range", "width_shift_range", "height_shift_range",
                     "shear_range", "channel_shift_range"):
            value = getattr(self, name)
            if not _is_number(value) or not value >= 0 or not math.isfinite(value):
                raise ValueError(f"`{name}` must be a finite number >= 0. Received: {name}={value!r}")
        if self.shear_range >= math.pi / 2:
            raise ValueError("`shear_range` is in radians and must be below pi/2 (Keras 1 "
                             "convention; modern ImageDataGenerator uses degrees, 0.5 rad = "
                             f"28.65 deg). Received: shear_range={self.shear_range!r}")
        object.__setattr__(self, "zoom_range", _zoom_bounds(self.zoom_range))
        for name in ("horizontal_flip", "vertical_flip"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"`{name}` must be True or False. Received: {name}={getattr(self, name)!r}")
        if self.fill_mode not in FILL_MODES:
            raise ValueError(f"`fill_mode` must be one of {list(FILL_MODES)}. "
                             f"Received: fill_mode={self.fill_mode!r}")
        if not _is_number(self.cval) or not math.isfinite(self.cval):
            raise ValueError(f"`cval` must be a finite number. Received: cval={self.cval!r}")
        order = self.interpolation_order
        if order not in INTERPOLATION_ORDERS or isinstance(order, bool):
            raise ValueError(f"`interpolation_order` must be one of {list(INTERPOLATION_ORDERS)}. "
                             f"Received: interpolation_order={self.interpolation_order!r}")

    @property
    def has_affine(self) -> bool:
        """Whether any geometric option is on (otherwise resampling is skipped, as in Keras)."""
        return bool(self.rotation_range or self.width_shift_range or self.height_shift_range
                    or self.shear_range or self.zoom_range != (1.0, 1.0))


def _zoom_bounds(zoom_range: object) -> tuple[float, float]:
    if _is_number(zoom_range):
        low, high = 1.0 - float(zoom_range), 1.0 + float(zoom_range)
    elif isinstance(zoom_range, (tuple, list)) and len(zoom_range) == 2 and all(map(_is_number, zoom_range)):
        low, high = float(zoom_range[0]), float(zoom_range[1])
    else:
        raise ValueError("`zoom_range` must be a float z (giving [1-z, 1+z]) or a pair (low, high). "
                         f"Received: zoom_range={zoom_range!r}")
    if not 0 < low <= high or not math.isfinite(high):
        raise ValueError("`zoom_range` bounds must satisfy 0 < low <= high. "
                         f"Received: zoom_range={zoom_range!r}")
    return low, high


PRESETS: Registry[AugmentConfig] = Registry("augmentation preset", listing="data.pipeline.PRESETS.names()")
for _name, _preset in {
    # Chougrad 2018 §2.2.1 (3): Keras 1 + Theano, so shear 0.5 is radians and resampling was
    # scipy order=0; fill_mode unspecified -> Keras default "nearest".
    "chougrad2018": AugmentConfig(
        width_shift_range=0.25, height_shift_range=0.25, rotation_range=40.0, shear_range=0.5,
        zoom_range=(0.5, 1.5), horizontal_flip=True, fill_mode="nearest", interpolation_order=0),
    # Shen 2017 §3.1.2: "shear in [-0.2, 0.2] radians", channel shift in [-20, 20] pixel values.
    "shen2017": AugmentConfig(
        horizontal_flip=True, vertical_flip=True, rotation_range=25.0, shear_range=0.2,
        zoom_range=(0.8, 1.2), channel_shift_range=20.0),
    # Jain & Levy §3.2: "random mirroring of input images online" (Caffe's mirror: left-right); the
    # rotations and crops are offline (`data.recipes.OfflineAugment`).
    "jain_levy": AugmentConfig(horizontal_flip=True),
    # Coccomini 2021 Ch. 3.2: rotation 0-360 and h/v flips for every network.
    "cocc_pretrained": AugmentConfig(rotation_range=360.0, horizontal_flip=True, vertical_flip=True),
    # Coccomini 2021 Code 4.1 (scratch CNN): plus shifts 0.1, shear 0.01, zoom 0.1. That code
    # ran on 2021 tf.keras, whose shear_range is in degrees: 0.01 deg, stored here in radians.
    "cocc_scratch": AugmentConfig(
        rotation_range=360.0, horizontal_flip=True, vertical_flip=True, width_shift_range=0.1,
        height_shift_range=0.1, shear_range=math.radians(0.01), zoom_range=0.1),
    # Left-right and up-down mirroring only (experiments/mias_tasks, whole mini-MIAS images: a flip
    # keeps the breast against the image edge, where rotations and shifts would pull it off).
    "flips": AugmentConfig(horizontal_flip=True, vertical_flip=True),
}.items():
    PRESETS.register(_name, _preset)
del _name, _preset

def preset(name: str) -> AugmentConfig:
    """The augmentation of a paper, by preset name."""
    return PRESETS.get(name)


def _shift(value: float, size: int, seeds: tf.Tensor, batch_size) -> tf.Tensor:
    """Pixel shifts drawn as ImageDataGenerator does for one shift range."""
    if not value:
        return tf.zeros([batch_size], tf.float32)
    if isinstance(value, (int, np.integer)):
        magnitude = tf.random.stateless_uniform([batch_size], seeds[0], 0, int(value), dtype=tf.int32)
        sign = tf.where(tf.random.stateless_uniform([batch_size], seeds[1]) < 0.5, -1.0, 1.0)
        return tf.cast(magnitude, tf.float32) * sign
    shift = tf.random.stateless_uniform([batch_size], seeds[0], -float(value), float(value))
    return shift * float(size) if value < 1 else shift


def sample_transform(config: AugmentConfig, seed, batch_size, height: int,
                     width: int) -> dict[str, tf.Tensor]:
    """Draw one random transform per image from a stateless seed.

    Args:
        config: the augmentation options.
        seed: shape-[2] integer tensor (stateless RNG seed); equal seeds give equal draws.
        batch_size: number of transforms (int or scalar tensor).
        height, width: image size in pixels (turns fractional shifts into pixels).

    Returns:
        ImageDataGenerator.get_random_transform's keys, each a [batch_size] tensor: theta
        (degrees), tx / ty (pixels along x=columns / y=rows), shear (radians), zx, zy,
        flip_horizontal, flip_vertical (bool), channel_shift_intensity (0 when disabled).
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=11)
    shape = [batch_size]

    def uniform(index: int, low: float, high: float) -> tf.Tensor:
        if low == high:
            return tf.fill(shape, tf.constant(low, tf.float32))
        return tf.random.stateless_uniform(shape, seeds[index], low, high)

    zoom_low, zoom_high = config.zoom_range

    def flip(index: int, enabled: bool) -> tf.Tensor:
        return (tf.random.stateless_uniform(shape, seeds[index]) < 0.5) & enabled

    return {
        "theta": uniform(0, -config.rotation_range, config.rotation_range),
        "tx": _shift(config.width_shift_range, width, seeds[1:3], batch_size),
        "ty": _shift(config.height_shift_range, height, seeds[3:5], batch_size),
        "shear": uniform(5, -config.shear_range, config.shear_range),
        "zx": uniform(6, zoom_low, zoom_high),
        "zy": uniform(7, zoom_low, zoom_high),
        "flip_horizontal": flip(8, config.horizontal_flip),
        "flip_vertical": flip(9, config.vertical_flip),
        "channel_shift_intensity": uniform(10, -config.channel_shift_range, config.channel_shift_range),
    }


def affine_matrices(params: dict[str, tf.Tensor], height: int, width: int) -> tf.Tensor:
    """[B, 3, 3] output->input maps in (x, y) pixel coordinates, composed as Keras does.

    M = C R(theta) T(tx, ty) S(shear) Z(zx, zy) C^-1, C moving the origin to the image centre
    (Keras' `apply_affine_transform` + `transform_matrix_offset_center`).
    """
    theta = tf.cast(params["theta"], tf.float32) * (math.pi / 180.0)
    shear = tf.cast(params["shear"], tf.float32)
    zeros, ones = tf.zeros_like(theta), tf.ones_like(theta)

    def matrix(rows):
        return tf.stack([tf.stack(row, axis=-1) for row in rows], axis=-2)

    rotation = matrix([[tf.cos(theta), -tf.sin(theta), zeros], [tf.sin(theta), tf.cos(theta), zeros],
                       [zeros, zeros, ones]])
    shift = matrix([[ones, zeros, tf.cast(params["tx"], tf.float32)],
                    [zeros, ones, tf.cast(params["ty"], tf.float32)], [zeros, zeros, ones]])
    shearing = matrix([[ones, -tf.sin(shear), zeros], [zeros, tf.cos(shear), zeros], [zeros, zeros, ones]])
    zoom = matrix([[tf.cast(params["zx"], tf.float32), zeros, zeros],
                   [zeros, tf.cast(params["zy"], tf.float32), zeros], [zeros, zeros, ones]])
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    to_centre = tf.constant([[1.0, 0.0, cx], [0.0, 1.0, cy], [0.0, 0.0, 1.0]])
    from_centre = tf.constant([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
    return to_centre @ rotation @ shift @ shearing @ zoom @ from_centre


def apply_transform(images: tf.Tensor, params: dict[str, tf.Tensor], config: AugmentConfig) -> tf.Tensor:
    """Apply sampled transforms to NHWC (or one HWC) float images, as ImageDataGenerator.

    Order as `ImageDataGenerator.apply_transform`: affine resampling, channel shift,
    horizontal flip, vertical flip. Shape and dtype are preserved.
    """
    images = tf.convert_to_tensor(images)
    single = images.shape.rank == 3
    if single:
        images = images[tf.newaxis]
        params = {key: tf.reshape(value, [1]) for key, value in params.items()}
    if images.shape.rank != 4:
        raise ValueError(f"`images` must be HWC or NHWC. Received: shape={images.shape}")
    dtype = images.dtype
    x = tf.cast(images, tf.float32)
    height, width = x.shape[1], x.shape[2]
    if config.has_affine:
        m = affine_matrices(params, height, width)
        transforms = tf.concat([m[:, 0, :], m[:, 1, :], tf.zeros_like(m[:, 2, :2])], axis=-1)
        x = tf.raw_ops.ImageProjectiveTransformV3(
            images=x, transforms=transforms, output_shape=tf.shape(x)[1:3],
            fill_value=tf.constant(config.cval, tf.float32),
            interpolation="BILINEAR" if config.interpolation_order == 1 else "NEAREST",
            fill_mode=config.fill_mode.upper())
    if config.channel_shift_range:
        low = tf.reduce_min(x, axis=[1, 2, 3], keepdims=True)
        high = tf.reduce_max(x, axis=[1, 2, 3], keepdims=True)
        intensity = tf.reshape(tf.cast(params["channel_shift_intensity"], tf.float32), [-1, 1, 1, 1])
        x = tf.clip_by_value(x + intensity, low, high)
    if config.horizontal_flip:
        flip = tf.reshape(params["flip_horizontal"], [-1, 1, 1, 1])
        x = tf.where(flip, tf.reverse(x, axis=[2]), x)
    if config.vertical_flip:
        flip = tf.reshape(params["flip_vertical"], [-1, 1, 1, 1])
        x = tf.where(flip, tf.reverse(x, axis=[1]), x)
    x = tf.cast(x, dtype)
    return x[0] if single else x


def random_augment(images: tf.Tensor, config: AugmentConfig, seed) -> tf.Tensor:
    """Draw and apply one random transform per image of an NHWC batch."""
    images = tf.convert_to_tensor(images)
    params = sample_transform(config, seed, tf.shape(images)[0], images.shape[1], images.shape[2])
    return apply_transform(images, params, config)


def make_dataset(images: np.ndarray | Sequence[np.ndarray], labels: np.ndarray | None, *, batch_size: int,
                 augment: AugmentConfig | None, shuffle: bool, seed: int, cache: bool = False,
                 drop_remainder: bool = False) -> tf.data.Dataset:
    """Batches of (images, labels) from in-memory NHWC arrays, augmented in the graph.

    Shuffling and augmentation change every epoch and are reproducible from `seed`: two
    datasets built with the same arguments yield the same batches epoch by epoch.

    Args:
        images: [N, H, W, C] array, cast to float32, or a list of such arrays for a model with
            several inputs (a siamese pair); every array of an item gets the same transform.
        labels: [N, ...] array, or None to yield images only.
        batch_size: images per batch.
        augment: random augmentation, or None for none (validation/test).
        shuffle: reshuffle the examples every epoch.
        seed: integer seed of the shuffle and the augmentation.
        cache: cache the examples after the first epoch.
        drop_remainder: drop the last incomplete batch.
    """
    several = isinstance(images, (list, tuple))
    arrays = [np.asarray(a, dtype=np.float32) for a in (images if several else [images])]
    for array in arrays:
        if array.ndim != 4 or len(array) != len(arrays[0]):
            shapes = [a.shape for a in arrays] if several else arrays[0].shape
            raise ValueError("`images` must be an NHWC array (or a list of them, one length). "
                             f"Received: shape{'s' if several else ''}={shapes}")
    if labels is not None and len(labels) != len(arrays[0]):
        raise ValueError("`images` and `labels` must have the same length. "
                         f"Received: {len(arrays[0])} images, {len(labels)} labels")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
    inputs = tuple(arrays) if several else arrays[0]
    elements = inputs if labels is None else (inputs, np.asarray(labels))
    dataset = tf.data.Dataset.from_tensor_slices(elements)
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(len(arrays[0]), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if augment is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def transform(batch, batch_seed):
            if several:
                return tuple(random_augment(part, augment, batch_seed) for part in batch)
            return random_augment(batch, augment, batch_seed)

        def augment_batch(batch, batch_seed):
            if labels is None:
                return transform(batch, batch_seed)
            return transform(batch[0], batch_seed), batch[1]

        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            augment_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def batch_balancing_weights(targets: tf.Tensor) -> tf.Tensor:
    """Sample weights that balance the classes present in one batch: n / (k_present * n_class).

    `targets` is one-hot (B, K) or a single binary column (B, 1). Every class present in the
    batch then carries the same total weight, and the weights average to 1.

    Reference: Shen et al. 2017, Sec. 3.1.2 ("the sample weights were adjusted within each batch
    to keep the five classes balanced").
    """
    targets = tf.cast(targets, tf.float32)
    if targets.shape[-1] == 1:
        targets = tf.concat([1.0 - targets, targets], axis=-1)
    counts = tf.reduce_sum(targets, axis=0)
    present = tf.reduce_sum(tf.cast(counts > 0, tf.float32))
    size = tf.cast(tf.shape(targets)[0], tf.float32)
    per_item = tf.reduce_sum(targets * counts, axis=-1)
    return size / (present * per_item)


def balance_batches(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """(x, y) batches -> (x, y, w) with `batch_balancing_weights(y)`."""
    return dataset.map(lambda x, y: (x, y, batch_balancing_weights(y)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def make_prepared_dataset(folder, rows: np.ndarray | None = None, labels: np.ndarray | None = None, *,
                          batch_size: int, augment: AugmentConfig | None, shuffle: bool, seed: int,
                          channels: int | None = None, scale: float = 1.0, cache: bool | str = False,
                          drop_remainder: bool = False) -> tf.data.Dataset:
    """Batches from a prepared folder (`mammo-keras data prepare`), read in parallel, never loaded whole.

    The folder's images.npy is memory-mapped; items are read by parallel tf.data workers,
    optionally cached (in memory with True, in a file with a path), shuffled, batched,
    augmented in the graph and prefetched, so the accelerator does not wait for input. With
    the same arguments it yields exactly the batches `make_dataset` yields from the same
    arrays in memory (tests/data/test_pipeline_files.py).

    Args:
        folder: the prepared folder (images.npy + index.csv).
        rows: which items (positions in images.npy), in order; default all.
        labels: targets for those rows (e.g. one-hot); default index.csv's `label`;
            `False` yields images only.
        channels: 1 or 3 output channels for grey items (3 repeats the grey channel).
        scale: multiply pixel values (the configs' `input_scale`, e.g. 255).
        cache: False, True (memory) or a file path prefix (tf.data's file cache).
    """
    from mammo_keras.data.prepare import load_prepared

    images, index = load_prepared(folder, mmap=True)
    rows = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
    if labels is None:
        labels = index["label"].to_numpy()[rows]
    with_labels = labels is not False
    if with_labels and len(labels) != len(rows):
        raise ValueError("`rows` and `labels` must have the same length. "
                         f"Received: {len(rows)} rows, {len(labels)} labels")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
    item_shape = tuple(images.shape[1:])
    if len(item_shape) == 2:
        item_shape = (*item_shape, 1)
    if len(item_shape) != 3:
        raise ValueError("Prepared items must be (H, W) or (H, W, C) arrays to form NHWC batches. "
                         f"Received: item shape={tuple(images.shape[1:])}")
    out_channels = channels or item_shape[-1]
    if out_channels not in (item_shape[-1], 3) or (out_channels != item_shape[-1] and item_shape[-1] != 1):
        raise ValueError("`channels` must keep the items' channels or repeat one grey channel 3 times. "
                         f"Received: channels={channels!r} for items of shape {item_shape}")
    source = images

    def read(position):
        return np.asarray(source[int(position)], dtype=np.float32).reshape(item_shape)

    def load(position):
        image = tf.numpy_function(read, [position], tf.float32, stateful=False)
        image.set_shape(item_shape)
        if scale != 1.0:
            image = image * np.float32(scale)
        if out_channels != item_shape[-1]:
            image = tf.repeat(image, out_channels, axis=-1)
        return image

    positions = tf.data.Dataset.from_tensor_slices(rows)
    targets = tf.data.Dataset.from_tensor_slices(np.asarray(labels)) if with_labels else None
    if cache is not False:  # decode once, then shuffle the cached arrays every epoch
        dataset = positions.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if with_labels:
            dataset = tf.data.Dataset.zip((dataset, targets))
        dataset = dataset.cache("" if cache is True else str(cache))
        if shuffle:
            dataset = dataset.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    else:  # shuffle the cheap positions, then read only what each epoch needs
        dataset = positions if not with_labels else tf.data.Dataset.zip((positions, targets))
        if shuffle:
            dataset = dataset.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.map((lambda p, y: (load(p), y)) if with_labels else load,
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if augment is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def augment_batch(batch, batch_seed):
            if not with_labels:
                return random_augment(batch, augment, batch_seed)
            return random_augment(batch[0], augment, batch_seed), batch[1]

        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            augment_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


__all__ = ["AugmentConfig", "balance_batches", "batch_balancing_weights", "FILL_MODES", "PARAM_KEYS", "PRESETS", "affine_matrices", "apply_transform",
           "make_dataset", "make_prepared_dataset", "preset", "random_augment",
           "sample_transform"]
