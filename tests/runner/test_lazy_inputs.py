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
from mammo_keras.training.fit import PREDICT_BATCH
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
@pytest.mark.parametrize("budget_items", [None, 3])
def test_a_run_from_the_mapped_images_gives_the_predictions_of_the_arrays_in_memory(tmp_path, monkeypatch,
                                                                                 budget_items):
    # budget_items: room for that many items in a prediction batch's byte budget (large items, in
    # small): validation and prediction batches shrink alike on both paths.
    config, data = _whole_image_inputs(tmp_path, monkeypatch)
    row = runner_inputs.scaled(data, config.input_scale)
    if budget_items is not None:
        monkeypatch.setattr(fit, "PREDICT_BATCH_BYTES", budget_items * 4 * int(np.prod(row.images.shape[1:])))
    handed = {"mapped": [], "in_memory": []}
    validation = {"mapped": [], "in_memory": []}  # (lazy?, batch size) of each stage's validation predictions
    real_train, real_batches = fit.make_dataset, fit.FixedBatches.__init__

    def batches(self, inputs, *a, **k):
        real_batches(self, inputs, *a, **k)
        validation[name].append((is_lazy(inputs), self.batch_size))
    monkeypatch.setattr(fit, "make_dataset", lambda images, *a, **k: handed[name].append(images) or
                        real_train(images, *a, **k))
    monkeypatch.setattr(fit.FixedBatches, "__init__", batches)
    shape = (*config.input_hw, config.input_channels)
    outcomes = {}
    for name, images in (("mapped", row.images), ("in_memory", np.asarray(row.images))):
        out = tmp_path / name
        predictions = cv.holdout(lambda: _tiny_cnn(shape), images, row.index, _spec(config), out,
                                 fractions=config.fractions, seed=config.seed)
        metrics = json.loads((out / "test" / "metrics.json").read_text())
        outcomes[name] = predictions, {k: v for k, v in metrics.items() if k != "seconds"}
    # training reads the mapped rows per batch; so does each epoch's validation pass (`ValidationMetrics`)
    assert len(handed["mapped"]) == 1 and is_lazy(handed["mapped"][0])
    assert len(handed["in_memory"]) == 1 and not is_lazy(handed["in_memory"][0])
    batch = PREDICT_BATCH if budget_items is None else budget_items
    assert validation["mapped"] and {lazy for lazy, _ in validation["mapped"]} == {True}
    assert {lazy for lazy, _ in validation["in_memory"]} == {False}
    # validation and test predictions in batches of the byte budget, alike on both paths
    assert {size for _, size in validation["mapped"]} == {size for _, size in validation["in_memory"]} == {batch}
    pd.testing.assert_frame_equal(outcomes["mapped"][0], outcomes["in_memory"][0], check_exact=True)
    logs = {name: pd.read_csv(tmp_path / name / "test" / "log.csv").drop(columns="seconds") for name in outcomes}
    assert {"val_loss", "val_accuracy", "val_auc"} <= set(logs["mapped"].columns)  # what stopping and selection saw
    pd.testing.assert_frame_equal(logs["mapped"], logs["in_memory"], check_exact=True)
    assert outcomes["mapped"][1] == outcomes["in_memory"][1]
    assert outcomes["mapped"][0]["score"].nunique() > 1  # a model that learned something, not a constant


def _fold_peak(folder: Path, n: int, shape=(96, 80)) -> int:
    """tracemalloc's peak over one hold-out part (train, validation, test) of `n` mapped items."""
    folder.mkdir()
    _npy(folder / "images.npy", (n, *shape), seed=2)
    index = pd.DataFrame({"item_id": [f"i{i}" for i in range(n)], "patient_id": [f"p{i // 2}" for i in range(n)],
                          "image_id": [f"i{i}" for i in range(n)], "label": (np.arange(n) // 2) % 2})
    images = ItemRows.open(folder / "images.npy").resized(None, shape).scaled(255.0)
    spec = dataclasses.replace(_spec(load_config("shen2017/table2", "tiny")), flip_tta=False,
                               stages=(Stage("fit", 1, optimizer="adam", learning_rate=1e-3, batch_size=8),))
    tracemalloc.start()
    try:
        cv.holdout(lambda: _tiny_cnn((*shape, 1)), images, index, spec, folder / "out",
                   fractions=(0.8, 0.1, 0.1), seed=0)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_part_from_mapped_rows_holds_a_few_batches_however_large_the_set(tmp_path):
    # NumPy's (and Python's) allocations, which tracemalloc sees. Items of 96x80 float32 (30.7 kB): a
    # prediction batch (32 items) is 0.98 MB; 1600 items are 49 MB, their validation and test parts
    # (10% each) 4.9 MB. With the arrays in memory a part peaked at 2.4x the set (89 MB for 1200 items);
    # with the training part read per batch but validation from memory, at fixed costs plus the
    # validation part (12.6 MB for 1200 items, 6.7 MB for 300). Every part read per batch: measured
    # 8.7 MB for both 400 and 1600 items (5.5 MB for 400 items of 48x40: about 4.5 MB of fixed costs
    # and 4 prediction batches in flight).
    batch = PREDICT_BATCH * 96 * 80 * 4
    small, large = _fold_peak(tmp_path / "small", 400), _fold_peak(tmp_path / "large", 1600)
    assert large < 6e6 + 6 * batch, f"peak {large / 1e6:.1f} MB of NumPy memory for 1600 items (49 MB)"
    # Flat: four times the set (+37 MB) adds at most a few batches in flight, whose number varies with
    # tf.data's thread timing (measured: +0.0 and +1.8 MB; validation from memory: +9.7 MB, 300 -> 1200).
    assert large - small < 4 * batch, f"peak {small / 1e6:.1f} MB for 400 items, {large / 1e6:.1f} MB for 1600"


def test_baseline_features_read_lazy_rows_a_chunk_at_a_time_with_the_values_of_the_arrays(tmp_path, monkeypatch):
    from mammo_keras.evaluation.baseline import baseline_features

    array = _npy(tmp_path / "images.npy", (70, 16, 12), seed=3) * np.float32(255.0)  # 70 items: two chunks
    np.save(tmp_path / "images.npy", array)
    lazy = ItemRows.open(tmp_path / "images.npy").resized(None, (16, 12))
    expected, names = baseline_features(array, levels=16)

    def whole(*_, **__):
        raise AssertionError("the baseline read the whole set into memory")

    monkeypatch.setattr(ItemRows, "__array__", whole)
    features, lazy_names = baseline_features(lazy, levels=16)
    assert lazy_names == names
    np.testing.assert_array_equal(features, expected)


def test_chunks_hold_64_items_or_fewer_when_the_items_are_large(tmp_path, monkeypatch):
    from mammo_keras.data import rows as rows_module

    _npy(tmp_path / "images.npy", (70, 16, 12))
    assert [len(chunk) for chunk in ItemRows.open(tmp_path / "images.npy").chunks()] == [64, 6]
    monkeypatch.setattr(rows_module, "CHUNK_BYTES", 10 * 16 * 12 * 4)  # room for 10 float32 items
    assert [len(chunk) for chunk in ItemRows.open(tmp_path / "images.npy").chunks()] == [10] * 7
