"""Classifier heads put on top of convolutional backbones, with fixed layer names.

`dense_head` is the general form (pooling, hidden dense layers with one dropout, L2 on the dense
kernels, a softmax or sigmoid output); `chougrad_head` fixes it to Chougrad's settings.
"""
from __future__ import annotations

import keras

POOLINGS = ("flatten", "avg", "max")
CHOUGRAD_HEAD_UNITS = (256, 128)
_POOLING_LAYERS = {
    "flatten": keras.layers.Flatten,
    "avg": keras.layers.GlobalAveragePooling2D,
    "max": keras.layers.GlobalMaxPooling2D,
}


def output_activation(num_classes: int) -> str:
    """Softmax over two or more classes; a single unit is a sigmoid probability."""
    if num_classes < 1:
        raise ValueError(f"`num_classes` must be at least 1. Received: num_classes={num_classes}")
    return "sigmoid" if num_classes == 1 else "softmax"


def dense_head(features, num_classes: int, *, units: tuple[int, ...] = (), dropout: float = 0.0,
               l2: float = 0.0, pooling: str = "flatten", activation: str = "relu",
               prefix: str = "head"):
    """Pooling -> Dense(units[0]) -> Dropout -> Dense(units[1:]) ... -> `predictions`.

    Args:
        features: 4-D feature-map tensor of the backbone.
        units: widths of the hidden dense layers; the dropout follows the first of them (or the
            pooling when there is none).
        dropout: dropout rate; 0 adds no Dropout layer.
        l2: L2 factor on every dense kernel (Keras adds `l2 * sum(w**2)` to the loss).
        pooling: "flatten", "avg" (global average) or "max" (global max).

    Returns:
        The output tensor of a layer named `predictions`, holding class probabilities.
        Hidden layers are named `{prefix}_pool`, `{prefix}_dense1`, ..., `{prefix}_dropout`.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")
    if any(width < 1 for width in units):
        raise ValueError(f"`units` must be positive widths. Received: units={units!r}")
    regularizer = keras.regularizers.L2(l2) if l2 else None
    x = _POOLING_LAYERS[pooling](name=f"{prefix}_pool")(features)
    for index, width in enumerate(units, start=1):
        x = keras.layers.Dense(width, activation=activation, kernel_regularizer=regularizer,
                               name=f"{prefix}_dense{index}")(x)
        if index == 1 and dropout:
            x = keras.layers.Dropout(dropout, name=f"{prefix}_dropout")(x)
    if not units and dropout:
        x = keras.layers.Dropout(dropout, name=f"{prefix}_dropout")(x)
    return keras.layers.Dense(num_classes, activation=output_activation(num_classes),
                              kernel_regularizer=regularizer, name="predictions")(x)


def chougrad_head(features, num_classes: int = 2, *, units: tuple[int, ...] = CHOUGRAD_HEAD_UNITS,
                  dropout: float = 0.5, l2: float = 0.1, pooling: str = "flatten"):
    """Chougrad's fully-connected head: 5 layers, one dropout of 0.5, L2 0.1, softmax.

    With the default two hidden widths the head is Flatten -> Dense(256, relu) -> Dropout(0.5)
    -> Dense(128, relu) -> Dense(2, softmax): five Keras layers, which is what Table 1's totals
    count (see `mammo_keras.models.chougrad`). The widths are not in the text (only in Fig. 3),
    so they are an argument: `units=(1024, 512, 256, 128)` gives the other reading, five Dense
    layers.

    Reference: Chougrad et al. 2018, §2.2.2, §2.2.4, §2.2.5 and Table 1.
    """
    return dense_head(features, num_classes, units=units, dropout=dropout, l2=l2, pooling=pooling)
