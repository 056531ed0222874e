"""Shallow CNNs trained from scratch: Jain & Levy's LevyNet and Coccomini's scratch CNN.

Reference: Jain & Levy, "DeepMammo", Sec. 4 (a); Coccomini et al., Ch. 4 (model 1.0.0.35 of
Scuccimarra's mammography-models, `candidate_1.0.0.35.py`, cut for 150x150 inputs).
"""
from __future__ import annotations

import os
from pathlib import Path

import keras
from keras import layers

from mammo_keras.errors import DataError
from mammo_keras.models.layers import GreyToRGB
from mammo_keras.models.registry import register

# Caffe's "xavier" filler (default variance_norm FAN_IN): uniform in +-sqrt(3 / fan_in).
CAFFE_XAVIER = "lecun_uniform"

# Coccomini M1 = 1.0.0.35 without its last conv-512 + pool (150x150 instead of 299x299 inputs):
# (filters per conv, pool size) per block; the first conv has stride 2, the first pool is 3x3/2.
COCCOMINI_BLOCKS: tuple[tuple[tuple[int, ...], int], ...] = (
    ((32, 32, 32), 3),
    ((64, 64), 2),
    ((128, 128), 2),
    ((256,), 2),
)
COCCOMINI_VARIANTS = ("M1", "M2")


def output_layer(num_classes: int, name: str = "predictions", **kwargs) -> layers.Dense:
    """One sigmoid unit for `num_classes=1` (binary cross-entropy), else a softmax layer."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive integer. Received: num_classes={num_classes!r}")
    activation = "sigmoid" if num_classes == 1 else "softmax"
    return layers.Dense(num_classes, activation=activation, name=name, **kwargs)


def load_trained_weights(model: keras.Model, weights: str | os.PathLike | None) -> keras.Model:
    """Load weights saved from this architecture; scratch networks have no ImageNet weights."""
    if weights is None:
        return model
    if not isinstance(weights, (str, os.PathLike)) or weights == "imagenet":
        raise ValueError(f"{model.name} is trained from scratch: `weights` must be None or the path "
                         f"of a weights file saved from this model. Received: weights={weights!r}")
    if not Path(weights).is_file():
        raise DataError(weights, f"weights file for {model.name} not found")
    model.load_weights(str(weights))
    return model


@register("jain_levy_levynet", paper="jain_levy", task="roi")
def jain_levy_levynet(input_shape=(224, 224, 3), num_classes=2, *, weights=None, name=None
                      ) -> keras.Model:
    """LevyNet: three conv-BN-ReLU-maxpool stages (32, 32, 64 filters), then FC 128, 64, softmax.

    Unstated details, decided here: 3x3 convs with stride 1 and no padding (Caffe's default),
    2x2/2 max pools, no dropout, Caffe "xavier" initialisation (= `lecun_uniform`), 224x224x3
    inputs (the paper's augmented crops; a grey input is replicated to 3 channels in the model).

    Args:
        weights: None or the path of a weights file saved from this model.

    Reference: Jain & Levy, "DeepMammo", Sec. 4 (a) and Table 2 (row "LevyNet").
    """
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    # The paper replicates the grey image across 3 channels for every network.
    x = GreyToRGB(name="grey_to_rgb")(inputs) if input_shape[-1] == 1 else inputs
    for index, filters in enumerate((32, 32, 64), start=1):
        x = layers.Conv2D(filters, 3, kernel_initializer=CAFFE_XAVIER, name=f"conv{index}")(x)
        x = layers.BatchNormalization(name=f"conv{index}_bn")(x)
        x = layers.ReLU(name=f"conv{index}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", kernel_initializer=CAFFE_XAVIER, name="fc1")(x)
    x = layers.Dense(64, activation="relu", kernel_initializer=CAFFE_XAVIER, name="fc2")(x)
    outputs = output_layer(num_classes, kernel_initializer=CAFFE_XAVIER)(x)
    model = keras.Model(inputs, outputs, name=name or "levynet")
    return load_trained_weights(model, weights)


@register("coccomini_scratch_cnn", paper="coccomini2021", task="roi")
def coccomini_scratch_cnn(input_shape=(150, 150, 1), num_classes=1, *, weights=None, name=None,
                          variant: str = "M1", conv_dropout: float = 0.1, fc_dropout: float = 0.5,
                          fc_units: int = 2048) -> keras.Model:
    """Coccomini's scratch CNN: a VGG-like net of 3x3 conv-BN-ReLU blocks and a 2x2048 FC head.

    Blocks (all "same" padding): conv 32/2, 32, 32, maxpool 3x3/2; conv 64 x2, maxpool 2;
    conv 128 x2, maxpool 2; conv 256, maxpool 2; each pool followed by dropout 0.1. Then
    flatten, dropout 0.5, [FC 2048, BN, ReLU, dropout 0.5] x2, output. This is 1.0.0.35 without
    its last conv-512 + pool, as the report says for 150x150 inputs.

    Args:
        num_classes: 1 gives one sigmoid unit (binary cross-entropy, the report's convention);
            more gives a softmax.
        weights: None or the path of a weights file saved from this model.
        variant: "M1" (no weight penalty) or "M2" (the "regularized model": L1 1e-5 and
            L2 1e-4 on every kernel; the report's "1e^5, 1e^4" read as negative exponents).
        conv_dropout: dropout after each pool (0.1 in 1.0.0.35).
        fc_dropout: dropout before and after each FC layer (0.5 in 1.0.0.35).
        fc_units: width of the two FC layers (2048 in 1.0.0.35).

    Reference: Coccomini et al., Ch. 4 (M1, M2) and Tables 4.1/4.2.
    """
    if variant not in COCCOMINI_VARIANTS:
        raise ValueError(f"`variant` must be one of {COCCOMINI_VARIANTS}. Received: variant={variant!r}")
    reg = keras.regularizers.L1L2(l1=1e-5, l2=1e-4) if variant == "M2" else None
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = inputs
    for block, (filter_counts, pool_size) in enumerate(COCCOMINI_BLOCKS, start=1):
        for index, filters in enumerate(filter_counts, start=1):
            strides = 2 if (block, index) == (1, 1) else 1
            prefix = f"block{block}_conv{index}"
            x = layers.Conv2D(filters, 3, strides=strides, padding="same", kernel_regularizer=reg,
                              name=prefix)(x)
            # 1.0.0.35 uses epsilon 1e-8; momentum 0.99 in conv layers, 0.9 in FC layers.
            x = layers.BatchNormalization(momentum=0.99, epsilon=1e-8, name=f"{prefix}_bn")(x)
            x = layers.ReLU(name=f"{prefix}_relu")(x)
        x = layers.MaxPooling2D(pool_size, strides=2, padding="same", name=f"block{block}_pool")(x)
        x = layers.Dropout(conv_dropout, name=f"block{block}_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(fc_dropout, name="flatten_dropout")(x)
    for index in (1, 2):
        x = layers.Dense(fc_units, kernel_regularizer=reg, name=f"fc{index}")(x)
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-8, name=f"fc{index}_bn")(x)
        x = layers.ReLU(name=f"fc{index}_relu")(x)
        x = layers.Dropout(fc_dropout, name=f"fc{index}_dropout")(x)
    outputs = output_layer(num_classes, kernel_regularizer=reg)(x)
    model = keras.Model(inputs, outputs, name=name or f"coccomini_scratch_{variant.lower()}")
    return load_trained_weights(model, weights)
