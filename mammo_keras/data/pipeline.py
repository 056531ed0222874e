"""tf.data input pipelines with Keras ImageDataGenerator's random affine augmentation, in-graph.

`AugmentConfig` takes ImageDataGenerator's option names and meanings, so a paper's
`ImageDataGenerator(...)` call is copied field by field. `sample_transform` draws the same
parameters as `ImageDataGenerator.get_random_transform` (same keys) from a stateless seed, and
`apply_transform` builds the same affine matrix as Keras' `apply_affine_transform` (rotation,
shift, shear, zoom composed around the image centre), resamples with an XLA-compiled gather
doing TF's ImageProjectiveTransformV3 arithmetic (or that kernel itself), and gives the channel
shift and the flips in ImageDataGenerator's order. Everything runs inside the TF graph (tf.data
`.map`, tf.function).

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

The fast path (`make_dataset`, `make_prepared_dataset`): item indices are shuffled and each
batch is gathered from one resident tensor (or read from the prepared file), never a shuffle
buffer of images; each epoch's transforms are drawn at once as `transform_vectors` rows, with
the flips folded into the affine map (a flip of the output is a sign in the matrix), so a
batch costs one resampling call; that call is an XLA-compiled gather (`_gather_resample`, TF's
kernel arithmetic op for op, several times faster than ImageProjectiveTransformV3 on a CPU);
and grey items are augmented on their one channel and repeated afterwards in the same map, or
not at all where the model repeats them (its `grey_to_rgb` layer). Against TF's kernel followed
by the flips, bilinear results agree to 1e-4 and nearest neighbour picks the same source pixel
for all but a few pixels per million (sampled points within float32 rounding of a half-pixel
boundary), tested in tests/data/test_pipeline.py.

Reference: Chougrad et al. 2018 §2.2.1 (3); Shen et al. 2017 §3.1.2 (and lishen/end2end-all-conv
image_clf_train.py); Coccomini 2021 Ch. 3.2 and Ch. 4 (see papers/protocols_*.md).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mammo_keras.data.rows import ItemRows, is_lazy
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


_graph_only = tf.autograph.experimental.do_not_convert
"""Marks a function traced into a tf.data map or tf.function as plain graph code, not converted by
AutoGraph. Everything here branches on Python values only (options, static shapes); AutoGraph's
source-to-source conversion of these functions was almost all of a dataset's build time, spent again
in every process (measured on 2 shared cores, Chougrad's augmented dataset, three fresh processes
each: 6.9-8.6 s before, 0.4-1.0 s after; the batches are bitwise the same)."""


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
    (Keras' `apply_affine_transform` + `transform_matrix_offset_center`). The resampling itself
    uses `transform_vectors`, the same map in closed form with the flips folded in.
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


def transform_vectors(params: dict[str, tf.Tensor], height: int, width: int,
                      config: AugmentConfig) -> tf.Tensor:
    """[B, 8] rows for ImageProjectiveTransformV3: `affine_matrices` with the flips folded in.

    ImageDataGenerator flips after resampling (affine, channel shift, flips). Flipping the
    output about the image centre composes the output->input map with D = diag(+-1, +-1) about
    the centre, so the input point of output p is A D (p - c) + b + c, with A = R(theta)
    S(shear) Z(zx, zy), b = R(theta) (tx, ty) and c the centre: the flips cost no pass over the
    pixels. The matrix is composed in closed form (R S = [[cos t, -sin(t + s)], [sin t,
    cos(t + s)]]), one [B, 8] tensor for the whole batch. The channel shift clips to the
    image's own min and max, which a flip leaves unchanged, so it commutes with the flips.
    """
    theta = tf.cast(params["theta"], tf.float32) * (math.pi / 180.0)
    shear = tf.cast(params["shear"], tf.float32)
    zx, zy = tf.cast(params["zx"], tf.float32), tf.cast(params["zy"], tf.float32)
    tx, ty = tf.cast(params["tx"], tf.float32), tf.cast(params["ty"], tf.float32)
    cos, sin = tf.cos(theta), tf.sin(theta)
    a00, a01 = cos * zx, -tf.sin(theta + shear) * zy
    a10, a11 = sin * zx, tf.cos(theta + shear) * zy
    b0, b1 = cos * tx - sin * ty, sin * tx + cos * ty
    if config.horizontal_flip:
        sign = tf.where(tf.cast(params["flip_horizontal"], tf.bool), -1.0, 1.0)
        a00, a10 = a00 * sign, a10 * sign
    if config.vertical_flip:
        sign = tf.where(tf.cast(params["flip_vertical"], tf.bool), -1.0, 1.0)
        a01, a11 = a01 * sign, a11 * sign
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    zeros = tf.zeros_like(theta)
    return tf.stack([a00, a01, cx + b0 - a00 * cx - a01 * cy,
                     a10, a11, cy + b1 - a10 * cx - a11 * cy, zeros, zeros], axis=-1)


def _round_half_away(value: tf.Tensor) -> tf.Tensor:
    """std::round (half away from zero), exactly: |v| - floor(|v|) is exact in float32."""
    magnitude = tf.abs(value)
    whole = tf.floor(magnitude)
    rounded = whole + tf.cast(magnitude - whole >= 0.5, value.dtype)
    return tf.where(value < 0, -rounded, rounded)


def _map_coordinate(coord: tf.Tensor, size: int, fill_mode: str) -> tf.Tensor:
    """TF's MapCoordinate (tensorflow/core/kernels/image/image_ops.h), op for op, for one axis."""
    last = float(size - 1)
    if fill_mode == "CONSTANT":
        return coord
    if fill_mode == "NEAREST" or size <= 1:
        return tf.clip_by_value(coord, 0.0, last) if size > 1 else tf.zeros_like(coord)

    def trunc(value):  # static_cast<DenseIndex>
        return tf.cast(tf.cast(value, tf.int32), tf.float32)

    if fill_mode == "REFLECT":
        period = float(2 * size)
        low = period * trunc(-coord / period) + coord
        low = tf.where(low < -float(size), low + period, -low - 1.0)
        high = coord - period * trunc(coord / period)
        high = tf.where(high >= float(size), period - high - 1.0, high)
    else:  # WRAP
        span = float(size - 1)
        low = coord + float(size) * (trunc(-coord / span) + 1.0)
        high = coord - float(size) * trunc(coord / span)
    mapped = tf.where(coord < 0, low, tf.where(coord > last, high, coord))
    return tf.clip_by_value(mapped, 0.0, last)


@tf.function(jit_compile=True, autograph=False)
def _gather_resample(images: tf.Tensor, transforms: tf.Tensor, fill_value: tf.Tensor, interpolation: str,
                     fill_mode: str) -> tf.Tensor:
    """ImageProjectiveTransformV3 for affine maps as an XLA-compiled gather (CPU: ~4x the kernel).

    Same arithmetic as TF's kernel: input point (t0 x + t1 y) + t2, (t3 x + t4 y) + t5; the fill
    mode's coordinate map; nearest (std::round) or bilinear reads with `fill_value` outside the
    image. XLA may fuse a multiply-add into one rounding, so a sampled point can differ from the
    kernel's in the last float32 bit (tests/data/test_pipeline.py bounds the effect).
    """
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    t = transforms[:, :, tf.newaxis, tf.newaxis]
    xs = tf.range(width, dtype=tf.float32)[tf.newaxis, tf.newaxis, :]
    ys = tf.range(height, dtype=tf.float32)[tf.newaxis, :, tf.newaxis]
    x = _map_coordinate((t[:, 0] * xs + t[:, 1] * ys) + t[:, 2], width, fill_mode)
    y = _map_coordinate((t[:, 3] * xs + t[:, 4] * ys) + t[:, 5], height, fill_mode)
    pixels = tf.reshape(images, [-1, channels])
    offsets = (tf.range(tf.shape(images)[0]) * (height * width))[:, tf.newaxis, tf.newaxis]
    clamped = fill_mode == "NEAREST"  # every point already inside: no fill test, rounding of v >= 0

    def read(row: tf.Tensor, column: tf.Tensor) -> tf.Tensor:
        index = (tf.cast(tf.clip_by_value(row, 0.0, height - 1.0), tf.int32) * width
                 + tf.cast(tf.clip_by_value(column, 0.0, width - 1.0), tf.int32) + offsets)
        values = tf.gather(pixels, index)
        if clamped:  # (a bilinear corner past the edge has weight 0; its clamped read adds 0)
            return values
        inside = (row >= 0) & (row < height) & (column >= 0) & (column < width)
        return tf.where(inside[..., tf.newaxis], values, fill_value)

    if interpolation == "NEAREST":
        if clamped:  # x, y in [0, size - 1]: std::round is floor(v) + (v - floor(v) >= 0.5), in range
            def rounded(value):
                whole = tf.floor(value)
                return tf.cast(whole, tf.int32) + tf.cast(value - whole >= 0.5, tf.int32)
            return tf.gather(pixels, rounded(y) * width + rounded(x) + offsets)
        return read(_round_half_away(y), _round_half_away(x))
    x_floor, y_floor = tf.floor(x), tf.floor(y)
    x_ceil, y_ceil = x_floor + 1.0, y_floor + 1.0
    wx0, wx1 = (x_ceil - x)[..., tf.newaxis], (x - x_floor)[..., tf.newaxis]
    wy0, wy1 = (y_ceil - y)[..., tf.newaxis], (y - y_floor)[..., tf.newaxis]
    top = wx0 * read(y_floor, x_floor) + wx1 * read(y_floor, x_ceil)
    bottom = wx0 * read(y_ceil, x_floor) + wx1 * read(y_ceil, x_ceil)
    return wy0 * top + wy1 * bottom


RESAMPLERS = ("xla", "kernel")


def _resamples(config: AugmentConfig) -> bool:
    return config.has_affine or config.horizontal_flip or config.vertical_flip


def _resample_parts(parts: list[tf.Tensor], vectors: tf.Tensor | None, shift: tf.Tensor | None,
                    config: AugmentConfig, *, resampler: str = "xla") -> list[tf.Tensor]:
    """Move every part (NHWC float32, one size) by its item's `transform_vectors` row in one call.

    The parts are stacked along the channels so that a single resampling moves them all; the
    channel shift (`shift`, one value per item) then clips each part to its own range, as if
    each had gone through `apply_transform` alone. `resampler`: "xla" (`_gather_resample`) or
    "kernel" (tf.raw_ops.ImageProjectiveTransformV3, the reference).
    """
    if resampler not in RESAMPLERS:
        raise ValueError(f"`resampler` must be one of {list(RESAMPLERS)}. Received: resampler={resampler!r}")
    if _resamples(config):
        stacked = parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)
        # A flip alone lands on whole pixels: nearest neighbour is exact and cheaper.
        interpolation = "BILINEAR" if config.has_affine and config.interpolation_order == 1 else "NEAREST"
        fill = tf.constant(config.cval, tf.float32)
        if resampler == "xla":
            stacked = _gather_resample(stacked, vectors, fill, interpolation, config.fill_mode.upper())
        else:
            stacked = tf.raw_ops.ImageProjectiveTransformV3(
                images=stacked, transforms=vectors, output_shape=tf.shape(stacked)[1:3], fill_value=fill,
                interpolation=interpolation, fill_mode=config.fill_mode.upper())
        parts = tf.split(stacked, [part.shape[-1] for part in parts], axis=-1) if len(parts) > 1 else [stacked]
    if config.channel_shift_range:
        intensity = tf.reshape(tf.cast(shift, tf.float32), [-1, 1, 1, 1])
        parts = [tf.clip_by_value(part + intensity, tf.reduce_min(part, axis=[1, 2, 3], keepdims=True),
                                  tf.reduce_max(part, axis=[1, 2, 3], keepdims=True)) for part in parts]
    return list(parts)


def apply_transform(images: tf.Tensor, params: dict[str, tf.Tensor], config: AugmentConfig, *,
                    resampler: str = "xla") -> tf.Tensor:
    """Apply sampled transforms to NHWC (or one HWC) float images, as ImageDataGenerator.

    Result as `ImageDataGenerator.apply_transform`: affine resampling, channel shift,
    horizontal flip, vertical flip; the flips are folded into the resampling
    (`transform_vectors`). Shape and dtype are preserved. `resampler`: "xla" (an XLA-compiled
    gather, the fast path) or "kernel" (TF's ImageProjectiveTransformV3).
    """
    images = tf.convert_to_tensor(images)
    single = images.shape.rank == 3
    if single:
        images = images[tf.newaxis]
        params = {key: tf.reshape(value, [1]) for key, value in params.items()}
    if images.shape.rank != 4:
        raise ValueError(f"`images` must be HWC or NHWC. Received: shape={images.shape}")
    vectors = transform_vectors(params, images.shape[1], images.shape[2], config)
    (x,) = _resample_parts([tf.cast(images, tf.float32)], vectors, params["channel_shift_intensity"], config,
                           resampler=resampler)
    x = tf.cast(x, images.dtype)
    return x[0] if single else x


def random_augment(images: tf.Tensor, config: AugmentConfig, seed) -> tf.Tensor:
    """Draw and apply one random transform per image of an NHWC batch."""
    images = tf.convert_to_tensor(images)
    params = sample_transform(config, seed, tf.shape(images)[0], images.shape[1], images.shape[2])
    return apply_transform(images, params, config)


def _sizes(parts) -> list[tuple[int, int]]:
    """The distinct (height, width) of the parts, in first-seen order."""
    return list(dict.fromkeys((int(part.shape[1]), int(part.shape[2])) for part in parts))


def draw_vectors(config: AugmentConfig, seed, count, sizes: Sequence[tuple[int, int]]
                 ) -> tuple[list[tf.Tensor], tf.Tensor]:
    """One random transform per item as `transform_vectors` rows for each part size, and its channel shift.

    Every size gets the same draws (shifts scaled to its own size), so the parts of one item
    move alike, as `random_augment` with one seed would move each.
    """
    vectors, shift = [], None
    for height, width in sizes:
        params = sample_transform(config, seed, count, height, width)
        vectors.append(transform_vectors(params, height, width, config))
        shift = params["channel_shift_intensity"]
    return vectors, shift


def _move(parts: list[tf.Tensor], vectors: Sequence[tf.Tensor], shift, config: AugmentConfig,
          sizes: Sequence[tuple[int, int]]) -> list[tf.Tensor]:
    """Resample the parts of each size together with that size's vectors (the parts keep their order)."""
    out: list[tf.Tensor | None] = [None] * len(parts)
    for size, size_vectors in zip(sizes, vectors):
        chosen = [k for k, part in enumerate(parts) if (part.shape[1], part.shape[2]) == size]
        moved = _resample_parts([parts[k] for k in chosen], size_vectors, shift, config)
        for k, part in zip(chosen, moved):
            out[k] = part
    return out


def augment_parts(parts: Sequence[tf.Tensor], config: AugmentConfig, seed) -> list[tf.Tensor]:
    """One random transform per item of a batch, the same for every part of the item (a siamese pair).

    Parts of one size move in one resampling call; parts of other sizes get the same draws,
    each at its own size.
    """
    parts = [tf.cast(part, tf.float32) for part in parts]
    sizes = _sizes(parts)
    vectors, shift = draw_vectors(config, seed, tf.shape(parts[0])[0], sizes)
    return _move(parts, vectors, shift, config, sizes)


def epoch_key(seed: int, epoch) -> tf.Tensor:
    """The stateless RNG key ([2] int64) of epoch `epoch` of a dataset seeded with `seed`."""
    base = tf.constant([int(seed) & 0x7FFFFFFFFFFFFFFF, 0x6D616D6D6F], tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64))


def _index_batches(n: int, batch_size: int, *, shuffle: bool, drop_remainder: bool, key,
                   augment: AugmentConfig | None, sizes: Sequence[tuple[int, int]]) -> tf.data.Dataset:
    """One epoch of batches of item indices and their transforms, a pure function of `key`.

    The epoch's transforms are drawn at once (one draw per position in the epoch), so each
    batch carries its `transform_vectors` rows and only gathers and resamples.
    """
    key = tf.cast(key, tf.int64)
    order = (tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=key) if shuffle
             else tf.range(n, dtype=tf.int64))
    elements = {"indices": order}
    if augment is not None:
        vectors, shift = draw_vectors(augment, tf.random.experimental.stateless_fold_in(key, 1), n, sizes)
        elements.update({f"vectors_{k}": v for k, v in enumerate(vectors)}, shift=shift)
    return tf.data.Dataset.from_tensor_slices(elements).batch(batch_size, drop_remainder=drop_remainder)


def _schedule(n: int, batch_size: int, *, shuffle: bool, drop_remainder: bool, seed: int,
              epochs: int | None, first_epoch: int, augment: AugmentConfig | None,
              sizes: Sequence[tuple[int, int]]) -> tf.data.Dataset:
    """Index batches: one epoch per iteration (`epochs` None), or epochs first_epoch..epochs-1 in one pass."""
    @_graph_only
    def batches(key):
        return _index_batches(n, batch_size, shuffle=shuffle, drop_remainder=drop_remainder, key=key,
                              augment=augment, sizes=sizes)

    if epochs is None:  # a new epoch key each time the dataset is iterated, reproducible from the seed
        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2).take(1)
        return keys.flat_map(batches)
    return tf.data.Dataset.range(first_epoch, epochs).flat_map(_graph_only(lambda epoch: batches(epoch_key(seed, epoch))))


def _check_epochs(epochs, first_epoch) -> None:
    if epochs is not None and (not isinstance(epochs, (int, np.integer)) or isinstance(epochs, bool) or epochs < 0):
        raise ValueError(f"`epochs` must be None (one epoch per iteration) or an integer >= 0. "
                         f"Received: epochs={epochs!r}")
    if not isinstance(first_epoch, (int, np.integer)) or isinstance(first_epoch, bool) or first_epoch < 0 \
            or (epochs is not None and first_epoch > epochs):
        raise ValueError(f"`first_epoch` must be an integer from 0 to `epochs`. Received: first_epoch={first_epoch!r}")
    if epochs is None and first_epoch:
        raise ValueError("`first_epoch` needs `epochs` (the epochs are numbered only when counted). "
                         f"Received: first_epoch={first_epoch!r}, epochs=None")


def _channel_counts(channels, arrays: list, several: bool) -> list[int]:
    """Output channels per part: None keeps each part's; 3 repeats a grey part after augmentation."""
    wanted = list(channels) if isinstance(channels, (list, tuple)) else [channels] * len(arrays)
    if len(wanted) != len(arrays):
        raise ValueError(f"`channels` needs one value per input array ({len(arrays)}). Received: channels={channels!r}")
    counts = []
    for value, array in zip(wanted, arrays):
        have = array.shape[-1]
        value = have if value is None else value
        if value != have and not (have == 1 and value == 3):
            raise ValueError("`channels` must keep the images' channels or repeat one grey channel 3 times. "
                             f"Received: channels={channels!r} for images of shape {array.shape}")
        counts.append(int(value))
    return counts


PREFETCH_BATCHES = 2
"""Batches prepared ahead of the consumer (besides those the parallel map has in flight)."""


def _batches(schedule: tf.data.Dataset, load, *, augment: AugmentConfig | None, channels: list[int],
             several: bool, labels, sizes: Sequence[tuple[int, int]]) -> tf.data.Dataset:
    """Index batches -> (images, labels) batches: load, move every part once, repeat channels."""
    @_graph_only
    def build(batch):
        parts = [tf.cast(part, tf.float32) for part in load(batch["indices"])]
        if augment is not None:
            vectors = [batch[f"vectors_{k}"] for k in range(len(sizes))]
            parts = _move(parts, vectors, batch["shift"], augment, sizes)
        parts = [part if part.shape[-1] == wanted else tf.repeat(part, wanted, axis=-1)
                 for part, wanted in zip(parts, channels)]
        inputs = tuple(parts) if several else parts[0]
        return inputs if labels is None else (inputs, tf.gather(labels, batch["indices"]))

    # A fixed prefetch depth: tf.data's AUTOTUNE may buffer batches up to half the machine's memory
    # (measured: 2.6 GB of 1152x896 batches for an 800-image epoch), so memory would grow with the set.
    return schedule.map(build, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(PREFETCH_BATCHES)


def make_dataset(images: np.ndarray | Sequence[np.ndarray], labels: np.ndarray | None, *, batch_size: int,
                 augment: AugmentConfig | None, shuffle: bool, seed: int, cache: bool = False,
                 drop_remainder: bool = False, channels: int | Sequence[int] | None = None,
                 epochs: int | None = None, first_epoch: int = 0) -> tf.data.Dataset:
    """Batches of (images, labels) from in-memory NHWC arrays, augmented in the graph.

    The arrays are held once as tensors; each epoch shuffles item indices and gathers every
    batch from them (no shuffle buffer of images), draws one transform per item and applies
    the batch's transforms in one resampling call (flips folded in: `transform_vectors`).

    Randomness: epoch e's order and transforms are a pure function of (`seed`, e's key).
    With `epochs=None` the dataset is one epoch per iteration and each iteration draws a new
    key (reshuffled every epoch; two datasets built with the same arguments yield the same
    batches epoch by epoch). With `epochs=E` one iteration yields epochs `first_epoch`..E-1
    back to back, epoch e keyed by `epoch_key(seed, e)`: feed it to `fit` with
    `steps_per_epoch`, and a run resumed at epoch k (`first_epoch=k`) sees exactly the
    batches the uninterrupted run saw from epoch k on.

    Args:
        images: [N, H, W, C] array, cast to float32, or a list of such arrays for a model with
            several inputs (a siamese pair); every array of an item gets the same transform.
            Lazy rows (`data.rows.ItemRows`, e.g. of a memory-mapped images.npy) are not held:
            each batch's items are read when it is built, the same values in the same batches.
        labels: [N, ...] array, or None to yield images only.
        batch_size: images per batch.
        augment: random augmentation, or None for none (validation/test).
        shuffle: reshuffle the examples every epoch.
        seed: integer seed of the shuffle and the augmentation.
        cache: accepted for compatibility; the arrays are resident tensors already.
        drop_remainder: drop the last incomplete batch.
        channels: output channels (per array for several): None keeps them; 3 repeats a grey
            channel after augmentation, in the same map (augmenting one channel, not three).
        epochs, first_epoch: see Randomness.
    """
    del cache  # resident already: nothing to cache
    several = isinstance(images, (list, tuple))
    arrays = [a if is_lazy(a) else np.asarray(a, dtype=np.float32) for a in (images if several else [images])]
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
    _check_epochs(epochs, first_epoch)
    counts = _channel_counts(channels, arrays, several)
    resident = [functools.partial(lazy_batch, array) if is_lazy(array) else tf.convert_to_tensor(array)
                for array in arrays]
    targets = None if labels is None else tf.convert_to_tensor(np.asarray(labels))
    sizes = _sizes(arrays)
    schedule = _schedule(len(arrays[0]), int(batch_size), shuffle=shuffle, drop_remainder=drop_remainder,
                         seed=seed, epochs=epochs, first_epoch=first_epoch, augment=augment, sizes=sizes)
    return _batches(schedule, lambda indices: [part(indices) if callable(part) else tf.gather(part, indices)
                                               for part in resident],
                    augment=augment, channels=counts, several=several, labels=targets, sizes=sizes)


def ordered_batches(images, labels: np.ndarray | None = None, *, batch_size: int) -> tf.data.Dataset:
    """The batches Keras' `predict` / `evaluate` cut from arrays, from `make_dataset`: in order,
    unaugmented, `batch_size` rows and the last batch partial, their number known to Keras (no
    end-of-data warning); lazy rows are read per batch, so a part is evaluated without being in memory."""
    dataset = make_dataset(images, labels, batch_size=batch_size, augment=None, shuffle=False, seed=0)
    return dataset.apply(tf.data.experimental.assert_cardinality(-(-len(images) // int(batch_size))))


def lazy_batch(rows: ItemRows, indices, batch_size: int | None = None) -> tf.Tensor:
    """The items of lazy rows at `indices` (a tensor), read with every recorded step (`ItemRows.read`)
    in a numpy_function: the batch step of a tf.data pipeline over a file that is never loaded whole."""
    batch = tf.numpy_function(rows.read, [indices], tf.float32, stateful=False)
    batch.set_shape((batch_size, *rows.shape[1:]))
    return batch


@keras.saving.register_keras_serializable(package="mammo_keras")
class RandomAugment(keras.layers.Layer):
    """ImageDataGenerator-equivalent augmentation as a layer, for the training step on the accelerator.

    In training (`training=True`) every batch gets one random transform per item, the same for
    every input of an item (a list of inputs: a siamese pair), drawn from the layer's
    `SeedGenerator(seed)`; at inference it passes the inputs through. The transforms are those
    of `augment_parts` (flips folded into the matrix, one XLA gather per batch), so the
    distribution equals the tf.data pipeline's; the draws come from the layer's own seed
    stream, not the dataset's. Computes in float32 under any precision policy.

    Args:
        augment: an AugmentConfig, or its fields as a dict (what `get_config` stores).
        seed: integer seed of the layer's draws.
    """

    def __init__(self, augment: AugmentConfig | dict, seed: int = 0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(augment, dict):
            augment = AugmentConfig(**{k: tuple(v) if k == "zoom_range" else v for k, v in augment.items()})
        if not isinstance(augment, AugmentConfig):
            raise ValueError(f"`augment` must be an AugmentConfig or its fields as a dict. Received: augment={augment!r}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise ValueError(f"`seed` must be an integer. Received: seed={seed!r}")
        self.augment, self.seed = augment, int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        several = isinstance(inputs, (list, tuple))
        parts = augment_parts(list(inputs) if several else [inputs], self.augment, self.seed_generator.next())
        return list(parts) if several else parts[0]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "augment": dataclasses.asdict(self.augment), "seed": self.seed}


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
    return dataset.map(_graph_only(lambda x, y: (x, y, batch_balancing_weights(y))),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def make_prepared_dataset(folder, rows: np.ndarray | None = None, labels: np.ndarray | None = None, *,
                          batch_size: int, augment: AugmentConfig | None, shuffle: bool, seed: int,
                          channels: int | None = None, scale: float = 1.0, cache: bool | str = False,
                          drop_remainder: bool = False, epochs: int | None = None,
                          first_epoch: int = 0) -> tf.data.Dataset:
    """Batches from a prepared folder (`mammo-keras data prepare`), read per batch, never loaded whole.

    Each batch's items are read from images.npy by position (plain reads, so resident memory
    stays at the batches in flight however large the set), scaled, augmented in the graph and
    prefetched. With the same arguments it yields exactly the batches `make_dataset` yields from
    the same arrays in memory (tests/data/test_pipeline_files.py): the same index schedule, the
    same transforms.

    Args:
        folder: the prepared folder (images.npy + index.csv).
        rows: which items (positions in images.npy), in order; default all.
        labels: targets for those rows (e.g. one-hot); default index.csv's `label`;
            `False` yields images only.
        channels: 1 or 3 output channels for grey items (3 repeats the grey channel after
            augmentation).
        scale: multiply pixel values (the configs' `input_scale`, e.g. 255).
        cache: False (read every batch from images.npy), True (read the rows into memory once)
            or a path prefix: the rows are written once to `<prefix>.npy` (e.g. on a local disk)
            and batches are read from there.
        epochs, first_epoch: as `make_dataset` (epochs numbered for resumable training).
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
    if len(rows) and (rows.min() < 0 or rows.max() >= len(images)):
        raise ValueError(f"`rows` must be positions in images.npy (0 to {len(images) - 1}). "
                         f"Received: rows from {int(rows.min())} to {int(rows.max())}")
    _check_epochs(epochs, first_epoch)
    item_shape = tuple(images.shape[1:])
    if len(item_shape) == 2:
        item_shape = (*item_shape, 1)
    if len(item_shape) != 3:
        raise ValueError("Prepared items must be (H, W) or (H, W, C) arrays to form NHWC batches. "
                         f"Received: item shape={tuple(images.shape[1:])}")
    (out_channels,) = _channel_counts(channels, [np.empty((0, *item_shape), np.float32)], False)
    if not (cache is False or cache is True or isinstance(cache, (str, Path))):
        raise ValueError(f"`cache` must be False, True or a path prefix. Received: cache={cache!r}")
    # Plain reads by position, never mapping the file (`ItemRows`: mapped pages a process touches
    # count in its resident memory, so an epoch over a mapped set would grow it with the set).
    source = ItemRows.open(Path(folder) / "images.npy")[rows]
    source = source.with_channels(1) if images.ndim == 3 else source  # grey items as (H, W, 1)
    if isinstance(cache, (str, Path)):
        from mammo_keras.fileio import atomic_save_npy

        source = ItemRows.open(atomic_save_npy(f"{cache}.npy", source.read(np.arange(len(rows)))))
    if cache is True:  # read once into memory, then gather batches as make_dataset does
        resident = tf.convert_to_tensor(source.read(np.arange(len(rows))) * np.float32(scale))

        def load(indices):
            return [tf.gather(resident, indices)]
    else:
        def load(indices):
            batch = lazy_batch(source, indices)
            return [batch * np.float32(scale) if scale != 1.0 else batch]
    sizes = [item_shape[:2]]
    schedule = _schedule(len(rows), int(batch_size), shuffle=shuffle, drop_remainder=drop_remainder, seed=seed,
                         epochs=epochs, first_epoch=first_epoch, augment=augment, sizes=sizes)
    targets = tf.convert_to_tensor(np.asarray(labels)) if with_labels else None
    return _batches(schedule, load, augment=augment, channels=[out_channels], several=False, labels=targets,
                    sizes=sizes)


__all__ = ["AugmentConfig", "FILL_MODES", "PARAM_KEYS", "PRESETS", "RandomAugment", "affine_matrices", "apply_transform",
           "augment_parts", "balance_batches", "batch_balancing_weights", "epoch_key", "make_dataset",
           "make_prepared_dataset", "ordered_batches", "preset", "random_augment", "sample_transform", "transform_vectors"]
