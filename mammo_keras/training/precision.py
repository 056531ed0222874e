"""Mixed precision as an option: float16 on a GPU, bfloat16 on a CPU, float32 outputs.

Keras' dtype policy is global state read when a layer is created, so it is set only inside
`precision_scope` (restored on exit, also on error) and models are built there:

    with precision_scope("mixed"):
        model = with_float32_output(models.get("shen_whole_resnet50"))

"mixed" resolves to "mixed_float16" when TensorFlow sees a GPU and "mixed_bfloat16" otherwise
(CPUs have no fast float16; bfloat16 keeps float32's range, so it needs no loss scaling).
Keras wraps the optimizer in a LossScaleOptimizer itself when a model's policy is
mixed_float16. Variables stay float32 under both policies.

The class probabilities are computed in float32 (`with_float32_output`): a softmax in 8 bits of
mantissa rounds probabilities near 0 and 1, where the cross-entropy and the ROC curve need them.

Whether mixed precision pays depends on the device: measured on the Shen whole-image network
by benchmarks/bench_precision.py; `prediction_parity` is the accuracy check.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import numpy as np

PRECISIONS = ("float32", "mixed", "mixed_float16", "mixed_bfloat16")


def has_gpu() -> bool:
    """Whether TensorFlow sees a GPU (does not initialise or configure it)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def policy_name(precision: str = "float32") -> str:
    """The Keras dtype policy name for `precision` ("mixed" picks by device)."""
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}. Received: precision={precision!r}")
    if precision == "mixed":
        return "mixed_float16" if has_gpu() else "mixed_bfloat16"
    return precision


@contextlib.contextmanager
def precision_scope(precision: str = "float32") -> Iterator[str]:
    """Set Keras' global dtype policy for the block and restore the previous one after it.

    Yields the policy name in force.
    """
    name = policy_name(precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield name
    finally:
        keras.config.set_dtype_policy(previous)


def with_float32_output(model: keras.Model) -> keras.Model:
    """`model` itself when its output layers compute in float32; else a copy where they do.

    The copy (`keras.models.clone_model`: same layer names, weights and trainable flags)
    differs only by the dtype policy of the layers that produce the outputs (`predictions`),
    so the probabilities are computed, and returned, in float32.
    """
    outputs = {tensor._keras_history.operation.name for tensor in model.outputs}
    if all(model.get_layer(name).compute_dtype == "float32" for name in outputs):
        return model

    def clone(source: keras.layers.Layer) -> keras.layers.Layer:
        config = source.get_config()
        if source.name in outputs:
            config["dtype"] = "float32"
        return source.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    for original, cloned in zip(model.layers, copy.layers):
        cloned.trainable = original.trainable
    return copy


def prediction_parity(reference: keras.Model, candidate: keras.Model, images: np.ndarray, *,
                      batch_size: int = 8) -> dict:
    """How closely two models with the same weights agree on `images` (accuracy parity check).

    Returns max and mean absolute difference of the class probabilities and the fraction of
    images given the same class (arg max, or threshold 0.5 for one sigmoid unit).
    """
    first = np.asarray(reference.predict(images, batch_size=batch_size, verbose=0), np.float64)
    second = np.asarray(candidate.predict(images, batch_size=batch_size, verbose=0), np.float64)
    if first.shape != second.shape:
        raise ValueError("The two models must give outputs of one shape. "
                         f"Received: {first.shape} and {second.shape}")

    def classes(p: np.ndarray) -> np.ndarray:
        return (p[:, 0] >= 0.5).astype(int) if p.shape[-1] == 1 else p.argmax(-1)

    difference = np.abs(first - second)
    return {"max_abs_diff": float(difference.max()), "mean_abs_diff": float(difference.mean()),
            "same_class": float(np.mean(classes(first) == classes(second)))}
