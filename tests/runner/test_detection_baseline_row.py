"""The detection table's floor row (`baseline: {detector: brightest_blobs}`): its options are chosen on
the non-test images only, it is scored like the trained rows, and bad rows are refused on load."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage.draw import disk

from mammo_keras.config import ModelRow, load_config
from mammo_keras.evaluation.detection_baseline import detect
from mammo_keras.runner import kinds
from mammo_keras.runner.detection import baseline_candidates, run_baseline_row

RADIUS = 8


def _part(seed: int, n: int, prefix: str) -> dict:
    """n 96 x 96 breasts, each with one bright disc of radius 8 somewhere inside, and its true box."""
    rng = np.random.default_rng(seed)
    images, boxes = [], []
    for _ in range(n):
        image = np.full((96, 96), 0.02)
        image[4:92, 4:92] = 0.35 + 0.02 * rng.standard_normal((88, 88))
        row, col = (int(v) for v in rng.integers(20, 76, size=2))
        image[disk((row, col), RADIUS, shape=image.shape)] = 0.8
        images.append(image)
        boxes.append(np.array([[col - RADIUS, row - RADIUS, col + RADIUS + 1, row + RADIUS + 1]], dtype=np.float32))
    items = pd.DataFrame({"image_id": [f"{prefix}{i}" for i in range(n)], "n_lesions": 1})
    return {"items": items, "images": np.stack(images).astype(np.float32), "boxes": boxes, "scales": [1.0] * n}


def _row(grid: dict) -> ModelRow:
    return ModelRow("baseline", "baseline_blobs", baseline={"detector": "brightest_blobs", "grid": grid,
                                                             "options": {"max_detections": 5}})


def test_options_are_chosen_on_the_non_test_images_and_scored_on_the_test_images(tmp_path):
    config = load_config("hamed2020/table3", profile="tiny", overrides={"n_bootstrap": 20})
    split = {"train": _part(0, 6, "tr"), "val": _part(1, 2, "va"), "test": _part(2, 4, "te")}
    # box 17 (the disc's own extent) fits; box 4 never reaches IoU 0.5 with a 17-px disc
    row = _row({"box_size": [4, 17], "sigma": [2.0]})
    table, summary = run_baseline_row(config, row, split, tmp_path, progress=lambda _: None)
    selection = pd.read_csv(tmp_path / "selection.csv")
    assert len(selection) == len(baseline_candidates(row)) == 2
    assert list(selection.loc[selection["chosen"], "box_size"]) == [17]
    assert selection.loc[selection["box_size"] == 4, "ap_train_val"].item() == 0.0
    assert summary["options"] == {"max_detections": 5, "box_size": 17, "sigma": 2.0}
    assert summary["n_train_images"] == 8 and summary["n_test_images"] == 4 and summary["n_test_lesions"] == 4
    # the test detections are exactly the chosen detector's on the test images
    expected = detect(split["test"]["images"], **summary["options"])
    assert len(table) == sum(len(boxes) for boxes, _ in expected)
    assert set(table["image_id"]) <= set(split["test"]["items"]["image_id"])
    assert summary["metrics"]["ap"] == pytest.approx(1.0) and summary["metrics"]["sens_at_0.5fpi"] == 1.0
    for name in ("detections.csv", "froc.csv", "froc.png", "boxes.png", "metrics.json"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_the_test_images_do_not_choose_the_options(tmp_path):
    """Training images where only small boxes fit, test images where only big ones would: the choice
    follows the training images (and the test AP pays for it)."""
    config = load_config("hamed2020/table3", profile="tiny", overrides={"n_bootstrap": 20})
    fit = _part(0, 4, "tr")
    test = _part(3, 4, "te")
    test["boxes"] = [b + np.float32([-12, -12, 12, 12]) for b in test["boxes"]]  # 41-px truth boxes
    split = {"train": fit, "val": _part(1, 2, "va"), "test": test}
    _, summary = run_baseline_row(config, _row({"box_size": [17, 41], "sigma": [2.0]}), split, tmp_path,
                                  progress=lambda _: None)
    assert summary["options"]["box_size"] == 17 and summary["metrics"]["ap"] == 0.0


def test_the_detector_baseline_runs_in_the_detection_kind():
    row = _row({"sigma": [2.0]})
    detection = kinds.kind_of(load_config("hamed2020/table3", profile="tiny"))
    assert kinds.kind_for_row(detection, row) is detection
    classifier = ModelRow("baseline", "baseline_lr", baseline={"classifier": "logistic_regression"})
    assert isinstance(kinds.kind_for_row(detection, classifier), kinds.Baseline)


@pytest.mark.parametrize("baseline, message", [
    ({"detector": "hough"}, "must be one of"),
    ({"detector": "brightest_blobs", "grid": {"radius": [3]}}, "does not take"),
    ({"detector": "brightest_blobs", "options": {"threshold": 0.5}}, "does not take"),
    ({"detector": "brightest_blobs", "grid": {"sigma": []}}, "non-empty list"),
    ({"detector": "brightest_blobs", "grid": {"sigma": 4}}, "non-empty list"),
    ({"detector": "brightest_blobs", "grid": {"sigma": [4]}, "options": {"sigma": 2}}, "both searched"),
    ({"detector": "brightest_blobs", "classifier": "random_forest"}, "unknown `baseline` keys"),
])
def test_bad_detector_baseline_rows_are_refused(baseline, message):
    with pytest.raises(ValueError, match=message):
        ModelRow("baseline", "floor", baseline=baseline)


def test_a_baseline_row_must_fit_its_table_kind():
    with pytest.raises(ValueError, match="a detection table's baseline row takes"):
        load_config("hamed2020/table3", profile="paper", overrides={
            "models": [{"label": "floor", "baseline": {"classifier": "random_forest"}}]})
    with pytest.raises(ValueError, match="is for detection tables"):
        load_config("coccomini2021/table2", profile="paper", overrides={
            "models": [{"label": "floor", "baseline": {"detector": "brightest_blobs"}}]})
