"""AlexNet as in the Caffe BVLC reference model, with local response normalisation.

Layer names follow the Caffe prototxt (`conv1`, `norm1`, `pool1`, ..., `fc8`, with `/` written
as `_`), so weights converted from `bvlc_alexnet.caffemodel` load by name.

Reference: Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional
Neural Networks", NIPS 2012, Sec. 3; BVLC `models/bvlc_alexnet/deploy.prototxt`;
Jain & Levy, "DeepMammo", Sec. 4 (fine-tuned with a new 2-way fc8).
"""
from __future__ import annotations

import math
import os

import keras
from keras import layers, ops

from mammo_keras.models import weights as mk_weights
from mammo_keras.models.layers import GreyToRGB
from mammo_keras.models.registry import register


@keras.saving.register_keras_serializable(package="mammo_keras")
class LocalResponseNormalization(layers.Layer):
    """Cross-channel local response normalisation with `tf.nn.local_response_normalization` semantics.

    For channel `d` of a channels-last tensor `x`:

        sqr_sum[..., d] = sum(x[..., d - depth_radius : d + depth_radius + 1] ** 2)
        output = x / (bias + alpha * sqr_sum) ** beta

    Caffe's LRN layer (`local_size`, `alpha`, `beta`, `k`) divides by
    `(k + alpha / local_size * sqr_sum) ** beta`, so Caffe's alpha must be divided by
    `local_size`: Caffe `local_size=5, alpha=1e-4, beta=0.75` (AlexNet and GoogLeNet) is
    `depth_radius=2, alpha=2e-5, beta=0.75, bias=1.0` here. `from_caffe` does the conversion.

    Args:
        depth_radius: half-width of the channel window (the window has 2*depth_radius+1 channels).
        bias: offset `k`, > 0 keeps the denominator positive.
        alpha: scale of the squared sum (per element, not per window).
        beta: exponent.
    """

    def __init__(self, depth_radius: int = 5, bias: float = 1.0, alpha: float = 1.0,
                 beta: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        if isinstance(depth_radius, bool) or not isinstance(depth_radius, int) or depth_radius < 0:
            raise ValueError("`depth_radius` must be a non-negative integer. "
                             f"Received: depth_radius={depth_radius!r}")
        for key, value in (("bias", bias), ("alpha", alpha), ("beta", beta)):
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"`{key}` must be a finite number. Received: {key}={value!r}")
        if bias <= 0 or alpha < 0:
            raise ValueError("`bias` must be > 0 and `alpha` >= 0 so the denominator stays positive. "
                             f"Received: bias={bias!r}, alpha={alpha!r}")
        self.depth_radius = depth_radius
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    @classmethod
    def from_caffe(cls, local_size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                   k: float = 1.0, **kwargs) -> "LocalResponseNormalization":
        """The layer equal to Caffe's `LRN` (ACROSS_CHANNELS) with the prototxt's parameters."""
        if not isinstance(local_size, int) or local_size < 1 or local_size % 2 == 0:
            raise ValueError("Caffe's `local_size` must be a positive odd integer. "
                             f"Received: local_size={local_size!r}")
        return cls(depth_radius=(local_size - 1) // 2, bias=k, alpha=alpha / local_size,
                   beta=beta, **kwargs)

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError("LocalResponseNormalization needs a known channel count (channels last). "
                             f"Received: input_shape={input_shape}")
        self._channels = int(input_shape[-1])

    def call(self, inputs):
        radius = self.depth_radius
        squared = ops.square(inputs)
        padding = [[0, 0]] * (len(inputs.shape) - 1) + [[radius, radius]]
        padded = ops.pad(squared, padding)
        sqr_sum = padded[..., 0:self._channels]
        for offset in range(1, 2 * radius + 1):
            sqr_sum = sqr_sum + padded[..., offset:offset + self._channels]
        return inputs / ops.power(self.bias + self.alpha * sqr_sum, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"depth_radius": self.depth_radius, "bias": self.bias,
                       "alpha": self.alpha, "beta": self.beta})
        return config


def caffe_l2(weight_decay: float) -> keras.regularizers.Regularizer | None:
    """Keras L2 penalty equal to Caffe's `weight_decay` (Caffe adds wd*w to the gradient: l2(wd/2))."""
    if weight_decay < 0:
        raise ValueError(f"`weight_decay` must be >= 0. Received: weight_decay={weight_decay!r}")
    return keras.regularizers.L2(weight_decay / 2) if weight_decay else None


def load_converted_weights(model: keras.Model, weights: str | os.PathLike | None, *,
                           architecture: str, classifier: str) -> keras.Model:
    """Load weights converted from a Caffe model into `model`, matching layers by name.

    `keras.applications` ships no ImageNet weights for the Caffe-era networks, so
    `weights="imagenet"` is refused with instructions. A local HDF5 file (legacy `.h5` or Keras 3
    `.weights.h5`) is loaded by layer name with `mammo_keras.models.weights.load_weights_by_name`, which names
    the first layer that does not fit. The `classifier` layer is loaded only when the file has it
    with the same shape: a 1000-way ImageNet classifier is left at its new initialisation, as in
    fine-tuning with a new head.

    Args:
        model: the built model.
        weights: None (keep the initialisation), "imagenet" (refused) or a local file path.
        architecture: the network's name, for messages.
        classifier: name of the final classification layer.

    Returns:
        The same model, for chaining.
    """
    if weights is None:
        return model
    if weights == "imagenet":
        raise ValueError(
            f"keras.applications provides no ImageNet weights for {architecture}. Convert the BVLC "
            f"Caffe model (bvlc_{architecture.lower()}.caffemodel) to a Keras HDF5 weights file whose "
            "layer names match this model (Caffe 'conv1/7x7_s2' -> 'conv1_7x7_s2'; Caffe kernels are "
            "(out, in, h, w), Keras kernels (h, w, in, out); an fc layer after a flatten needs its "
            "rows permuted from channels-first to channels-last) and pass its path, e.g. "
            f"weights='/path/to/{architecture.lower()}.h5'. Received: weights='imagenet'")
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError('`weights` must be None, "imagenet" or the path of a local .h5 file. '
                         f"Received: weights={weights!r}")
    head = model.get_layer(classifier)
    body = keras.Model(model.inputs, head.input, name=f"{model.name}_body")
    mk_weights.load_weights_by_name(body, weights, match="name")
    _, arrays, _ = mk_weights.read_weight_file(weights)
    stored = arrays.get(classifier, [])
    if [tuple(a.shape) for a in stored] == [tuple(w.shape) for w in head.weights]:
        head.set_weights(stored)
    return model


def caffe_max_pool(x, size: int, stride: int, name: str):
    """Max pooling with Caffe's output size, ceil((n - size) / stride) + 1, where Keras floors.

    Caffe's last window may run past the bottom/right edge and ignores what lies outside; here the
    input is padded with zeros there first, which gives the same maxima because AlexNet pools ReLU
    (or LRN of ReLU) outputs, never below 0. At 227x227 no padding is needed (55, 27, 13 divide
    evenly); at Jain & Levy's 224x224 crops, floor pooling would end at 5x5 and fc6 would not take
    BVLC's 6x6x256 = 9,216 inputs (Caffe ends at 6x6 there too).
    """
    height, width = x.shape[1], x.shape[2]
    pad = [max(0, (math.ceil((n - size) / stride)) * stride + size - n) for n in (height, width)]
    if any(pad):
        x = layers.ZeroPadding2D(((0, pad[0]), (0, pad[1])), name=f"{name}_ceil_pad")(x)
    return layers.MaxPooling2D(size, strides=stride, name=name)(x)


def _alexnet(input_shape, num_classes, *, weights, name, dropout, weight_decay,
             classifier_activation) -> keras.Model:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")
    reg = caffe_l2(weight_decay)

    def conv(filters, kernel, layer_name, strides=1, padding="same", groups=1):
        return layers.Conv2D(filters, kernel, strides=strides, padding=padding, groups=groups,
                             activation="relu", kernel_regularizer=reg, name=layer_name)

    inputs = keras.Input(shape=input_shape, name="input")
    # Jain & Levy replicate the grey image across the 3 channels the BVLC weights expect.
    x = GreyToRGB(name="grey_to_rgb")(inputs) if input_shape[-1] == 1 else inputs
    x = conv(96, 11, "conv1", strides=4, padding="valid")(x)
    x = LocalResponseNormalization.from_caffe(5, 1e-4, 0.75, name="norm1")(x)
    x = caffe_max_pool(x, 3, 2, "pool1")
    x = conv(256, 5, "conv2", groups=2)(x)
    x = LocalResponseNormalization.from_caffe(5, 1e-4, 0.75, name="norm2")(x)
    x = caffe_max_pool(x, 3, 2, "pool2")
    x = conv(384, 3, "conv3")(x)
    x = conv(384, 3, "conv4", groups=2)(x)
    x = conv(256, 3, "conv5", groups=2)(x)
    x = caffe_max_pool(x, 3, 2, "pool5")
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(4096, activation="relu", kernel_regularizer=reg, name="fc6")(x)
    x = layers.Dropout(dropout, name="drop6")(x)
    x = layers.Dense(4096, activation="relu", kernel_regularizer=reg, name="fc7")(x)
    x = layers.Dropout(dropout, name="drop7")(x)
    # The new fc8 starts from a Gaussian (std 0.01), as the paper's "random Gaussian initialization".
    outputs = layers.Dense(num_classes, activation=classifier_activation, kernel_regularizer=reg,
                           kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                           name="fc8")(x)
    model = keras.Model(inputs, outputs, name=name or "alexnet")
    return load_converted_weights(model, weights, architecture="AlexNet", classifier="fc8")


@register("jain_levy_alexnet", paper="jain_levy", task="roi")
def jain_levy_alexnet(input_shape=(227, 227, 3), num_classes=2, *, weights=None, name=None,
                      dropout: float = 0.5, weight_decay: float = 0.0,
                      classifier_activation: str | None = "softmax") -> keras.Model:
    """AlexNet (BVLC Caffe reference) with a new `num_classes`-way fc8, as fine-tuned by Jain & Levy.

    conv1 96 11x11/4 - LRN - pool - conv2 256 5x5 (2 groups) - LRN - pool - conv3 384 -
    conv4 384 (2 groups) - conv5 256 (2 groups) - pool - fc6 4096 - dropout - fc7 4096 - dropout - fc8.
    The 1000-class model has 60,965,224 parameters, as the Caffe reference. The pools round up
    as Caffe's do (`caffe_max_pool`), so pool5 is 6x6x256 at 227x227 and at Jain & Levy's 224x224
    alike, and converted BVLC weights load at both.

    Args:
        input_shape: channels-last input shape; 227x227x3 is BVLC's native size.
        num_classes: width of fc8 (2 in the paper).
        weights: None, or the path of weights converted from `bvlc_alexnet.caffemodel`
            ("imagenet" raises: Keras ships none). fc8 is skipped when its width differs.
        name: model name (default "alexnet").
        dropout: rate of drop6/drop7 (0.5 in the paper).
        weight_decay: Caffe-style weight decay (the paper's L2 5e-3), applied as l2(wd/2).
        classifier_activation: activation of fc8 ("softmax", or None for logits).

    Reference: Jain & Levy, "DeepMammo", Sec. 4 (b); Krizhevsky et al. 2012, Fig. 2.
    """
    return _alexnet(tuple(input_shape), num_classes, weights=weights, name=name, dropout=dropout,
                    weight_decay=weight_decay, classifier_activation=classifier_activation)
