"""Model wrappers: flip test-time augmentation as a plain keras.Model.

    tta = flip_tta(model)              # averages the scores of the 4 flipped copies
    tta.predict(images)

Reference: Shen et al. 2019, Sec. 3.1.2 ("augmented prediction": horizontally and vertically
flipping an image to obtain four images and taking an average of the four images' scores).
"""
from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

FLIPS = ("none", "h", "v", "hv")
# Channels-last images (batch, height, width, channels): "h" mirrors columns, "v" rows.
_FLIP_AXES = {"none": (), "h": (2,), "v": (1,), "hv": (1, 2)}


@keras.saving.register_keras_serializable(package="mammo_keras")
class Flip(layers.Layer):
    """Deterministic flip of channels-last images: "none", "h" (left-right), "v" (up-down), "hv".

    Unlike `keras.layers.RandomFlip` it flips every image, in training and inference alike.
    """

    def __init__(self, mode: str = "h", **kwargs):
        super().__init__(**kwargs)
        if mode not in FLIPS:
            raise ValueError(f"`mode` must be one of {FLIPS}. Received: mode={mode!r}")
        self.mode = mode

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError("Flip expects images of shape (batch, height, width, channels). "
                             f"Received: input_shape={tuple(input_shape)}")

    def call(self, inputs):
        x = inputs
        for axis in _FLIP_AXES[self.mode]:
            x = ops.flip(x, axis=axis)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def flip_tta(model: keras.Model, flips: Sequence[str] = FLIPS, *, name: str | None = None
             ) -> keras.Model:
    """Wrap `model` so it predicts the mean of its scores over flipped copies of the input.

    Every image input of the model is flipped the same way (a siamese pair stays aligned). The
    outputs must be per-image scores, not spatial maps (those would need flipping back).

    Args:
        model: a single-output model taking channels-last images.
        flips: a non-empty subset of ("none", "h", "v", "hv"), without repeats.
        name: model name (default "<model>_flip_tta").

    Returns:
        A functional model with the same inputs whose output is the average over `flips`.

    Reference: Shen et al. 2019, Sec. 3.1.2 (A-AUC column of Tables 2 and 3).
    """
    flips = tuple(flips)
    if not flips or len(set(flips)) != len(flips) or not set(flips) <= set(FLIPS):
        raise ValueError(f"`flips` must be a non-empty subset of {FLIPS} without repeats. "
                         f"Received: flips={flips!r}")
    if len(model.outputs) != 1:
        raise ValueError("flip_tta wraps single-output models. "
                         f"Received: a model with {len(model.outputs)} outputs")
    inputs = [keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype, name=tensor.name.split(":")[0])
              for tensor in model.inputs]
    scores = []
    for mode in flips:
        suffixes = [""] if len(inputs) == 1 else [f"_{index}" for index in range(len(inputs))]
        flipped = [Flip(mode, name=f"flip_{mode}{suffix}") for suffix in suffixes]
        member_inputs = [flip(tensor) for flip, tensor in zip(flipped, inputs)]
        scores.append(model(member_inputs[0] if len(member_inputs) == 1 else member_inputs))
    output = scores[0] if len(scores) == 1 else layers.Average(name="tta_average")(scores)
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, output,
                       name=name or f"{model.name}_flip_tta")
