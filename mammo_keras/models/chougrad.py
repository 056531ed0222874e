"""Chougrad et al. 2018: ImageNet CNNs with a custom dense head, fine-tuned block by block.

    model = models.get("chougrad_inceptionv3", input_shape=(224, 224, 1), weights="imagenet",
                       fine_tune="2FT")

Every builder shares one signature: `(input_shape=(224, 224, 3), num_classes=2, *, weights=None,
fine_tune="2FT", head_units=(256, 128), input_scaling="imagenet_centred", name=None)`. A one-channel
input gets a `GreyToRGB` layer. The inputs are GCN ROIs in 0-255 units (the ROI minus its own
mean); `input_scaling="imagenet_centred"` (the default) applies the backbone's own ImageNet
scale to them as an `ImageNetScaling(centred=True)` layer: VGG16/ResNet50 take mean-subtracted
0-255 values as they are, InceptionV3 divides them by 127.5. The paper names GCN only; the
ImageNet weights were trained on those ranges, so a network given [0, 1] inputs would see about
1/255 of them. `input_scaling=None` feeds the inputs unscaled; "imagenet" is the full
`preprocess_input` for un-centred 0-255 inputs.

`fine_tune="random"` initialises every kernel from N(0, 0.05), the paper's "small random number
generated from a Gaussian distribution ... between 0 and 0.05" (Keras 1's `normal` initialiser,
biases 0), instead of the Keras defaults.

The head is Pool -> Dense(256, relu) -> Dropout(0.5) -> Dense(128, relu) -> Dense(2, softmax), L2
0.1 on its dense kernels. Pool is Flatten, except for ResNet50 where it is global average pooling:
Keras-1 ResNet50 kept its 7x7 `avg_pool` layer with `include_top=False`, so Chougrad's Flatten
saw a 1x1x2048 map. Five Keras layers is what Table 1's totals imply (VGG16: 18 Keras-1 layers +
5 = 23; ResNet50 174 + 5 = 179; InceptionV3 216 + 5 = 221); the widths are not in the text.

Trainable layers per fine-tuning strategy (`fine_tuned_layer_counts`, checked in
tests/models/test_chougrad.py), next to the paper's Table 1:

| Model       | Strategy | Trainable Conv2D (Keras 3) | Layers in the blocks, Table 1 counting | Paper Table 1 |
|-------------|----------|---------------------------:|---------------------------------------:|--------------:|
| VGG16       | 1FT      |  3 | 4  | 4  |
| VGG16       | 2FT      |  6 | 8  | 8  |
| VGG16       | 3FT      |  9 | 12 | 12 |
| ResNet50    | 1FT      |  3 | 10 | 12 |
| ResNet50    | 2FT      |  6 | 20 | 22 |
| ResNet50    | 3FT      | 10 | 32 | 34 |
| InceptionV3 | 1FT      |  9 | 22 | 25 |
| InceptionV3 | 2FT      | 18 | 44 | 44 |
| InceptionV3 | 3FT      | 24 | 58 | 58 |

Why the columns differ: Table 1 counts every Keras-1 layer of the unfrozen blocks (convolutions,
batch norms, poolings, merges), not only convolutions, with "a convolutional layer followed by a
non-linearity counted as one layer". VGG16's blocks are 3 conv + 1 pool, hence 4/8/12 layers for
3/6/9 convolutions. A ResNet50 identity block has 3 convolutions and 10 layers (3 x conv/BN/ReLU,
add, ReLU); `conv5_block1` also has the projection shortcut (conv + BN), hence 10 convolutions and
32 layers for 3FT. Keras-1 ResNet50 also kept `avg_pool` in the backbone (11/21/33); the last +1
of the paper is unexplained. InceptionV3: Keras 1 fused each ReLU into its convolution, so the
Table 1 counting leaves out Keras 3's separate Activation layers (9 conv + 9 BN + pool + 3 merges
= 22 for `mixed10`); 2FT and 3FT match exactly, 1FT's 25 is unexplained (it is not a module
boundary: `mixed9` alone also has 22).

Reference: Chougrad et al. 2018, §2.2 (architectures, head, fine-tuning), Table 1.
"""
from __future__ import annotations

import os

import keras

from mammo_keras.models.backbones import (
    SCALING_MODE, STRATEGIES, backbone, conv_blocks, family_of, set_fine_tuning,
)
from mammo_keras.models.heads import CHOUGRAD_HEAD_UNITS, POOLINGS, chougrad_head
from mammo_keras.models.layers import SCALING_MODES, GreyToRGB, ImageNetScaling
from mammo_keras.models.registry import register

PAPER = "chougrad2018"
PAPER_TABLE1 = {
    "vgg16": {"1FT": 4, "2FT": 8, "3FT": 12},
    "resnet50": {"1FT": 12, "2FT": 22, "3FT": 34},
    "inceptionv3": {"1FT": 25, "2FT": 44, "3FT": 58},
}
_HEAD_POOLING = {"vgg16": "flatten", "resnet50": "avg", "inceptionv3": "flatten"}


RANDOM_INIT_STDDEV = 0.05
INPUT_SCALINGS = (None, "imagenet", "imagenet_centred")


def gaussian_init(model: keras.Model, stddev: float = RANDOM_INIT_STDDEV, seed: int | None = None) -> keras.Model:
    """Every Conv/Dense kernel drawn from N(0, stddev), biases 0 (Chougrad's random initialisation).

    Each layer's `kernel_initializer` and `bias_initializer` are set to what drew its weights, so its
    config (the saved JSON, the plan's `kernel_init`) names the initialisation the network had, not
    the builder's default it replaced.
    """
    initializer = keras.initializers.RandomNormal(0.0, stddev, seed=seed)
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        kernel.assign(initializer(kernel.shape, dtype=kernel.dtype))
        layer.kernel_initializer = initializer
        bias = getattr(layer, "bias", None)
        if bias is not None:
            bias.assign(keras.ops.zeros(bias.shape, dtype=bias.dtype))
            layer.bias_initializer = keras.initializers.Zeros()
    return model


def build_chougrad(family: str, input_shape: tuple[int, int, int] = (224, 224, 3),
                   num_classes: int = 2, *, weights: str | os.PathLike | None = None,
                   fine_tune: str = "2FT", head_units: tuple[int, ...] = CHOUGRAD_HEAD_UNITS,
                   dropout: float = 0.5, l2: float = 0.1, input_scaling: str | None = "imagenet_centred",
                   feature_layer: str | None = None, head_pooling: str | None = None,
                   name: str | None = None) -> keras.Model:
    """A Chougrad network: [GreyToRGB] -> [ImageNetScaling] -> backbone -> dense head.

    Args:
        family: "vgg16", "resnet50" or "inceptionv3".
        input_shape: (height, width, 1 or 3).
        weights: None, "imagenet" or a local HDF5 weights file of the backbone.
        fine_tune: "random" (random init, all trainable; needs weights=None), "0FT", "1FT",
            "2FT", "3FT" or "AllFT".
        head_units: widths of the hidden dense layers of the head.
        input_scaling: "imagenet_centred" (the backbone's scale for mean-subtracted 0-255 inputs),
            "imagenet" (its full scaling of 0-255 inputs), None, or a mode "caffe"/"tf"/"torch".
        feature_layer: None (the head reads the backbone's last block, as in the paper) or the name
            of an earlier backbone layer, e.g. "block4_pool": the blocks after it are left out, so
            the head reads features less specific to the backbone's own pretraining task. Not the
            paper's network; only a frozen backbone (fine_tune="0FT") is accepted with it.
        head_pooling: None (the paper's: Flatten, global average pooling for ResNet50) or "flatten",
            "avg", "max". Not the paper's network when it differs: global pooling gives the head 512
            means instead of thousands of unnormalised activations, whose sum saturates a frozen
            backbone's head at its first step.
    """
    if fine_tune not in STRATEGIES:
        raise ValueError(f"`fine_tune` must be one of {STRATEGIES}. Received: fine_tune={fine_tune!r}")
    if fine_tune == "random" and weights is not None:
        raise ValueError('fine_tune="random" trains from a random initialisation, so `weights` '
                         f"must be None. Received: weights={weights!r}")
    if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
        raise ValueError("`input_shape` must be (height, width, 1) or (height, width, 3). "
                         f"Received: input_shape={input_shape!r}")
    if head_pooling is not None and head_pooling not in POOLINGS:  # before the backbone (and its weights) load
        raise ValueError(f"`head_pooling` must be None or one of {POOLINGS}. Received: head_pooling={head_pooling!r}")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = GreyToRGB(name="grey_to_rgb")(inputs) if input_shape[-1] == 1 else inputs
    if input_scaling is not None:
        centred = input_scaling == "imagenet_centred"
        mode = SCALING_MODE.get(family) if input_scaling in ("imagenet", "imagenet_centred") else input_scaling
        if mode not in SCALING_MODES:
            raise ValueError(f"`input_scaling` must be one of {INPUT_SCALINGS} or {SCALING_MODES}. "
                             f"Received: input_scaling={input_scaling!r}")
        x = ImageNetScaling(mode, centred=centred, name="imagenet_scaling")(x)
    base = backbone(family, (*input_shape[:2], 3), weights=weights, input_tensor=x)
    if feature_layer is not None and fine_tune != "0FT":
        raise ValueError('`feature_layer` cuts the backbone, so only its frozen use fine_tune="0FT" is '
                         f"defined (a block depth would count from a block that is not there). Received: "
                         f"fine_tune={fine_tune!r}, feature_layer={feature_layer!r}")
    features = base.output if feature_layer is None else _backbone_layer(base, feature_layer).output
    outputs = chougrad_head(features, num_classes, units=tuple(head_units), dropout=dropout,
                            l2=l2, pooling=head_pooling or _HEAD_POOLING[family])
    model = keras.Model(inputs, outputs, name=name or f"chougrad_{family}")
    if fine_tune == "random":
        gaussian_init(model)
    if feature_layer is not None:  # 0FT on a cut backbone: every backbone layer left in is frozen
        backbone_layers = {layer.name for layer in base.layers}
        for layer in model.layers:
            layer.trainable = layer.name not in backbone_layers or isinstance(layer, keras.layers.InputLayer)
        return model
    return set_fine_tuning(model, fine_tune, family)


def _backbone_layer(base: keras.Model, name: str) -> keras.layers.Layer:
    """A layer of the backbone by name, or an error listing the block outputs to choose from."""
    try:
        return base.get_layer(name)
    except ValueError:
        pools = [layer.name for layer in base.layers if layer.name.endswith(("_pool", "_out")) or
                 layer.name.startswith("mixed")]
        raise ValueError(f"`feature_layer` {name!r} is not a layer of the {base.name} backbone. Block "
                         f"outputs: {pools[:20]}") from None


FAMILIES = {"chougrad_vgg16": "vgg16", "chougrad_resnet50": "resnet50", "chougrad_inceptionv3": "inceptionv3"}
"""Registry name -> backbone family. Apart from "random" (its own initialisation), `fine_tune` only sets
trainable flags, which `set_fine_tuning` sets again on any built model of the family (the plan uses it)."""


@register("chougrad_vgg16", paper=PAPER, task="roi")
def chougrad_vgg16(input_shape=(224, 224, 3), num_classes=2, *, weights=None, fine_tune="2FT",
                   head_units=CHOUGRAD_HEAD_UNITS, input_scaling="imagenet_centred", feature_layer=None,
                   head_pooling=None, name=None) -> keras.Model:
    """Chougrad 2018 VGG16 with the custom dense head, fine-tuned per `fine_tune`."""
    return build_chougrad("vgg16", input_shape, num_classes, weights=weights, fine_tune=fine_tune,
                          head_units=head_units, input_scaling=input_scaling, feature_layer=feature_layer,
                          head_pooling=head_pooling, name=name)


@register("chougrad_resnet50", paper=PAPER, task="roi")
def chougrad_resnet50(input_shape=(224, 224, 3), num_classes=2, *, weights=None, fine_tune="2FT",
                      head_units=CHOUGRAD_HEAD_UNITS, input_scaling="imagenet_centred", name=None) -> keras.Model:
    """Chougrad 2018 ResNet50 with the custom dense head, fine-tuned per `fine_tune`."""
    return build_chougrad("resnet50", input_shape, num_classes, weights=weights, fine_tune=fine_tune,
                          head_units=head_units, input_scaling=input_scaling, name=name)


@register("chougrad_inceptionv3", paper=PAPER, task="roi")
def chougrad_inceptionv3(input_shape=(224, 224, 3), num_classes=2, *, weights=None, fine_tune="2FT",
                         head_units=CHOUGRAD_HEAD_UNITS, input_scaling="imagenet_centred", name=None) -> keras.Model:
    """Chougrad 2018 InceptionV3 (the paper's best, "Inceptionv3-MD") fine-tuned per `fine_tune`."""
    return build_chougrad("inceptionv3", input_shape, num_classes, weights=weights,
                          fine_tune=fine_tune, head_units=head_units, input_scaling=input_scaling,
                          name=name)


def fine_tuned_layer_counts(model: keras.Model, family: str | None = None) -> dict[str, dict[str, int]]:
    """For 1FT/2FT/3FT: trainable Conv2D layers, and layers counted as in Chougrad's Table 1.

    Table 1 counting: every layer of the last k blocks, except InceptionV3's Activation layers
    (Keras 1 fused those ReLUs into the convolutions; Keras 1 ResNet50 kept them separate).

    Reference: Chougrad et al. 2018, Table 1.
    """
    family = family or family_of(model)
    blocks = conv_blocks(model, family)
    counts = {}
    for depth in (1, 2, 3):
        names = [name for block in blocks[-depth:] for name in block]
        layers = [model.get_layer(name) for name in names]
        counts[f"{depth}FT"] = {
            "conv": sum(isinstance(layer, keras.layers.Conv2D) for layer in layers),
            "layers": sum(not (family == "inceptionv3" and isinstance(layer, keras.layers.Activation))
                          for layer in layers),
        }
    return counts
