"""The engine beyond one binary image input: paired items, k classes, flip scores, subsets, ensembles."""
from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest

from mammo_keras.data.pipeline import AugmentConfig, make_dataset
from mammo_keras.evaluation.metrics import auc
from mammo_keras.training import cv
from mammo_keras.training.ensembling import combine
from mammo_keras.training.fit import as_model_input
from mammo_keras.training.stages import Stage, apply_trainable, trainable_flags

STAGE = Stage("s", 2, optimizer="adam", learning_rate=1e-2, batch_size=8)


def _index(n, labels, per_patient=2):
    return pd.DataFrame({"item_id": [f"i{i:03d}" for i in range(n)], "image_id": [f"i{i:03d}" for i in range(n)],
                         "patient_id": [f"p{i // per_patient:03d}" for i in range(n)], "label": labels})


def pair_model():
    baseline = keras.Input((8, 8, 1), name="baseline")
    abnormality = keras.Input((8, 8, 1), name="abnormality")
    pool = keras.layers.GlobalAveragePooling2D(name="pool")
    difference = keras.layers.Subtract(name="difference")([pool(baseline), pool(abnormality)])
    return keras.Model([baseline, abnormality], keras.layers.Dense(1, activation="sigmoid", name="out")(difference))


def test_paired_items_feed_inputs_by_name():
    images = np.stack([np.full((3, 8, 8), 1.0), np.full((3, 8, 8), 2.0)], axis=1)  # parts: lesion, baseline
    inputs = as_model_input(images, pair_model())
    assert [a.shape for a in inputs] == [(3, 8, 8, 1), (3, 8, 8, 1)]
    assert inputs[0].max() == 2.0 and inputs[1].max() == 1.0  # input "baseline" gets part 1
    with pytest.raises(ValueError, match=r"needs paired items .*Received: shape=\(3, 8, 8\)"):
        as_model_input(images[:, 0], pair_model())


def test_paired_dataset_applies_one_transform_to_both_parts():
    part = np.random.default_rng(0).random((4, 16, 16, 1)).astype(np.float32)
    dataset = make_dataset([part, part.copy()], np.zeros(4), batch_size=4, shuffle=False, seed=3,
                           augment=AugmentConfig(rotation_range=30, horizontal_flip=True))
    (first, second), _ = next(iter(dataset))
    assert not np.allclose(first.numpy(), part)  # transformed
    np.testing.assert_allclose(first.numpy(), second.numpy())  # identically


def _rows(table):
    """The image rows of a predictions table (item "i007" is row 7 of `_index`)."""
    return table["item_id"].str[1:].astype(int).to_numpy()


def test_siamese_pairs_train_and_score_in_cross_validation(tmp_path):
    """The label is in the baseline part only (part 1; part 0, the lesion, is noise): the engine
    must feed part 1 to the input "baseline" to learn it, and score with the model it trained."""
    rng = np.random.default_rng(0)
    labels = np.arange(24) % 2
    lesion = rng.normal(0.5, 0.1, (24, 8, 8))
    baseline = rng.normal(0.0, 0.1, (24, 8, 8)) + labels[:, None, None]  # only this part tells the label
    images = np.stack([lesion, baseline], axis=1).astype(np.float32)
    by_hand = [images[:, 1, ..., None], images[:, 0, ..., None]]  # pair_model's inputs: baseline, abnormality
    seen = {}

    def record(model, test_images, test_predictions, fold_dir):
        # The trained model of this fold, fed by hand; its test images are the pairs as stored.
        np.testing.assert_array_equal(test_images, images[_rows(test_predictions)])
        seen[fold_dir.name] = (model.predict(by_hand, verbose=0).ravel(),
                               model.predict(by_hand[::-1], verbose=0).ravel())

    stage = Stage("s", 3, optimizer="adam", learning_rate=0.2, batch_size=4)
    predictions = cv.cross_validate(pair_model, images, _index(24, labels), [stage], tmp_path, n_splits=2,
                                    explain=record)
    assert sorted(seen) == ["fold_0", "fold_1"] and sorted(_rows(predictions)) == list(range(24))
    for fold, (scores, swapped) in seen.items():
        for name in ("predictions.csv", "val_predictions.csv"):  # the saved scores are the model's
            saved = pd.read_csv(tmp_path / fold / name)
            np.testing.assert_allclose(saved["score"], scores[_rows(saved)], rtol=1e-6, atol=1e-7,
                                       err_msg=f"{fold}/{name}")
        test = pd.read_csv(tmp_path / fold / "predictions.csv")
        assert auc(test["label"], test["score"]) == 1.0  # learnt, from the baseline part
        assert auc(labels, swapped) < 0.5 < auc(labels, scores) == 1.0  # the parts are not interchangeable
        log = pd.read_csv(tmp_path / fold / "log.csv")
        assert len(log) == 3 and log["loss"].iloc[-1] < log["loss"].iloc[0]  # it trained


def test_multiclass_predictions_and_accuracy(tmp_path):
    def three_classes():
        inputs = keras.Input((8, 8, 1))
        x = keras.layers.GlobalAveragePooling2D()(inputs)
        return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="predictions")(x))

    labels = np.arange(30) % 3
    images = np.repeat(labels[:, None, None].astype(np.float32), 8, 1).repeat(8, 2)
    predictions, metrics = cv.train_and_test(
        three_classes, images, _index(30, labels), [Stage("s", 40, optimizer="adam", learning_rate=0.1, batch_size=30)],
        tmp_path, fit_rows=np.arange(0, 24), val_rows=np.array([], int), test_rows=np.arange(24, 30), fold=0, seed=0)
    assert {"pred", "p_0", "p_1", "p_2"} <= set(predictions.columns) and "score" not in predictions
    np.testing.assert_allclose(predictions[["p_0", "p_1", "p_2"]].sum(axis=1), 1.0, atol=1e-5)
    assert metrics["accuracy"] == pytest.approx(np.mean(predictions["pred"] == predictions["label"]))
    assert metrics["accuracy"] == 1.0  # the class is the (constant) image value: learnable exactly


def test_flip_scores_are_the_mean_over_four_flips():
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    images = np.random.default_rng(1).random((5, 4, 4, 1)).astype(np.float32)
    columns = cv.prediction_columns(model, images, flip_tta=True)
    flipped = [images, images[:, :, ::-1], images[:, ::-1], images[:, ::-1, ::-1]]
    expected = np.mean([model.predict(f, verbose=0).ravel() for f in flipped], axis=0)
    np.testing.assert_allclose(columns["score_tta"], expected, rtol=1e-5)
    assert not np.allclose(columns["score"], columns["score_tta"])


def test_holdout_trains_on_nested_patient_subsets(tmp_path):
    index = _index(40, np.arange(40) % 2)
    small = cv._first_patients(index, np.arange(30), 5, seed=0)
    larger = cv._first_patients(index, np.arange(30), 9, seed=0)
    assert index.iloc[small]["patient_id"].nunique() == 5 and set(small) < set(larger)
    with pytest.raises(ValueError, match="Received: train_patients=16"):
        cv._first_patients(index, np.arange(30), 16, seed=0)


def test_as_built_keeps_the_builders_trainable_flags():
    model = pair_model()
    model.get_layer("out").trainable = False
    built = trainable_flags(model)
    apply_trainable(model, "all")
    assert model.get_layer("out").trainable
    apply_trainable(model, "as_built", built)  # back to what the builder set
    assert not model.get_layer("out").trainable


def _member(folder, scores, val_scores, labels, val_labels):
    for fold in (0, 1):
        part = folder / f"fold_{fold}"
        part.mkdir(parents=True)
        pd.DataFrame({"item_id": [f"{fold}_{i}" for i in range(len(labels))], "patient_id": range(len(labels)),
                      "label": labels, "fold": fold, "score": scores}).to_csv(part / "predictions.csv", index=False)
        pd.DataFrame({"item_id": [f"v{i}" for i in range(len(val_labels))], "patient_id": 0, "label": val_labels,
                      "fold": fold, "score": val_scores}).to_csv(part / "val_predictions.csv", index=False)


def test_ensembles_of_saved_scores(tmp_path):
    labels, val_labels = np.array([0, 1, 0, 1]), np.array([0, 1, 1, 0])
    _member(tmp_path / "good", [0.2, 0.8, 0.3, 0.9], [0.1, 0.9, 0.8, 0.2], labels, val_labels)  # right on val
    _member(tmp_path / "bad", [0.9, 0.1, 0.6, 0.4], [0.9, 0.1, 0.2, 0.8], labels, val_labels)  # wrong on val
    members = {"good": tmp_path / "good", "bad": tmp_path / "bad"}
    average = combine(members, "average", tmp_path / "avg")
    np.testing.assert_allclose(average["score"][:4], [0.55, 0.45, 0.45, 0.65])
    weighted = combine(members, "weighted_average", tmp_path / "wavg", grid=(0.0, 1.0))
    np.testing.assert_allclose(weighted["score"][:4], [0.2, 0.8, 0.3, 0.9])  # the validation picks "good"
    record = json.loads((tmp_path / "wavg" / "fold_1" / "ensemble.json").read_text())
    assert record["weights"] == [1.0, 0.0] and record["val_accuracy"] == 1.0
    stacked = combine(members, "stack", tmp_path / "stack", hidden=(4,))
    assert len(stacked) == 8 and stacked["score"].between(0, 1).all()
    assert (tmp_path / "stack" / "fold_0" / "predictions.csv").is_file()
    with pytest.raises(FileNotFoundError, match="has parts"):
        combine({"good": tmp_path / "good", "none": tmp_path / "none"}, "average", tmp_path / "x")
    with pytest.raises(ValueError, match="Received: method='vote'"):
        combine(members, "vote", tmp_path / "x")
