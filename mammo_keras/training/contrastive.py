"""Self-supervised pretraining (SimCLR, Chen et al. 2020) of a classifier's conv encoder, per part.

The offline stand-in for ImageNet weights: before a part (fold) trains, its encoder (the layers
up to `encoder_output`) learns from the part's own training items without their labels, by
the NT-Xent contrastive objective: two random views of each item (crop and resize, the eight
flips / transposes, brightness and contrast, noise) must pick each other out of the batch's
2B views. A projection MLP on the pooled encoder features carries the loss and is dropped
afterwards; the classifier keeps the pretrained encoder (its layers are shared, not copied) and
trains through its stages as usual.

Only the items the part trains on are seen (never its validation or test patients), so the
pretraining adds no leak between parts; its cost is one pretraining per part.

    spec = Pretraining(epochs=20)
    log = pretrain(model, x_fit, spec, seed=seed, log_csv=fold_dir / "pretrain_log.csv")
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mammo_keras.data.rows import is_lazy
from mammo_keras.fileio import atomic_write_text

if TYPE_CHECKING:
    import keras

METHODS = ("simclr",)
AUTO = "auto"  # encoder_output: the layer feeding the model's first Flatten / global pooling


@dataclasses.dataclass(frozen=True)
class Pretraining:
    """A row's self-supervised pretraining, as data (the plan prints it; `pretrain` runs it).

    method: "simclr". epochs / batch_size (items; 2 x batch_size views per step, the last
    partial batch dropped) / learning_rate (Adam) / temperature (NT-Xent's tau; SimCLR: 0.1-0.5).
    encoder_output: the last encoder layer's name, or "auto" (the layer feeding the model's first
    Flatten or global pooling). projection: the MLP's widths (hidden ..., output), after global
    average pooling. crop_area / aspect: the ranges of the random crop's share of the item's area
    and of its width / height (log-uniform), a side longer than the item cut to it, the crop
    resized back to the item size; brightness / contrast: the jitter's half-ranges
    (an added offset, a factor around the item mean); noise: the Gaussian noise's largest sigma
    (drawn per view), all on the items' own scale. centre: subtract each view's own mean last (for
    a task whose items are centred per item, as Chougrad's GCN ROIs, pretrained on items that are
    not). unlabelled: None (the part's own training
    items) or {task, task_options}: that task's items of the same dataset (`prepare` tasks; e.g.
    Shen's S10 patches for a lesion-ROI task), those of every patient outside the part's
    validation and test parts (`unlabelled_rows`).
    """

    method: str = "simclr"
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    temperature: float = 0.2
    encoder_output: str = AUTO
    projection: tuple[int, ...] = (256, 128)
    crop_area: tuple[float, float] = (0.3, 1.0)
    aspect: tuple[float, float] = (0.75, 4 / 3)
    brightness: float = 0.1
    contrast: float = 0.3
    noise: float = 0.03
    centre: bool = False
    unlabelled: dict | None = None

    def __post_init__(self):
        if self.unlabelled is not None:
            if not isinstance(self.unlabelled, dict) or "task" not in self.unlabelled:
                raise ValueError("pretrain `unlabelled` is {task: <prepare task>, task_options: {...}}: the items of "
                                 f"another task of the same dataset. Received: unlabelled={self.unlabelled!r}")
            unknown = sorted(set(self.unlabelled) - {"task", "task_options"})
            if unknown:
                raise ValueError(f"pretrain `unlabelled`: unknown keys {unknown}. Valid keys: ['task', 'task_options']")
        if self.method not in METHODS:
            raise ValueError(f"pretrain `method` must be one of {METHODS}. Received: method={self.method!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"pretrain `{name}` must be a positive integer. Received: {name}={value!r}")
        if self.batch_size < 2:
            raise ValueError(f"pretrain `batch_size` must be at least 2 (the other items are the negatives). "
                             f"Received: batch_size={self.batch_size}")
        for name in ("learning_rate", "temperature"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"pretrain `{name}` must be positive. Received: {name}={getattr(self, name)!r}")
        low, high = self.crop_area
        if not 0 < low <= high <= 1:
            raise ValueError(f"pretrain `crop_area` must be [low, high] with 0 < low <= high <= 1. "
                             f"Received: crop_area={list(self.crop_area)}")
        if not 0 < self.aspect[0] <= self.aspect[1]:
            raise ValueError(f"pretrain `aspect` must be [low, high] with 0 < low <= high. "
                             f"Received: aspect={list(self.aspect)}")
        if not self.projection or any(int(units) < 1 for units in self.projection):
            raise ValueError(f"pretrain `projection` must list positive widths. Received: {list(self.projection)}")

    @classmethod
    def from_config(cls, raw: dict | None, where: str = "pretrain") -> Pretraining | None:
        """From a row's `pretrain:` mapping (None: no pretraining), naming unknown keys."""
        if not raw:
            return None
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - fields)
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}. Valid keys: {sorted(fields)}")
        values = dict(raw)
        for key in ("projection", "crop_area", "aspect"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def scaled(self, factor: float) -> Pretraining:
        """Epochs times `factor` (a profile's epoch_scale, as a stage's), at least one."""
        return dataclasses.replace(self, epochs=max(1, round(self.epochs * factor)))


def unlabelled_rows(unlabelled_index: pd.DataFrame, index: pd.DataFrame, held_out_rows: np.ndarray,
                    where: str = "the unlabelled items") -> np.ndarray:
    """Positions of the unlabelled items a part may pretrain on: those of patients outside its held-out
    (validation and test) rows. The patient ids must be the dataset's own (another task of the same
    reader): if none of them is a patient of `index`, the filter could not hold anyone out, so that is
    an error, not a silent leak."""
    patients = unlabelled_index["patient_id"].astype(str)
    known = set(index["patient_id"].astype(str))
    if not patients.isin(known).any():
        raise ValueError(f"{where}: none of their patient ids is a patient of the items the rows train on "
                         f"(e.g. {patients.iloc[0]!r} vs {min(known)!r}): they cannot be held out by part")
    held_out = set(index["patient_id"].iloc[held_out_rows].astype(str))
    return np.flatnonzero(~patients.isin(held_out).to_numpy())


def encoder_layer_name(model: keras.Model, spec: Pretraining) -> str:
    """The name of the encoder's last layer: `spec.encoder_output`, checked, or the "auto" choice."""
    import keras

    names = [layer.name for layer in model.layers]
    if spec.encoder_output != AUTO:
        if spec.encoder_output not in names:
            raise ValueError(f"pretrain `encoder_output` {spec.encoder_output!r} is no layer of {model.name}. "
                             f"Layers: {names}")
        return spec.encoder_output
    heads = (keras.layers.Flatten, keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)
    for layer in model.layers:
        if isinstance(layer, heads):
            source = layer.input
            return source._keras_history[0].name  # noqa: SLF001 (Keras' record of the producing layer)
    raise ValueError(f"pretrain `encoder_output: auto` needs a Flatten or global pooling layer in {model.name}; "
                     f"name the encoder's last layer instead. Layers: {names}")


def encoder_layers(model: keras.Model, spec: Pretraining) -> list:
    """The layers the pretraining trains: every weighted layer the encoder output depends on."""
    import keras

    encoder = keras.Model(model.inputs, model.get_layer(encoder_layer_name(model, spec)).output)
    return [layer for layer in encoder.layers if layer.weights]


def contrastive_model(model: keras.Model, spec: Pretraining) -> keras.Model:
    """The encoder of `model` (its layers, shared) with global pooling and the projection MLP."""
    import keras

    layers = keras.layers
    features = model.get_layer(encoder_layer_name(model, spec)).output
    x = layers.GlobalAveragePooling2D(name="simclr_pool")(features) if len(features.shape) == 4 else features
    *hidden, last = (int(units) for units in spec.projection)
    for index, units in enumerate(hidden, start=1):
        x = layers.Dense(units, name=f"simclr_projection{index}")(x)
        x = layers.BatchNormalization(name=f"simclr_projection{index}_bn")(x)
        x = layers.ReLU(name=f"simclr_projection{index}_relu")(x)
    outputs = layers.Dense(last, name="simclr_projection_out")(x)
    return keras.Model(model.inputs, outputs, name=f"{model.name}_simclr")


def nt_xent(projections, temperature: float):
    """SimCLR's NT-Xent loss of 2B projections (views i and i+B are a pair) and the share of views
    whose most similar other view is their pair (a learning signal to log)."""
    import tensorflow as tf

    z = tf.math.l2_normalize(tf.cast(projections, tf.float32), axis=1)
    n = tf.shape(z)[0]
    half = n // 2
    logits = tf.matmul(z, z, transpose_b=True) / temperature
    logits = logits - tf.eye(n) * 1e9  # a view is not its own negative
    pairs = tf.concat([tf.range(half, n), tf.range(0, half)], axis=0)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=pairs, logits=logits))
    found = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), pairs), tf.float32))
    return loss, found


def random_views(images, spec: Pretraining, seed):
    """One random view per item of an (B, H, W, C) batch, from stateless draws of `seed` (a [2] int32
    tensor): a crop of `crop_area` of the item, flipped or not on each axis (the box's corners
    swapped), resized back; transposed or not (square items); contrast, brightness, noise."""
    import tensorflow as tf

    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    seeds = tf.random.experimental.stateless_split(seed, 8)

    def uniform(k, low, high, shape=None):
        return tf.random.stateless_uniform(shape or [batch], seeds[k], low, high)

    low, high = spec.crop_area
    area = uniform(0, low, high)
    aspect = tf.exp(uniform(1, float(np.log(spec.aspect[0])), float(np.log(spec.aspect[1]))))
    box_h = tf.minimum(1.0, tf.sqrt(area / aspect))
    box_w = tf.minimum(1.0, tf.sqrt(area * aspect))
    top = uniform(2, 0.0, 1.0) * (1.0 - box_h)
    left = uniform(3, 0.0, 1.0) * (1.0 - box_w)
    flips = tf.cast(uniform(4, 0.0, 1.0, [batch, 2]) < 0.5, tf.float32)
    y1, y2 = top + flips[:, 0] * box_h, top + (1 - flips[:, 0]) * box_h
    x1, x2 = left + flips[:, 1] * box_w, left + (1 - flips[:, 1]) * box_w
    boxes = tf.stack([y1, x1, y2, x2], axis=1)  # normalised; crop_and_resize samples [0, 1] inclusive
    views = tf.image.crop_and_resize(images, boxes, tf.range(batch), (height, width))
    if height == width:
        transpose = uniform(5, 0.0, 1.0) < 0.5
        views = tf.where(transpose[:, None, None, None], tf.transpose(views, [0, 2, 1, 3]), views)
    draws = tf.random.stateless_uniform([batch, 3], seeds[6], -1.0, 1.0)
    mean = tf.reduce_mean(views, axis=[1, 2, 3], keepdims=True)
    factor = (1.0 + spec.contrast * draws[:, 0])[:, None, None, None]
    offset = (spec.brightness * draws[:, 1])[:, None, None, None]
    sigma = (spec.noise * (draws[:, 2] + 1.0) / 2.0)[:, None, None, None]
    noise = tf.random.stateless_normal(tf.shape(views), seeds[7])
    views = (views - mean) * factor + mean + offset + sigma * noise
    return views - tf.reduce_mean(views, axis=[1, 2, 3], keepdims=True) if spec.centre else views


def _batch(x, positions: np.ndarray) -> np.ndarray:
    """Items at `positions` as (B, H, W, C) float32: lazy rows read per batch, arrays sliced."""
    items = x.read(positions) if is_lazy(x) else np.asarray(x[positions], dtype=np.float32)
    return items[..., None] if items.ndim == 3 else items


def pretrain(model: keras.Model, x, spec: Pretraining, *, seed: int, log_csv: str | Path | None = None,
             progress=None) -> pd.DataFrame:
    """Train `model`'s encoder on the items `x` (no labels) by `spec`; returns the per-epoch log.

    `x`: (N, H, W) or (N, H, W, C) items as the model's input takes them (an array or lazy
    `ItemRows`, read one batch at a time). Every step draws its views from (seed, epoch, step) and
    each epoch's order from (seed, epoch): the same seed gives the same weights. The log has
    epoch, items (N), loss (NT-Xent), pair_accuracy (the share of views whose nearest other view is their
    pair; 1 / (2B - 1) at chance) and seconds.
    """
    import keras
    import tensorflow as tf

    n = len(x)
    batch_size = min(spec.batch_size, n)
    if n < 2:
        raise ValueError(f"pretraining needs at least 2 items (the negatives of each pair). Received: {n}")
    if len(model.inputs) != 1:
        raise ValueError(f"pretraining takes a model with one image input; {model.name} has {len(model.inputs)} "
                         "(a siamese network's parts would need paired views)")
    if tf.distribute.get_strategy().num_replicas_in_sync > 1:
        raise ValueError("pretraining runs on one device: leave --strategy at its default for rows with `pretrain`")
    ssl = contrastive_model(model, spec)
    optimizer = keras.optimizers.Adam(spec.learning_rate)
    if keras.config.dtype_policy().name == "mixed_float16":  # float16 gradients need loss scaling
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(ssl.trainable_variables)
    channels = int(model.inputs[0].shape[-1])

    @tf.function(reduce_retracing=True)
    def step(images, step_seed):
        images = tf.repeat(images, channels, axis=-1) if images.shape[-1] == 1 and channels == 3 else images
        seeds = tf.random.experimental.stateless_split(step_seed, 2)
        views = tf.concat([random_views(images, spec, seeds[0]), random_views(images, spec, seeds[1])], axis=0)
        with tf.GradientTape() as tape:
            loss, found = nt_xent(ssl(views, training=True), spec.temperature)
            scaled = optimizer.scale_loss(loss)
        variables = ssl.trainable_variables
        optimizer.apply(tape.gradient(scaled, variables), variables)  # a LossScaleOptimizer unscales here
        return loss, found

    rows = []
    steps = n // batch_size
    for epoch in range(spec.epochs):
        started = time.perf_counter()
        order = np.random.default_rng([seed, epoch]).permutation(n)
        losses, founds = [], []
        for index in range(steps):
            positions = order[index * batch_size:(index + 1) * batch_size]
            loss, found = step(tf.constant(_batch(x, positions)),
                               tf.constant([seed, epoch * steps + index], dtype=tf.int32))
            losses.append(float(loss))
            founds.append(float(found))
        rows.append({"epoch": epoch + 1, "items": n, "loss": float(np.mean(losses)),
                     "pair_accuracy": float(np.mean(founds)), "chance": 1.0 / (2 * batch_size - 1), "seconds": round(time.perf_counter() - started, 2)})
        if progress:
            progress(f"pretrain epoch {epoch + 1}/{spec.epochs}: NT-Xent {rows[-1]['loss']:.3f}, "
                     f"pairs found {rows[-1]['pair_accuracy']:.1%}")
        if log_csv is not None:
            atomic_write_text(Path(log_csv), pd.DataFrame(rows).to_csv(index=False))
    return pd.DataFrame(rows)


def items_text(spec: Pretraining) -> str:
    """What a part pretrains on, in the plan's words."""
    if spec.unlabelled is None:
        return ("each part's training items (its fit patients only: never its validation or test patients), "
                "labels unused, one pretraining per part")
    options = spec.unlabelled.get("task_options") or {}
    return (f"the `{spec.unlabelled['task']}` items{' (' + ', '.join(f'{k}={v}' for k, v in options.items()) + ')' if options else ''} "
            "of the same dataset, of every patient outside the part's validation and test parts, labels unused, "
            "one pretraining per part")


def plan(model: keras.Model, spec: Pretraining) -> dict:
    """The pretraining's plan entry: what it trains, on what, how long."""
    n_items = items_text(spec)
    layers = encoder_layers(model, spec)
    params = int(sum(int(np.prod(w.shape)) for layer in layers for w in layer.trainable_weights))
    return {"method": spec.method, "objective": f"NT-Xent (temperature {spec.temperature:g}) over 2 x batch views",
            "temperature": spec.temperature, "unlabelled_items": n_items, "epochs": spec.epochs, "batch_size": spec.batch_size,
            "optimizer": {"name": "adam", "learning_rate": spec.learning_rate},
            "encoder_output": encoder_layer_name(model, spec), "encoder_layers": len(layers),
            "encoder_params": params,
            "projection": f"global average pooling, MLP {list(spec.projection)} (dropped after pretraining)",
            "views": {"crop_area": list(spec.crop_area), "aspect": [round(v, 4) for v in spec.aspect], "flips": "both axes",
                      "transpose": "square items", "brightness": spec.brightness, "contrast": spec.contrast,
                      "noise_sigma_max": spec.noise, "centred": spec.centre}}
