"""Where a classifier looks: Grad-CAM, input-gradient saliency and colour overlays.

The class score defaults to the predicted class of each image for a softmax output,
and to the single unit of a sigmoid output (the malignant probability).

Reference: Selvaraju et al. 2017, "Grad-CAM" (ICCV), Sec. 3; Simonyan et al. 2014,
"Deep inside convolutional networks", Sec. 3 (image-specific saliency).
"""
from __future__ import annotations

import io
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from mammo_keras.fileio import atomic_write_bytes
from mammo_keras.models.inputs import as_model_input


def _output_rank(layer: keras.layers.Layer) -> int | None:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):  # a layer called on several inputs has no single output
        return None


def feature_layers(model: keras.Model) -> list[str]:
    """Names of the layers whose output is a 4-D feature map (N, H, W, C), in model order."""
    return [layer.name for layer in model.layers
            if _output_rank(layer) == 4 and not isinstance(layer, keras.layers.InputLayer)]


def _target_layer(model: keras.Model, layer_name: str | None) -> keras.layers.Layer:
    valid = feature_layers(model)
    if layer_name is None:
        if not valid:
            raise ValueError(f"Grad-CAM needs a layer with a 4-D output; model {model.name!r} has none.")
        layer_name = valid[-1]
    if layer_name not in valid:
        raise ValueError(f"layer_name must name a layer of {model.name!r} with a 4-D output, one of "
                         f"{valid}. Received: layer_name={layer_name!r}")
    return model.get_layer(layer_name)


def _class_scores(outputs: tf.Tensor, class_index: int | None) -> tf.Tensor:
    """One score per image: column `class_index`, else the argmax (softmax) or the single unit."""
    units = outputs.shape[-1]
    if class_index is None:
        index = tf.zeros(tf.shape(outputs)[0], tf.int32) if units == 1 else tf.argmax(outputs, -1, tf.int32)
    elif 0 <= class_index < units:
        index = tf.fill([tf.shape(outputs)[0]], class_index)
    else:
        raise ValueError(f"class_index must lie in [0, {units}). Received: class_index={class_index}")
    return tf.gather(outputs, index, axis=1, batch_dims=1)


def _normalise_by_max(maps: tf.Tensor) -> np.ndarray:
    """Divide each map by its maximum; an all-zero map stays zero."""
    peak = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(maps, peak).numpy().astype(np.float32)


def grad_cam(model: keras.Model, images: np.ndarray, *, layer_name: str | None = None,
             class_index: int | None = None) -> np.ndarray:
    """Grad-CAM heatmaps at the input resolution.

    Args:
        model: a functional Keras classifier with one image input.
        images: (N, H, W) grey or (N, H, W, C) arrays, as the model takes them.
        layer_name: the feature layer to explain; default the last layer with a 4-D output.
        class_index: the class to explain; default as in the module docstring.

    Returns:
        (N, H, W) float32 maps in [0, 1], each divided by its maximum.
    """
    layer = _target_layer(model, layer_name)
    probe = keras.Model(model.inputs, [layer.output, model.outputs[0]])
    inputs = tf.convert_to_tensor(np.asarray(as_model_input(images, model), np.float32))
    with tf.GradientTape() as tape:
        features, outputs = probe(inputs, training=False)
        scores = _class_scores(outputs, class_index)
    gradients = tape.gradient(scores, features)
    channel_weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    maps = tf.nn.relu(tf.reduce_sum(channel_weights * features, axis=-1, keepdims=True))
    maps = tf.image.resize(maps, inputs.shape[1:3], method="bilinear")[..., 0]
    return _normalise_by_max(maps)


def saliency_map(model: keras.Model, images: np.ndarray, *, class_index: int | None = None) -> np.ndarray:
    """|d score / d input|, maximum over channels, each map divided by its maximum: (N, H, W) in [0, 1]."""
    inputs = tf.convert_to_tensor(np.asarray(as_model_input(images, model), np.float32))
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        scores = _class_scores(model(inputs, training=False), class_index)
    gradients = tape.gradient(scores, inputs)
    return _normalise_by_max(tf.reduce_max(tf.abs(gradients), axis=-1))


def _stretch(image: np.ndarray) -> np.ndarray:
    """Min-max contrast stretch to [0, 1]; a constant image becomes zeros."""
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def overlay(image_2d: np.ndarray, heatmap: np.ndarray, out_png: str | Path | None = None, *,
            alpha: float = 0.4) -> np.ndarray:
    """A heatmap in the jet colormap blended over the contrast-stretched grey image.

    Args:
        image_2d: (H, W) grey image.
        heatmap: 2-D map in [0, 1]; resized bilinearly to (H, W) when its size differs.
        out_png: when given, the overlay is also written there as a PNG.
        alpha: weight of the heatmap colours, in [0, 1].

    Returns:
        (H, W, 3) uint8 RGB image.
    """
    from matplotlib import colormaps

    image = np.asarray(image_2d, dtype=np.float64)
    heat = np.asarray(heatmap, dtype=np.float32)
    if image.ndim != 2 or heat.ndim != 2:
        raise ValueError(f"overlay takes a 2-D image and a 2-D heatmap. "
                         f"Received: image_2d.shape={image.shape}, heatmap.shape={heat.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1]. Received: alpha={alpha}")
    if heat.shape != image.shape:
        heat = np.asarray(Image.fromarray(heat).resize(image.shape[::-1], Image.BILINEAR))
    colours = colormaps["jet"](np.clip(heat, 0.0, 1.0))[..., :3]
    blend = (1.0 - alpha) * _stretch(image)[..., None] + alpha * colours
    rgb = np.round(255.0 * blend).astype(np.uint8)
    if out_png is not None:
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="PNG")
        atomic_write_bytes(out_png, buffer.getvalue())
    return rgb


def grad_cam_sheet(model: keras.Model, images: np.ndarray, predictions, out_png: str | Path, *,
                   per_class: int = 2, layer_name: str | None = None) -> Path | None:
    """One PNG row of Grad-CAM overlays: the `per_class` highest-scoring test items of each label.

    Explains the positive score (the malignant class of a binary model). Returns None, writing
    nothing, when the model has no single image input or no 4-D feature layer to explain.

    Args:
        images: the test items, (N, H, W) or (N, H, W, C), in the order of `predictions`.
        predictions: a table with `label` and `score` columns, one row per image.
    """
    if len(model.inputs) != 1 or not feature_layers(model):
        return None
    labels = np.asarray(predictions["label"])
    scores = np.asarray(predictions["score"], dtype=np.float64)
    chosen = [int(i) for label in np.unique(labels)
              for i in np.flatnonzero(labels == label)[np.argsort(-scores[labels == label])][:per_class]]
    if not chosen:
        return None
    positive = 1 if model.output_shape[-1] > 1 else None
    maps = grad_cam(model, images[chosen], layer_name=layer_name, class_index=positive)
    tiles = [overlay(np.asarray(images[i]).reshape(images.shape[1], images.shape[2], -1).mean(axis=-1), heat)
             for i, heat in zip(chosen, maps)]
    sheet = np.concatenate(tiles, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(sheet).save(buffer, format="PNG")
    atomic_write_bytes(out_png, buffer.getvalue())
    return Path(out_png)
