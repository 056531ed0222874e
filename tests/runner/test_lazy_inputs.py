"""The runner trains from a memory-mapped images.npy: rows chosen, resized, scaled and a fold's mean
subtracted per batch (`data.rows.ItemRows`), with the values, predictions and metrics of the arrays
loaded whole, and without holding the set in memory."""
from __future__ import annotations

import dataclasses
import json
import tracemalloc
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from mammo_keras.config import load_config
from mammo_keras.data.prepare import load_prepared
from mammo_keras.data.recipes import FittedInputs, InputRecipe, Normalisation
from mammo_keras.data.rows import ItemRows, is_lazy
from mammo_keras.runner import inputs as runner_inputs
from mammo_keras.training import cv, fit
from mammo_keras.training.stages import Stage


def _npy(path: Path, shape, seed=0) -> np.ndarray:
    array = np.random.default_rng(seed).random(shape, dtype=np.float32)
    np.save(path, array)
    return array


def test_item_rows_apply_each_step_as_the_arrays_did(tmp_path):
    array = _npy(tmp_path / "images.npy", (30, 12, 10))
    rows = ItemRows.open(tmp_path / "images.npy").resized(None, (12, 10))
    picked = np.array([29, 3, 3, 17, 0, 8])
    lazy = rows[picked][np.array([True, False, True, True, False, True])].scaled(255.0)
    expected = array[picked][[0, 2, 3, 5]] * np.float32(255.0)
    assert isinstance(lazy, ItemRows) and lazy.shape == (4, 12, 10)
    np.testing.assert_array_equal(np.asarray(lazy), expected)  # bitwise: the same float32 arithmetic
    mean = np.float32(0.37)
    np.testing.assert_array_equal(lazy.minus(mean).read(np.array([2, 0])), (expected - mean)[[2, 0]])
    assert lazy.with_channels(3).read(np.array([1])).shape == (1, 12, 10, 3)
    np.testing.assert_array_equal(lazy[1], expected[1])
    with pytest.raises(ValueError, match="before subtracting a mean"):
        lazy.minus(mean).scaled(2.0)
    recipe = InputRecipe("shen", {}, (6, 5))
    np.testing.assert_array_equal(np.asarray(ItemRows.open(tmp_path / "images.npy").resized(None, (6, 5))[picked]),
                                  recipe.resized(array[picked]))


def test_training_part_statistics_on_lazy_rows_equal_the_in_memory_ones(tmp_path):
    array = _npy(tmp_path / "images.npy", (200, 9, 7), seed=1) * np.float32(255.0)
    np.save(tmp_path / "images.npy", array)
    lazy = ItemRows.open(tmp_path / "images.npy").resized(None, (9, 7))
    image = Normalisation("train_mean_image")
    np.testing.assert_array_equal(image.fit(lazy), image.fit(array))  # item by item, as NumPy's axis-0 sum
    grey = Normalisation("train_mean_grey")
    assert grey.fit(lazy) == pytest.approx(grey.fit(array), rel=1e-14)
    assert np.float32(grey.fit(lazy)) == np.float32(grey.fit(array))  # the precision it is subtracted in
    fitted, x_fit, _ = FittedInputs.fit(lazy, None, normalisation=grey, offline=None, crop=None, seed=0)
    assert is_lazy(x_fit)
    np.testing.assert_array_equal(np.asarray(x_fit), array - np.float32(fitted.mean))


def _whole_image_inputs(tmp_path, monkeypatch):
    monkeypatch.delenv("MAMMO_DATA", raising=False)
    config = load_config("shen2017/table2", "tiny")
    data = runner_inputs.load_inputs(config, "phantom", None, tmp_path / "work", lambda _: None)
    return config, data


@pytest.mark.usefixtures("isolated_cache")
def test_the_runner_maps_the_prepared_images_and_reads_what_loading_them_gave(tmp_path, monkeypatch):
    config, data = _whole_image_inputs(tmp_path, monkeypatch)
    assert is_lazy(data.images) and data.images.shape == (len(data.index), *config.input_hw)
    folder = next((tmp_path / "work" / "prepared").iterdir())
    items, index = load_prepared(folder, mmap=False)  # what the runner did before: the whole file in memory
    rows = runner_inputs.limit_patients(index, config.max_items, config.seed)
    before = InputRecipe.of(config).resized(items[rows]) * np.float32(config.input_scale)
    row = runner_inputs.scaled(data, config.input_scale)
    assert is_lazy(row.images) and data.images.scales == ()  # scaling a row records the factor, reads nothing
    np.testing.assert_array_equal(np.asarray(row.images), before)


def _tiny_cnn(shape):
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="predictions")(x))


def _spec(config):
    from mammo_keras.data.pipeline import preset

    stages = (Stage("fit", 2, optimizer="adam", learning_rate=1e-3, batch_size=4, early_stopping_patience=1),)
    return cv.TrainSpec(stages=stages, augment=preset(config.augment), normalisation=Normalisation(config.normalisation),
                        flip_tta=True, selection="best_val_auc", backup=False)


@pytest.mark.usefixtures("isolated_cache")
def test_a_run_from_the_mapped_images_gives_the_predictions_of_the_arrays_in_memory(tmp_path, monkeypatch):
    config, data = _whole_image_inputs(tmp_path, monkeypatch)
    row = runner_inputs.scaled(data, config.input_scale)
    handed = []
    real = fit.make_dataset
    monkeypatch.setattr(fit, "make_dataset", lambda images, *a, **k: handed.append(images) or real(images, *a, **k))
    shape = (*config.input_hw, config.input_channels)
    outcomes = {}
    for name, images in (("mapped", row.images), ("in_memory", np.asarray(row.images))):
        out = tmp_path / name
        predictions = cv.holdout(lambda: _tiny_cnn(shape), images, row.index, _spec(config), out,
                                 fractions=config.fractions, seed=config.seed)
        metrics = json.loads((out / "test" / "metrics.json").read_text())
        outcomes[name] = predictions, {k: v for k, v in metrics.items() if k != "seconds"}
    assert is_lazy(handed[0]) and not is_lazy(handed[1])  # training read the mapped rows per batch
    pd.testing.assert_frame_equal(outcomes["mapped"][0], outcomes["in_memory"][0], check_exact=True)
    assert outcomes["mapped"][1] == outcomes["in_memory"][1]
    assert outcomes["mapped"][0]["score"].nunique() > 1  # a model that learned something, not a constant


def test_training_from_mapped_rows_holds_far_less_than_the_set(tmp_path):
    n, shape = 1200, (96, 80)  # 36.9 MB of float32 items; batches of 8 are 0.25 MB
    _npy(tmp_path / "images.npy", (n, *shape), seed=2)
    size = (tmp_path / "images.npy").stat().st_size
    index = pd.DataFrame({"item_id": [f"i{i}" for i in range(n)], "patient_id": [f"p{i // 2}" for i in range(n)],
                          "image_id": [f"i{i}" for i in range(n)], "label": (np.arange(n) // 2) % 2})
    images = ItemRows.open(tmp_path / "images.npy").resized(None, shape).scaled(255.0)
    spec = dataclasses.replace(_spec(load_config("shen2017/table2", "tiny")), flip_tta=False,
                               stages=(Stage("fit", 1, optimizer="adam", learning_rate=1e-3, batch_size=8),))
    tracemalloc.start()
    try:
        cv.holdout(lambda: _tiny_cnn((*shape, 1)), images, index, spec, tmp_path / "out",
                   fractions=(0.8, 0.1, 0.1), seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # NumPy's (and Python's) allocations, which tracemalloc sees: with the arrays in memory this run peaks
    # at 2.4x the set (measured: 89 MB; the training part's float32 copy, its tensor feed, the test part);
    # read per batch, at fixed costs plus the validation part (10%, the one part Keras evaluates as
    # arrays) and the batches in flight: measured 11.7-15.0 MB here, 9.9 MB for half the set.
    assert peak < 0.5 * size, f"peak {peak / 1e6:.1f} MB of NumPy memory for a {size / 1e6:.1f} MB set"
