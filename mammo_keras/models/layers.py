"""Serializable input layers shared by the model zoo: grey to RGB and ImageNet input scaling.

Grey mammogram ROIs meet ImageNet backbones that expect three channels in a given range. Both
steps are named layers recorded in the model config (no `Lambda`), so a saved model carries its
own input convention and loads with `safe_mode=True`.
"""
from __future__ import annotations

import keras
from keras import ops

PACKAGE = "mammo_keras"

# Channel means/stds of keras.applications.imagenet_utils.preprocess_input, per mode.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
SCALING_MODES = ("caffe", "tf", "torch")


@keras.saving.register_keras_serializable(package=PACKAGE)
class GreyToRGB(keras.layers.Layer):
    """Repeat a single grey channel three times, so grey images feed RGB backbones.

    Reference: Chougrad et al. 2018, §2.2.1 (grey ROIs fed to ImageNet networks; channel
    replication is implied, not stated).
    """

    def build(self, input_shape):
        if input_shape[-1] != 1:
            raise ValueError("GreyToRGB expects a single grey channel (last axis of size 1). "
                             f"Received: input_shape={tuple(input_shape)}")
        self.built = True

    def call(self, inputs):
        return ops.repeat(inputs, 3, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ImageNetScaling(keras.layers.Layer):
    """The ImageNet input scaling of `keras.applications` as a layer (inputs in [0, 255], RGB).

    Args:
        mode: "caffe" (RGB->BGR, subtract the BGR channel means; VGG16, ResNet50),
            "tf" (scale to [-1, 1]; InceptionV3) or "torch" (to [0, 1], then channel z-score).
        centred: the inputs are already mean-subtracted 0-255 values (Chougrad's GCN ROIs), so
            only the scale of `mode` applies: caffe x (BGR order), tf x / 127.5, torch x / 255 / std.
            A linear scaling commutes with the per-image mean subtraction, so this equals the
            backbone's own scaling followed by GCN.
    """

    def __init__(self, mode: str = "caffe", centred: bool = False, **kwargs):
        super().__init__(**kwargs)
        if mode not in SCALING_MODES:
            raise ValueError(f"`mode` must be one of {SCALING_MODES}. Received: mode={mode!r}")
        self.mode = mode
        self.centred = bool(centred)

    def build(self, input_shape):
        if self.mode != "tf" and input_shape[-1] != 3:
            raise ValueError(f"ImageNetScaling(mode={self.mode!r}) needs 3 channels. "
                             f"Received: input_shape={tuple(input_shape)}")
        self.built = True

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 if self.centred else x / 127.5 - 1.0
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)
            return x if self.centred else x - ops.convert_to_tensor(_CAFFE_BGR_MEAN, dtype=x.dtype)
        mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=x.dtype)
        std = ops.convert_to_tensor(_TORCH_STD, dtype=x.dtype)
        return x / 255.0 / std if self.centred else (x / 255.0 - mean) / std

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "centred": self.centred}
