"""Every registered model, at a tiny size: builds, predicts probabilities, learns, round-trips.

Image inputs are uniform in [0, 1], or in [0, 255] for models that record ImageNet input
scaling (an `ImageNetScaling` layer). A new builder is tested here with no extra code as long as `models.get(name, input_shape=(32,
32, 3))` builds it with weights=None. When it needs other small arguments (a larger minimum
input, narrower layers to stay fast), add a pattern to TINY_KWARGS; the first matching pattern
wins, so put specific names before wildcards.
"""
from __future__ import annotations

import fnmatch

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO

from mammo_keras import io, models, protocol
from mammo_keras.models.layers import ImageNetScaling

TINY_RESNET_TOP = {"blocks": [((8, 8, 16), 1)]}
TINY_KWARGS: dict[str, dict] = {
    "chougrad_inceptionv3": {"input_shape": (75, 75, 1), "head_units": (8, 4)},
    "chougrad_*": {"input_shape": (32, 32, 1), "head_units": (8, 4)},
    "coccomini_inceptionv3": {"input_shape": (75, 75, 1), "hidden": 8},
    "coccomini_scratch_cnn": {"input_shape": (32, 32, 1), "fc_units": 16},
    # Approaches A and B wrap a backbone already tested on its own: VGG16 is the quickest to build.
    "coccomini_approach_a": {"input_shape": (32, 32, 1), "hidden": 8, "encoder": "vgg16"},
    "coccomini_approach_b": {"input_shape": (32, 32, 1), "hidden": 8, "family": "vgg16"},
    "coccomini_*": {"input_shape": (32, 32, 1), "hidden": 8},
    "jain_levy_alexnet": {"input_shape": (67, 67, 3)},
    "shen_whole_*_heatmap_fc": {"input_shape": (64, 64, 3), "patch_input_shape": (32, 32, 3),
                                "heatmap_pool": 1, "fc_units": (8, 4)},
    "shen_whole_resnet50*": {"input_shape": (64, 64, 3), "patch_input_shape": (32, 32, 3),
                             **TINY_RESNET_TOP},
    "shen_whole_vgg16*": {"input_shape": (64, 64, 3), "patch_input_shape": (32, 32, 3),
                          "blocks": [(8, 1)]},
}
DEFAULT_TINY_KWARGS = {"input_shape": (32, 32, 3)}
BATCH = 4
TRAIN_STEPS = 1
# Unbalanced labels: even a model whose output starts constant gets a gradient on its bias.
LABELS = (0, 0, 0, 1)
# Plain SGD with a clipped step (norm <= 0.01) is a descent step on a smooth objective; Adam's
# first step moves every weight by the learning rate, a large step for 20M weights.
LEARNING_RATE = 0.01


def tiny_kwargs(name: str) -> dict:
    """The small build arguments of a registered model (weights=None always)."""
    for pattern, kwargs in TINY_KWARGS.items():
        if fnmatch.fnmatch(name, pattern):
            return {**kwargs, "weights": None}
    return {**DEFAULT_TINY_KWARGS, "weights": None}


def _batch(model: keras.Model):
    """A fixed batch for the model's inputs, with one label per sample for its output."""
    rng = np.random.default_rng(0)
    high = 255.0 if _has_imagenet_scaling(model) else 1.0
    inputs = [rng.uniform(0.0, high, (BATCH, *tensor.shape[1:])).astype("float32")
              for tensor in model.inputs]
    units = model.output_shape[-1]
    classes = np.array(LABELS)
    labels = classes[:, None].astype("float32") if units == 1 else np.eye(units, dtype="float32")[classes]
    return (inputs[0] if len(inputs) == 1 else inputs), labels


def _has_imagenet_scaling(model: keras.Model) -> bool:
    """Whether the model records ImageNet input scaling, i.e. expects pixels in [0, 255]."""
    return any(isinstance(layer, ImageNetScaling)
               or (isinstance(layer, keras.Model) and _has_imagenet_scaling(layer))
               for layer in model.layers)


def _predict(model: keras.Model, inputs) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(inputs, training=False))


def _objective(model: keras.Model, inputs, labels):
    """Cross-entropy + the model's regularisation losses, in inference mode.

    Inference mode makes the objective a fixed function of the weights (no dropout masks, no
    batch statistics), so a small step along its gradient must lower it.
    """
    outputs = model(inputs, training=False)
    if labels.shape[1] == 1:
        data_loss = keras.losses.binary_crossentropy(labels, outputs)
    else:
        data_loss = keras.losses.categorical_crossentropy(labels, outputs)
    return keras.ops.mean(data_loss) + sum(model.losses, keras.ops.zeros(()))


def _loss(model: keras.Model, inputs, labels) -> float:
    return float(keras.ops.convert_to_numpy(_objective(model, inputs, labels)))


def _train_step(model: keras.Model, optimizer, inputs, labels) -> None:
    with tf.GradientTape() as tape:
        objective = _objective(model, inputs, labels)
    gradients = tape.gradient(objective, model.trainable_variables)
    assert any(g is not None for g in gradients), "no gradient reaches a trainable weight"
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))


# Detectors (task "detection") take boxes, not labels: tests/models/test_detection.py covers them.
CLASSIFIERS = [name for name in models.list() if models.entry(name).task != "detection"]


# The papers are the folders of experiments/ that describe one: paper_tables.yaml or protocol.yaml,
# unless protocol.yaml says `no_paper` (tasks of our own, e.g. mias_tasks, built from the papers' models).
PAPER_FOLDERS = sorted(folder.name for folder in (REPO / "experiments").iterdir()
                       if ((folder / "paper_tables.yaml").is_file() or (folder / "protocol.yaml").is_file())
                       and not protocol.no_paper(folder.name))


def test_zoo_registers_the_models_of_every_paper_folder():
    assert PAPER_FOLDERS and "base" not in PAPER_FOLDERS  # base/ holds profiles, not a paper
    for paper in PAPER_FOLDERS:
        assert models.list(paper=paper), f"experiments/{paper}/ has no registered model (models.list(paper=...))"
    strays = {entry.name: entry.paper for entry in models.entries() if entry.paper not in PAPER_FOLDERS}
    assert not strays, f"registered models whose paper has no experiments/<paper>/ folder: {strays}"
    assert models.list("chougrad_*") == ["chougrad_inceptionv3", "chougrad_resnet50", "chougrad_vgg16"]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_model_builds_learns_and_round_trips(name, tmp_path):
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = models.get(name, **tiny_kwargs(name))
    inputs, labels = _batch(model)

    probabilities = _predict(model, inputs)
    assert probabilities.shape == (BATCH, model.output_shape[-1])
    assert np.all((probabilities >= 0.0) & (probabilities <= 1.0))
    if probabilities.shape[1] > 1:
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)

    training_output = keras.ops.convert_to_numpy(model(inputs, training=True))
    assert training_output.shape == probabilities.shape
    loss_before = _loss(model, inputs, labels)
    optimizer = keras.optimizers.SGD(LEARNING_RATE, global_clipnorm=1.0)
    for _ in range(TRAIN_STEPS):
        _train_step(model, optimizer, inputs, labels)
    loss_after = _loss(model, inputs, labels)
    assert loss_after < loss_before, f"{name}: loss {loss_before:.5f} -> {loss_after:.5f}"

    expected = _predict(model, inputs)
    io.save(model, tmp_path / name, architecture=name)
    for fmt in ("json", "keras"):
        reloaded = io.load(tmp_path / name, format=fmt)
        np.testing.assert_allclose(_predict(reloaded, inputs), expected, atol=1e-6,
                                   err_msg=f"{name}: {fmt} round-trip")
    assert io.read_manifest(tmp_path / name)["architecture"] == name
