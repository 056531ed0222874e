"""The classical baseline: scikit-image features with values worked out by hand, and fold-exact training."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mammo_keras.data.splits import LeakageError
from mammo_keras.evaluation import baseline as bl


def _checkerboard(size: int = 16) -> np.ndarray:
    return (np.indices((size, size)).sum(axis=0) % 2).astype(np.float32)


def _named(features: np.ndarray, names: list[str]) -> dict[str, float]:
    return dict(zip(names, features.tolist()))


def test_features_of_a_checkerboard_and_a_flat_item_by_hand():
    items = np.stack([_checkerboard(), np.full((16, 16), 0.3, np.float32)])
    features, names = bl.baseline_features(items)
    assert features.shape == (2, len(names)) and names == bl.feature_names()
    board, flat = _named(features[0], names), _named(features[1], names)
    # Checkerboard at 32 levels: horizontal and vertical neighbours differ by 31, diagonal ones
    # are equal, so the mean contrast over the 4 angles at distance 1 is (961 + 0 + 961 + 0) / 4;
    # at distance 2 every neighbour is equal.
    assert board["glcm_contrast_d1"] == pytest.approx(480.5)
    assert board["glcm_contrast_d2"] == pytest.approx(0.0)
    assert board["glcm_homogeneity_d2"] == pytest.approx(1.0)
    assert board["int_mean"] == pytest.approx(0.5) and board["int_std"] == pytest.approx(0.5)
    assert board["int_skewness"] == pytest.approx(0.0) and board["int_kurtosis"] == pytest.approx(-2.0)
    assert board["int_entropy"] == pytest.approx(1.0)  # two equally common grey levels: 1 bit
    # A flat item: no texture, every LBP neighbour equals the centre (code P), defined shape zeros.
    assert flat["glcm_contrast_d1"] == 0.0 and flat["glcm_energy_d4"] == pytest.approx(1.0)
    assert flat["lbp_p8_r1_8"] == pytest.approx(1.0) and flat["lbp_p16_r2_16"] == pytest.approx(1.0)
    assert flat["int_mean"] == pytest.approx(0.3) and flat["int_std"] == 0.0 and flat["int_skewness"] == 0.0
    assert flat["otsu_area_fraction"] == 0.0
    assert np.isfinite(features).all()


def test_otsu_shape_of_a_centred_square():
    item = np.zeros((20, 20), np.float32)
    item[5:15, 5:15] = 1.0
    features, names = bl.baseline_features(item[None])
    shape = _named(features[0], names)
    assert shape["otsu_area_fraction"] == pytest.approx(100 / 400)
    assert shape["otsu_extent"] == pytest.approx(1.0) and shape["otsu_solidity"] == pytest.approx(1.0)
    assert shape["otsu_axis_ratio"] == pytest.approx(1.0) and shape["otsu_centroid_offset"] == pytest.approx(0.0)


def test_pairs_use_their_lesion_part_and_lesion_boxes_come_from_the_index():
    rng = np.random.default_rng(0)
    lesion, baseline = rng.random((3, 12, 12)), rng.random((3, 12, 12))
    index = pd.DataFrame({"item_id": ["a", "b", "c"],
                          "box": [json.dumps([10, 20, 40, 30]), json.dumps([0, 0, 5, 5]), json.dumps([1, 1, 3, 9])]})
    pairs, names = bl.baseline_features(np.stack([lesion, baseline], axis=1), index, lesion_boxes=True)
    alone, _ = bl.baseline_features(lesion)
    np.testing.assert_array_equal(pairs[:, :alone.shape[1]], alone)
    boxes = pairs[:, -4:]
    assert names[-4:] == ["box_width", "box_height", "box_aspect", "box_area"]
    np.testing.assert_allclose(boxes[0], [30, 10, 3, 300])
    np.testing.assert_allclose(boxes[2], [2, 8, 0.25, 16])
    with pytest.raises(ValueError, match=r"4-number box.*Received: 1 rows without one, first item_id='b'"):
        bl.baseline_features(lesion, index.assign(box=["[1, 2, 3, 4]", "[]", "[0, 0, 1, 1]"]), lesion_boxes=True)
    with pytest.raises(ValueError, match=r"Received: images.shape=\(3, 12\)"):
        bl.baseline_features(lesion[:, 0])
    with pytest.raises(ValueError, match="Received: levels=1"):
        bl.baseline_features(lesion, levels=1)


def _toy_table(n_patients: int = 20, per_patient: int = 2, n_folds: int = 4, classes: int = 2, seed: int = 0):
    """Items whose first feature is their label plus noise: learnable, with patient-level folds."""
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(n_patients), per_patient)
    labels = np.resize(np.arange(classes), len(patients))
    items = pd.DataFrame({"item_id": [f"i{k:03d}" for k in range(len(patients))],
                          "patient_id": [f"p{p:02d}" for p in patients], "label": labels,
                          "fold": patients % n_folds})
    features = np.column_stack([labels + 0.2 * rng.standard_normal(len(labels)),
                                rng.standard_normal((len(labels), 3))])
    return features, items


@pytest.mark.parametrize("name", bl.CLASSIFIERS)
def test_fit_predict_scores_every_item_once_on_its_own_fold(tmp_path, name):
    features, items = _toy_table()
    options = {"n_estimators": 50} if name == "random_forest" else {}
    predictions = bl.fit_predict(name, features, items, seed=3, out=tmp_path, options=options)
    assert list(predictions.columns) == ["item_id", "patient_id", "label", "fold", "score"]
    merged = predictions.merge(items, on="item_id", suffixes=("", "_given"))
    assert len(merged) == len(items) and (merged["fold"] == merged["fold_given"]).all()
    # label + small noise is separable: every positive outranks every negative.
    assert bl.all_metrics(predictions["label"], predictions["score"])["auc"] == 1.0
    for fold in range(4):
        metrics = json.loads((tmp_path / f"fold_{fold}" / "metrics.json").read_text())
        assert (metrics["n_test"], metrics["n_train"], metrics["seed"]) == (10, 30, 3 + fold)
        written = pd.read_csv(tmp_path / f"fold_{fold}" / "predictions.csv")
        assert set(written["fold"]) == {fold} and len(written) == 10
    again = bl.fit_predict(name, features, items, seed=3, options=options)
    pd.testing.assert_frame_equal(predictions, again)


def test_finished_folds_are_reused_only_for_the_same_inputs(tmp_path):
    features, items = _toy_table()
    first = bl.fit_predict("logistic_regression", features, items, out=tmp_path)
    messages = []
    reused = bl.fit_predict("logistic_regression", features, items, out=tmp_path, progress=messages.append)
    assert messages.count("fold 0: done earlier, reused") == 1
    pd.testing.assert_frame_equal(first, reused, check_dtype=False)
    changed = bl.fit_predict("logistic_regression", features * 2.0 + 1.0, items, out=tmp_path,
                             progress=messages.append)
    assert len(changed) == len(items) and messages.count("fold 0: done earlier, reused") == 1


def test_multiclass_and_holdout_tables():
    features, items = _toy_table(n_patients=30, classes=3)
    predictions = bl.fit_predict("random_forest", features, items.drop(columns="fold").assign(
        split=np.where(items["fold"] == 0, "test", np.where(items["fold"] == 1, "val", "train"))),
        options={"n_estimators": 50})
    assert list(predictions.columns) == ["item_id", "patient_id", "label", "fold", "pred", "p_0", "p_1", "p_2"]
    assert set(predictions["fold"]) == {0} and len(predictions) == int((items["fold"] == 0).sum())
    np.testing.assert_allclose(predictions[["p_0", "p_1", "p_2"]].sum(axis=1), 1.0)
    assert (predictions["pred"] == predictions["label"]).mean() == 1.0


def test_bad_inputs_are_errors():
    features, items = _toy_table()
    leaky = items.copy()
    leaky.loc[0, "fold"] = 3  # patient p00 now sits in folds 0 and 3
    with pytest.raises(LeakageError, match="p00"):
        bl.fit_predict("logistic_regression", features, leaky)
    with pytest.raises(ValueError, match=r"Valid names.*Received: name='svm'"):
        bl.fit_predict("svm", features, items)
    with pytest.raises(ValueError, match=r"random_forest takes the options .*Received: \['trees'\]"):
        bl.fit_predict("random_forest", features, items, options={"trees": 10})
    with pytest.raises(ValueError, match="a `fold` column .* or a `split` column"):
        bl.fit_predict("random_forest", features, items.drop(columns="fold"))
    with pytest.raises(ValueError, match=r"class numbers 0..k-1.*Received: labels \[0, 2\]"):
        bl.fit_predict("random_forest", features, items.assign(label=items["label"] * 2))
    with pytest.raises(ValueError, match=r"Received: features.shape=\(39, 4\) for 40 items"):
        bl.fit_predict("random_forest", features[:-1], items)
