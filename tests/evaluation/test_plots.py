"""Plots: each writes one readable PNG atomically and returns the numbers it drew."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mammo_keras.evaluation import metrics, plots


def _read_png(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def _only(folder, name) -> None:
    """The folder holds the PNG and no leftover temporary file."""
    assert sorted(p.name for p in folder.iterdir()) == [name]


@pytest.fixture
def predictions() -> pd.DataFrame:
    # fold 0: scores rank 3 of 4 (positive, negative) pairs right; fold 1: all 4 right.
    return pd.DataFrame({"fold": [0, 0, 0, 0, 1, 1, 1, 1],
                         "label": [0, 0, 1, 1, 0, 0, 1, 1],
                         "score": [0.1, 0.6, 0.4, 0.9, 0.2, 0.3, 0.7, 0.8]})


def test_roc_curves_pooled_and_fold_auc(tmp_path, predictions):
    result = plots.roc_curves(predictions, tmp_path / "roc.png", title="test", reported_auc=0.9)
    assert result["path"] == tmp_path / "roc.png"
    width, height = _read_png(result["path"])
    assert width > 0 and height > 0
    _only(tmp_path, "roc.png")
    assert result["pooled_auc"] == metrics.auc(predictions["label"], predictions["score"])
    # pooled: 16 pairs, wrong ones (0.6 > 0.4) only -> 15/16
    assert result["pooled_auc"] == 15 / 16
    assert result["fold_auc"] == {0: 0.75, 1: 1.0}


def test_roc_curves_needs_fold_label_score(tmp_path, predictions):
    with pytest.raises(ValueError, match=r"missing \['fold'\]"):
        plots.roc_curves(predictions.drop(columns="fold"), tmp_path / "roc.png")


def test_learning_curves_writes_png(tmp_path):
    rows = []
    for fold in (0, 1):
        for stage, epochs in (("head", 3), ("fine_tune", 2)):
            for epoch in range(epochs):
                rows.append({"fold": fold, "stage": stage, "epoch": epoch, "loss": 1.0 / (epoch + 1),
                             "val_loss": 1.2 / (epoch + 1), "accuracy": 0.5 + 0.1 * epoch,
                             "val_accuracy": 0.45 + 0.1 * epoch})
    path = plots.learning_curves(pd.DataFrame(rows), tmp_path / "curves.png", title="two stages")
    assert path == tmp_path / "curves.png"
    width, height = _read_png(path)
    assert width > height > 0  # two panels side by side
    _only(tmp_path, "curves.png")


def test_learning_curves_without_validation_columns_draws_training_only(tmp_path):
    logs = pd.DataFrame({"fold": [0, 0, 0], "stage": ["head"] * 3, "epoch": [0, 1, 2],
                         "loss": [1.0, 0.8, 0.6], "accuracy": [0.5, 0.6, 0.7]})
    path = plots.learning_curves(logs, tmp_path / "curves.png")
    assert _read_png(path)[0] > 0
    with pytest.raises(ValueError, match=r"missing \['loss'\]"):
        plots.learning_curves(logs.drop(columns="loss"), tmp_path / "bad.png")


def test_comparison_bars_with_reported_markers(tmp_path):
    table = pd.DataFrame({"group": ["DDSM", "DDSM", "BCDR", "BCDR"],
                          "variant": ["random", "pretrained"] * 2,
                          "mean": [0.80, 0.95, 0.78, 0.96], "low": [0.75, 0.93, 0.70, 0.94],
                          "high": [0.85, 0.97, 0.84, 0.98]})
    path = plots.comparison_bars(table, tmp_path / "bars.png", ylabel="accuracy", title="Fig. 5",
                                 reported={("DDSM", "pretrained"): 0.972, ("BCDR", "pretrained"): 0.964})
    width, height = _read_png(path)
    assert width > 0 and height > 0
    _only(tmp_path, "bars.png")


def test_froc_interpolates_operating_points(tmp_path):
    # Given out of order on purpose: the function sorts by false positives per image.
    fp = [2.0, 0.0, 1.0, 4.0]
    sensitivity = [0.8, 0.2, 0.6, 1.0]
    at = plots.froc_curve(fp, sensitivity, tmp_path / "froc.png", operating_points=(0.5, 1, 3, 5))
    assert at == {0.5: 0.4, 1.0: 0.6, 3.0: 0.9, 5.0: 1.0}  # 5 lies past the end: last value
    width, height = _read_png(tmp_path / "froc.png")
    assert width > 0 and height > 0
    _only(tmp_path, "froc.png")


def test_froc_rejects_mismatched_lengths(tmp_path):
    with pytest.raises(ValueError, match="same nonzero length"):
        plots.froc_curve([0.0, 1.0], [0.5], tmp_path / "froc.png")
