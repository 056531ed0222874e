"""Whole-image tables gain the breast-level AUC: image scores averaged per breast (patient + side), as
`mammo-keras score` does, with a patient-bootstrap CI, beside each row's image-level numbers."""
from __future__ import annotations

import pandas as pd
import pytest

from mammo_keras.config import load_config
from mammo_keras.runner.report import ResultRow, summarise, write_tables

# Two women, two images per breast. Breasts (mean score, label): A-L (0.8, 1), A-R (0.3, 0), B-L (0.4, 0),
# B-R (0.35, 1: one of its images is malignant). Breast AUC by hand: positives {0.8, 0.35} against
# negatives {0.3, 0.4}: 0.8 beats both (2), 0.35 beats 0.3 (1) and loses to 0.4 (0): 3 / 4 = 0.75.
# Per image: positives 0.9, 0.7, 0.55 against five negatives: 5 + 5 + 4 = 14 of 15 pairs.
PREDICTIONS = pd.DataFrame({
    "item_id": ["a_l_cc", "a_l_mlo", "a_r_cc", "a_r_mlo", "b_l_cc", "b_l_mlo", "b_r_cc", "b_r_mlo"],
    "patient_id": ["A"] * 4 + ["B"] * 4,
    "label": [1, 1, 0, 0, 0, 0, 1, 0],
    "fold": 0,
    "score": [0.9, 0.7, 0.2, 0.4, 0.6, 0.2, 0.55, 0.15],
})
INDEX = pd.DataFrame({"item_id": PREDICTIONS["item_id"], "laterality": ["L", "L", "R", "R", "L", "L", "R", "R"]})


def test_whole_image_rows_get_the_breast_level_auc_with_a_ci(tmp_path):
    config = load_config("shen2017/table3", "tiny", overrides={"n_bootstrap": 200})
    result = summarise(config, PREDICTIONS, tmp_path, "test", 1.0, index=INDEX)
    breast = result["metrics"]["auc_breast"]
    assert breast["pooled"] == pytest.approx(0.75) and breast["fold_mean"] == pytest.approx(0.75)
    assert result["metrics"]["auc"]["pooled"] == pytest.approx(14 / 15)
    assert 0.0 <= breast["ci_low"] <= breast["ci_high"] <= 1.0
    # the same from sides carried in the predictions table itself
    sided = summarise(config, PREDICTIONS.assign(laterality=INDEX["laterality"]), tmp_path, "test", 1.0)
    assert pd.Series(sided["metrics"]["auc_breast"]).equals(pd.Series(breast))
    # no sides known: no breast level (not a wrong one)
    assert "auc_breast" not in summarise(config, PREDICTIONS, tmp_path, "test", 1.0)["metrics"]


def test_roi_tables_have_no_breast_level_and_the_table_shows_it(tmp_path):
    roi = load_config("chougrad2018/table2", "tiny", overrides={"n_bootstrap": 100})
    assert "auc_breast" not in summarise(roi, PREDICTIONS, tmp_path, "test", 1.0, index=INDEX)["metrics"]
    config = load_config("shen2017/table3", "tiny", overrides={"n_bootstrap": 200})
    result = summarise(config, PREDICTIONS, tmp_path, "test", 60.0, index=INDEX)
    row = ResultRow("phantom", "vgg_vgg", n_items=8, seconds=60.0, metrics=result["metrics"])
    write_tables(config, [row], tmp_path, [])
    table = (tmp_path / "table.md").read_text()
    assert "ours breast-level auc pooled [95% CI]" in table
    line = next(line for line in table.splitlines() if line.startswith("| phantom | vgg_vgg"))
    assert "| 0.750 [" in line
    flat = pd.read_csv(tmp_path / "table.csv").iloc[0]
    assert flat["auc_breast_pooled"] == pytest.approx(0.75)
