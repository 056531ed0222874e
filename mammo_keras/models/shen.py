"""Shen et al. 2017 patch classifiers: ImageNet backbones + global average pooling + 5-way softmax.

    model = shen_patch_resnet50()              # 224x224x3 -> 5 patch classes
    model.get_layer("conv5_block3_out")        # where `whole_image.py` cuts it

Layer names: the Keras application's own names, then `avg_pool` (GAP) and `predictions`
(Dense softmax). The whole-image converters in `whole_image.py` cut the classifier at
`CUT_LAYERS[arch]` and turn `predictions` into the heatmap's 1x1 convolution.

Reference: Shen et al. 2017, "Deep Learning to Improve Breast Cancer Early Detection on
Screening Mammography", Sec. 2.2 (patch classifiers) and Table 1.
"""
from __future__ import annotations

import os

import keras

from mammo_keras.models import weights as mk_weights
from mammo_keras.models import backbones
from mammo_keras.models.layers import GreyToRGB
from mammo_keras.models.registry import register

PATCH_CLASSES = ("background", "calcification_benign", "calcification_malignant",
                 "mass_benign", "mass_malignant")
"""The five patch classes, in output order. Reference: Shen et al. 2017, Sec. 2.1 and 3.1.1."""

PATCH_INPUT_SHAPE = (224, 224, 3)
"""Patch size sampled from the 1152x896 down-sized images. Reference: Shen et al. 2017, Sec. 3.1.1."""

CUT_LAYERS = {"resnet50": "conv5_block3_out", "vgg16": "block5_pool"}
"""Last convolutional output of each patch classifier: the input of its global average pooling."""

ARCHITECTURES = ("resnet50", "vgg16")


def check_weights(weights: str | os.PathLike | None) -> None:
    """Accept None, "imagenet" or the path of an existing file; anything else raises."""
    if weights is None or weights == "imagenet":
        return
    if not (isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights)):
        raise ValueError("`weights` must be None (random init), 'imagenet' or the path of an "
                         f"existing weights file. Received: weights={weights!r}")


def shen_patch_classifier(arch: str, input_shape: tuple[int, int, int] = PATCH_INPUT_SHAPE,
                          num_classes: int = len(PATCH_CLASSES), *, weights: str | None = None,
                          name: str | None = None) -> keras.Model:
    """Backbone conv layers + global average pooling + softmax, as in Shen et al.

    Args:
        arch: "resnet50" or "vgg16".
        input_shape: patch shape (rows, cols, 3); one channel adds a `grey_to_rgb` layer.
        num_classes: patch classes (5 in the paper).
        weights: None (random), "imagenet" (backbone only; the softmax layer stays random),
            or the path of an HDF5 weights file of this same classifier, loaded by layer name.
        name: model name; defaults to `shen_patch_<arch>`.

    Returns:
        A flat functional model: `<backbone layers> -> avg_pool -> predictions`.

    Reference: Shen et al. 2017, Sec. 2.2 ("we replace the two FC layers with a global
    average pooling layer ... This output is then connected to the classification output
    with a FC layer").
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"`arch` must be one of {ARCHITECTURES}. Received: arch={arch!r}")
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be at least 2. Received: num_classes={num_classes}")
    check_weights(weights)
    inputs = keras.Input(shape=tuple(input_shape), name="patch")
    x = GreyToRGB(name="grey_to_rgb")(inputs) if input_shape[-1] == 1 else inputs
    base = backbones.backbone(arch, tuple(x.shape[1:]), input_tensor=x,
                              weights="imagenet" if weights == "imagenet" else None)
    features = base.get_layer(CUT_LAYERS[arch]).output
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(pooled)
    model = keras.Model(inputs, outputs, name=name or f"shen_patch_{arch}")
    if weights not in (None, "imagenet"):
        mk_weights.load_weights_by_name(model, weights)
    return model


@register("shen_patch_resnet50", paper="shen2017", task="patch")
def shen_patch_resnet50(input_shape: tuple[int, int, int] = PATCH_INPUT_SHAPE,
                        num_classes: int = len(PATCH_CLASSES), *, weights: str | None = None,
                        name: str | None = None) -> keras.Model:
    """Shen's ResNet50 patch classifier: ResNet50 + GAP + softmax (about 24M weights).

    Reference: Shen et al. 2017, Sec. 2.2 and Table 1 (S10 pretrained: accuracy 0.89).
    """
    return shen_patch_classifier("resnet50", input_shape, num_classes, weights=weights, name=name)


@register("shen_patch_vgg16", paper="shen2017", task="patch")
def shen_patch_vgg16(input_shape: tuple[int, int, int] = PATCH_INPUT_SHAPE,
                     num_classes: int = len(PATCH_CLASSES), *, weights: str | None = None,
                     name: str | None = None) -> keras.Model:
    """Shen's VGG16 patch classifier: VGG16 conv blocks + GAP + softmax (no FC layers, no BN).

    Reference: Shen et al. 2017, Sec. 2.2 and Table 1 (S10 pretrained: accuracy 0.84).
    """
    return shen_patch_classifier("vgg16", input_shape, num_classes, weights=weights, name=name)
