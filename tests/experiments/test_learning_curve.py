"""The learning curve (`train_fractions`, issue 14): every (row, share) is a result row on the same test
folds, with the curve's PNG and CSV; the 100% points are the ordinary run's predictions."""
from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest

from cli_fixtures import errors_before_tensorflow
from mammo_keras import models
from mammo_keras.cli import main

SETS = ["--set", "n_splits=2", "--set", "baselines=[logistic_regression]", "--set", "grad_cam=false",
        "--set", "n_bootstrap=100"]


def _tiny_cnn(name, input_shape, **_):
    inputs = keras.Input(input_shape)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3, name="conv")(inputs))
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="predictions")(x))


@pytest.mark.usefixtures("isolated_cache")
def test_learning_curve_rows_png_and_the_full_share_equal_the_ordinary_run(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MAMMO_DATA", raising=False)
    monkeypatch.setattr(models, "get", _tiny_cnn)  # the runner's own path (stages, folds, shares), a tiny network
    results = tmp_path / "results"
    command = ["reproduce", "mias_tasks/learning_curve", "--profile", "tiny", "--results", str(results), *SETS]
    assert main([*command, "--set", "train_fractions=[0.5, 1.0]"]) == 0
    out = results / "mias_tasks" / "learning_curve"
    table = pd.read_csv(out / "table.csv")
    plan, report = (out / "plan.md").read_text(), (out / "table.md").read_text()
    assert "## Learning curve (train_fractions)" in plan and "learning-curve point: 50%" in plan
    assert "## Learning curve (learning_curve.png, learning_curve.csv)" in report
    # the ordinary rows of the same config (its prepared items reused): patches_2class's protocol
    assert main([*command, "--set", "train_fractions=[]"]) == 0
    ordinary_table = pd.read_csv(out / "table.csv").set_index("model")
    capsys.readouterr()
    rows = ordinary = out / "phantom"
    labels = ["scratch_cnn@50%", "scratch_cnn@100%", "baseline_lr@50%", "baseline_lr@100%"]
    assert list(table["model"]) == labels and (table["status"] == "ok").all()
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Learning curve" not in (out / "table.md").read_text()  # the second, ordinary run's report
    assert list(ordinary_table.index) == ["scratch_cnn", "baseline_lr"]
    curve = pd.read_csv(out / "learning_curve.csv", keep_default_na=False)
    assert list(zip(curve["row"], curve["train_fraction"])) == [
        ("scratch_cnn", 0.5), ("scratch_cnn", 1.0), ("baseline_lr", 0.5), ("baseline_lr", 1.0)]
    assert (curve["auc_ci_low"] <= curve["auc_pooled"]).all() and (curve["auc_pooled"] <= curve["auc_ci_high"]).all()

    folds = pd.read_csv(rows / "scratch_cnn@100%" / "folds.csv")
    for label in labels:  # the same test folds for every share and row
        pd.testing.assert_frame_equal(pd.read_csv(rows / label / "folds.csv"), folds)
    for fold in (0, 1):
        half, full = (json.loads((rows / f"scratch_cnn@{s}" / f"fold_{fold}" / "metrics.json").read_text())
                      for s in ("50%", "100%"))
        held_out = set(folds.loc[folds["fold"] == fold, "patient_id"].astype(str))
        everyone = set(folds["patient_id"].astype(str))
        assert full["n_train_patients"] + full["n_val_patients"] == len(everyone - held_out)
        assert half["n_train_patients"] + half["n_val_patients"] == max(1, round(0.5 * len(everyone - held_out)))
        for share in ("50%", "100%"):
            mine = pd.read_csv(rows / f"scratch_cnn@{share}" / f"fold_{fold}" / "predictions.csv")
            assert set(mine["patient_id"].astype(str)) == held_out  # every share scores the whole test fold
        lr = json.loads((rows / "baseline_lr@50%" / f"fold_{fold}" / "metrics.json").read_text())
        assert lr["n_train_patients"] == half["n_train_patients"] + half["n_val_patients"]  # the CNN's patients
    per_fold = curve.set_index("label")["train_patients_per_fold"]
    assert per_fold["scratch_cnn@50%"] == per_fold["baseline_lr@50%"]

    # 100%: the ordinary run's folds, validation part and predictions
    for share_row, plain_row in (("scratch_cnn@100%", "scratch_cnn"), ("baseline_lr@100%", "baseline_lr")):
        pd.testing.assert_frame_equal(pd.read_csv(ordinary / plain_row / "folds.csv"), folds)
        for fold in (0, 1):
            mine = pd.read_csv(rows / share_row / f"fold_{fold}" / "predictions.csv")
            plain = pd.read_csv(ordinary / plain_row / f"fold_{fold}" / "predictions.csv")
            assert list(mine["item_id"]) == list(plain["item_id"])
            np.testing.assert_allclose(mine["score"], plain["score"], atol=1e-6)
    for share_row, plain_row in (("scratch_cnn@100%", "scratch_cnn"), ("baseline_lr@100%", "baseline_lr")):
        assert table.set_index("model").loc[share_row, "auc_pooled"] == pytest.approx(
            ordinary_table.loc[plain_row, "auc_pooled"], abs=1e-6)


def test_bad_train_fractions_are_refused_before_tensorflow_loads(tmp_path):
    errors = errors_before_tensorflow(
        [["reproduce", "mias_tasks/learning_curve", "--set", f"train_fractions={value}", "--results", str(tmp_path / "r")]
         for value in ("[0]", "[1.5]", '["a"]')], timeout=120)
    assert "`train_fractions` takes shares of each fold's training patients, numbers in (0, 1]" in errors[0]
    assert "Received: train_fractions entry 0" in errors[0] and "train_fractions entry 1.5" in errors[1]
    assert "override train_fractions takes a list of numbers. Received: train_fractions=['a']" in errors[2]
    assert not (tmp_path / "r").exists()
