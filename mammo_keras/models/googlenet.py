"""GoogLeNet (Inception v1) as the BVLC Caffe model, without the two auxiliary classifiers.

Layer names are the Caffe names with `/` written as `_` (`conv1_7x7_s2`, `pool2_3x3_s2`,
`inception_4a_3x3_reduce`, `loss3_classifier`), so converted BVLC weights load by name and the
fine-tuning depths of Jain & Levy select layers by the prefixes `inception_5a` / `inception_5b`.

Reference: Szegedy et al., "Going Deeper with Convolutions", CVPR 2015, Table 1;
BVLC `models/bvlc_googlenet/train_val.prototxt`; Jain & Levy, "DeepMammo", Sec. 4 (c).
"""
from __future__ import annotations

import keras
from keras import layers

from mammo_keras.models.alexnet import LocalResponseNormalization, caffe_l2, load_converted_weights
from mammo_keras.models.layers import GreyToRGB
from mammo_keras.models.registry import register

# Szegedy et al. Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION_MODULES: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
# A stride-2 max pool precedes these modules (pool3 before 4a, pool4 before 5a).
_POOL_BEFORE = {"4a": "pool3_3x3_s2", "5a": "pool4_3x3_s2"}

CLASSIFIER = "loss3_classifier"
FINE_TUNING_PREFIXES: dict[str, tuple[str, ...]] = {
    "shallow": ("inception_5b",),
    "deeper": ("inception_5a", "inception_5b"),
}


def _inception_module(x, module: str, widths, reg):
    """One Inception module: four parallel branches concatenated on channels."""
    n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj = widths
    prefix = f"inception_{module}"

    def conv(inputs, filters, kernel, suffix):
        return layers.Conv2D(filters, kernel, padding="same", activation="relu",
                             kernel_regularizer=reg, name=f"{prefix}_{suffix}")(inputs)

    branch_1x1 = conv(x, n1x1, 1, "1x1")
    branch_3x3 = conv(conv(x, n3x3_reduce, 1, "3x3_reduce"), n3x3, 3, "3x3")
    branch_5x5 = conv(conv(x, n5x5_reduce, 1, "5x5_reduce"), n5x5, 5, "5x5")
    pooled = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{prefix}_pool")(x)
    branch_pool = conv(pooled, pool_proj, 1, "pool_proj")
    return layers.Concatenate(axis=-1, name=f"{prefix}_output")(
        [branch_1x1, branch_3x3, branch_5x5, branch_pool])


def _googlenet(input_shape, num_classes, *, weights, name, dropout, weight_decay,
               classifier_activation) -> keras.Model:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")
    reg = caffe_l2(weight_decay)
    inputs = keras.Input(shape=input_shape, name="input")
    # Jain & Levy replicate the grey image across the 3 channels the BVLC weights expect.
    x = GreyToRGB(name="grey_to_rgb")(inputs) if input_shape[-1] == 1 else inputs
    # Caffe pads 3 on every side before the stride-2 7x7 conv; Keras "same" would pad 2/3.
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = layers.Conv2D(64, 7, strides=2, activation="relu", kernel_regularizer=reg,
                      name="conv1_7x7_s2")(x)
    # Caffe pools round up; "same" pooling pads only the bottom/right, which is the same windows.
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_3x3_s2")(x)
    x = LocalResponseNormalization.from_caffe(5, 1e-4, 0.75, name="pool1_norm1")(x)
    x = layers.Conv2D(64, 1, activation="relu", kernel_regularizer=reg, name="conv2_3x3_reduce")(x)
    x = layers.Conv2D(192, 3, padding="same", activation="relu", kernel_regularizer=reg,
                      name="conv2_3x3")(x)
    x = LocalResponseNormalization.from_caffe(5, 1e-4, 0.75, name="conv2_norm2")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool2_3x3_s2")(x)
    for module, widths in INCEPTION_MODULES.items():
        if module in _POOL_BEFORE:
            x = layers.MaxPooling2D(3, strides=2, padding="same", name=_POOL_BEFORE[module])(x)
        x = _inception_module(x, module, widths, reg)
    x = layers.GlobalAveragePooling2D(name="pool5_7x7_s1")(x)
    x = layers.Dropout(dropout, name="pool5_drop_7x7_s1")(x)
    outputs = layers.Dense(num_classes, activation=classifier_activation, kernel_regularizer=reg,
                           name=CLASSIFIER)(x)
    model = keras.Model(inputs, outputs, name=name or "googlenet")
    return load_converted_weights(model, weights, architecture="GoogLeNet", classifier=CLASSIFIER)


@register("jain_levy_googlenet", paper="jain_levy", task="roi")
def jain_levy_googlenet(input_shape=(224, 224, 3), num_classes=2, *, weights=None, name=None,
                        dropout: float = 0.4, weight_decay: float = 0.0,
                        classifier_activation: str | None = "softmax",
                        fine_tune: str = "all") -> keras.Model:
    """GoogLeNet / Inception v1 without auxiliary heads, with a new `num_classes`-way classifier.

    The 1000-class network has 6,998,552 parameters (Szegedy et al. Table 1 widths, with biases).
    The final 7x7 average pool is a global average pool, identical at 224x224 and valid at other
    sizes.

    Args:
        input_shape: channels-last input shape (224x224x3 in the paper).
        num_classes: width of `loss3_classifier` (2 in the paper).
        weights: None, or the path of weights converted from `bvlc_googlenet.caffemodel`
            ("imagenet" raises: Keras ships none). The classifier is skipped when its width differs.
        name: model name (default "googlenet").
        dropout: rate before the classifier (BVLC 0.4; the paper's shallow run 0.1, deeper 0.2).
        weight_decay: Caffe-style weight decay (paper: 5e-4 shallow, 1e-3 deeper), l2(wd/2).
        classifier_activation: activation of the classifier ("softmax", or None for logits).
        fine_tune: "shallow", "deeper" or "all"; see `set_googlenet_fine_tuning`.

    Reference: Jain & Levy, "DeepMammo", Sec. 4 (c) and 4.3; Szegedy et al. 2015, Table 1.
    """
    model = _googlenet(tuple(input_shape), num_classes, weights=weights, name=name, dropout=dropout,
                       weight_decay=weight_decay, classifier_activation=classifier_activation)
    return set_googlenet_fine_tuning(model, fine_tune)


def set_googlenet_fine_tuning(model: keras.Model, strategy: str) -> keras.Model:
    """Freeze GoogLeNet except the layers a fine-tuning depth trains, selected by name prefix.

    "shallow": `inception_5b*` and the classifier are trainable; "deeper": also `inception_5a*`;
    "all": every layer. The paper keeps the other layers learning at 0.1x the rate instead of
    frozen; `googlenet_lr_multipliers` gives those rates for an optimizer that scales them.

    Reference: Jain & Levy, "DeepMammo", Sec. 4.3 ("Shallow" and "Deeper" training).
    """
    prefixes = _strategy_prefixes(strategy)
    for layer in model.layers:
        layer.trainable = prefixes is None or layer.name.startswith(prefixes)
    return model


def googlenet_lr_multipliers(model: keras.Model, strategy: str) -> dict[str, tuple[float, float]]:
    """Per-layer (kernel, bias) learning-rate multipliers of Jain & Levy's fine-tuning.

    The fine-tuned modules keep Caffe's original multipliers (1, 2), earlier layers learn at a
    tenth of them (0.1, 0.2), and the new classifier at (10, 20). Only layers with weights appear.

    Reference: Jain & Levy, "DeepMammo", Sec. 4.3.
    """
    prefixes = _strategy_prefixes(strategy)
    multipliers = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name == CLASSIFIER:
            multipliers[layer.name] = (10.0, 20.0)
        elif prefixes is None or layer.name.startswith(prefixes):
            multipliers[layer.name] = (1.0, 2.0)
        else:
            multipliers[layer.name] = (0.1, 0.2)
    return multipliers


def _strategy_prefixes(strategy: str) -> tuple[str, ...] | None:
    if strategy == "all":
        return None
    if strategy not in FINE_TUNING_PREFIXES:
        raise ValueError("GoogLeNet fine-tuning must be one of 'shallow', 'deeper', 'all'. "
                         f"Received: strategy={strategy!r}")
    return FINE_TUNING_PREFIXES[strategy] + (CLASSIFIER,)
