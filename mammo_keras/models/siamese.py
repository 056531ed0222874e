"""Coccomini's baseline-patch siamese network, and the pretrained feature extractor it shares.

One encoder (shared weights) reads the baseline patch (healthy tissue beside the lesion) and the
abnormality patch; the signed difference of the two encodings (baseline - abnormality, scaled by
1/65535 as in the report's Code 6.3) feeds a dense-256 layer and a sigmoid output.

    model = coccomini_siamese(encoder="vgg16", weights="imagenet", fine_tune="last_block")
    model.predict([baseline_patches, abnormality_patches])

Reference: Coccomini et al., Ch. 6 (Fig. 6.1, Codes 6.2/6.3, Tables 6.1/6.2).
"""
from __future__ import annotations

import keras
from keras import layers

from mammo_keras.models.backbones import SCALING_MODE, backbone, set_fine_tuning
from mammo_keras.models.layers import GreyToRGB, ImageNetScaling
from mammo_keras.models.registry import register
from mammo_keras.models.small_cnns import load_trained_weights, output_layer

# The report fine-tunes "the last convolutional layer"; read as the last block (decision).
FINE_TUNING = {"none": "0FT", "last_block": "1FT", "all": "AllFT"}
PRETRAINED = ("vgg16", "resnet50", "inceptionv3")
ENCODERS = ("scratch",) + PRETRAINED
POOLINGS = ("flatten", "avg")
INPUT_SCALINGS = ("imagenet", "none")
FEATURE_SCALE = 1.0 / 65535.0
# Scratch encoder: "three convolutional layers, a max pooling, three convolutional layers, a max
# pooling"; the report gives no widths, 32 and 64 filters of 3x3 are chosen here.
SCRATCH_FILTERS = (32, 64)


def pretrained_features(inputs, family: str, *, weights=None, pooling: str = "flatten",
                        input_scaling: str = "imagenet", pooling_name: str = "features"):
    """Grey-to-RGB, ImageNet input scaling, a keras.applications backbone and a pooling layer.

    The layers are added flat on `inputs` (with the applications' own names, so fine-tuning
    selects blocks by name).

    Args:
        inputs: a Keras tensor (batch, height, width, 1 or 3); values in [0, 255] when
            `input_scaling="imagenet"`.
        family: "vgg16", "resnet50" or "inceptionv3".
        weights: None, "imagenet" or the path of a local backbone weights file.
        pooling: "flatten" (the report's Keras-book style head) or "avg" (global average).
        input_scaling: "imagenet" (the backbone's `preprocess_input` as a layer) or "none".
        pooling_name: name of the pooling layer.

    Returns:
        The pooled feature tensor.
    """
    if family not in PRETRAINED:
        raise ValueError(f"`family` must be one of {PRETRAINED}. Received: family={family!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}")
    if input_scaling not in INPUT_SCALINGS:
        raise ValueError(f"`input_scaling` must be one of {INPUT_SCALINGS}. "
                         f"Received: input_scaling={input_scaling!r}")
    channels = inputs.shape[-1]
    if channels not in (1, 3):
        raise ValueError("Inputs must have 1 (grey) or 3 channels. "
                         f"Received: input shape {tuple(inputs.shape[1:])}")
    x = GreyToRGB(name="grey_to_rgb")(inputs) if channels == 1 else inputs
    if input_scaling == "imagenet":
        x = ImageNetScaling(SCALING_MODE[family], name="imagenet_scaling")(x)
    base = backbone(family, (*inputs.shape[1:3], 3), weights=weights, input_tensor=x)
    pool = layers.Flatten if pooling == "flatten" else layers.GlobalAveragePooling2D
    return pool(name=pooling_name)(base.output)


def fine_tuning_strategy(fine_tune: str) -> str:
    """The backbone strategy for the report's fine-tuning option ("none", "last_block", "all")."""
    if fine_tune not in FINE_TUNING:
        raise ValueError(f"`fine_tune` must be one of {tuple(FINE_TUNING)}. "
                         f"Received: fine_tune={fine_tune!r}")
    return FINE_TUNING[fine_tune]


def siamese_encoder(input_shape, encoder: str = "scratch", *, weights=None, fine_tune: str | None = None,
                    pooling: str = "flatten", input_scaling: str = "imagenet") -> keras.Model:
    """The shared encoder of the siamese network, as a model named "encoder"."""
    if encoder not in ENCODERS:
        raise ValueError(f"`encoder` must be one of {ENCODERS}. Received: encoder={encoder!r}")
    inputs = keras.Input(shape=tuple(input_shape), name="patch")
    if encoder == "scratch":
        if fine_tune is not None or weights is not None:
            raise ValueError("The scratch encoder has no pretrained weights to fine-tune: leave "
                             f"`fine_tune` and `weights` as None. Received: fine_tune={fine_tune!r}, "
                             f"weights={weights!r}")
        x = inputs
        for block, filters in enumerate(SCRATCH_FILTERS, start=1):
            for index in range(1, 4):
                x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                                  name=f"block{block}_conv{index}")(x)
            x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        pool = layers.Flatten if pooling == "flatten" else layers.GlobalAveragePooling2D
        return keras.Model(inputs, pool(name="encoder_pool")(x), name="encoder")
    features = pretrained_features(inputs, encoder, weights=weights, pooling=pooling,
                                   input_scaling=input_scaling, pooling_name="encoder_pool")
    model = keras.Model(inputs, features, name="encoder")
    return set_fine_tuning(model, fine_tuning_strategy(fine_tune or "none"), family=encoder)


@register("coccomini_siamese", paper="coccomini2021", task="roi_pair")
def coccomini_siamese(input_shape=(150, 150, 1), num_classes=1, *, weights=None, name=None,
                      encoder: str = "scratch", fine_tune: str | None = None, hidden: int = 256,
                      pooling: str = "flatten", input_scaling: str = "imagenet",
                      feature_scale: float = FEATURE_SCALE) -> keras.Model:
    """Siamese baseline/abnormality network: shared encoder, signed difference, dense-256, sigmoid.

    Inputs are `[baseline, abnormality]` patches of `input_shape`. The layer "difference" is
    encoder(baseline) - encoder(abnormality); "features" rescales it by `feature_scale`.

    Args:
        num_classes: 1 (sigmoid, binary cross-entropy as in the report) or more (softmax).
        weights: pretrained encoders: None, "imagenet" or a backbone weights path; scratch
            encoder: None or the path of weights saved from this whole model.
        encoder: "scratch", "vgg16", "resnet50" or "inceptionv3" (the report has no Inception).
        fine_tune: pretrained encoders only: "none" (default, frozen backbone), "last_block"
            or "all".
        hidden: width of the ReLU dense layer (256).
        pooling: "flatten" or "avg" before the difference (unstated; flatten chosen).
        input_scaling: "imagenet" (inputs in [0, 255]) or "none", pretrained encoders only.
        feature_scale: factor on the difference (1/65535 in the report's Code 6.3).

    Reference: Coccomini et al., Ch. 6 (V2 difference layer, Adam 1e-3, Dense 256 + Dense 1).
    """
    if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 1:
        raise ValueError(f"`hidden` must be a positive integer. Received: hidden={hidden!r}")
    shared = siamese_encoder(input_shape, encoder,
                             weights=None if encoder == "scratch" else weights,
                             fine_tune=fine_tune, pooling=pooling, input_scaling=input_scaling)
    baseline = keras.Input(shape=tuple(input_shape), name="baseline")
    abnormality = keras.Input(shape=tuple(input_shape), name="abnormality")
    difference = layers.Subtract(name="difference")([shared(baseline), shared(abnormality)])
    features = layers.Rescaling(feature_scale, name="features")(difference)
    x = layers.Dense(hidden, activation="relu", name="head_dense")(features)
    outputs = output_layer(num_classes)(x)
    model = keras.Model([baseline, abnormality], outputs,
                        name=name or f"coccomini_siamese_{encoder}")
    if encoder == "scratch":
        return load_trained_weights(model, weights)
    return model
