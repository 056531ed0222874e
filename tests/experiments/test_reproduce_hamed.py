"""End to end: Hamed 2020 Table 3 (detection rows) at the tiny profile, on phantom whole images.

The YOLOv8 row needs the optional keras-cv; here it is hidden so the test checks the row that says
so (and stays quick): tests/models/test_detection.py trains YOLOv8 itself (opt-in, --runslow).
"""
from __future__ import annotations

import json
import sys

import pandas as pd
import pytest

from mammo_keras.cli import main
from mammo_keras.data.splits import check_no_leakage


@pytest.mark.usefixtures("isolated_cache")
def test_table3_tiny_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MAMMO_DATA", raising=False)
    monkeypatch.setitem(sys.modules, "keras_cv", None)  # `import keras_cv` raises ImportError
    results = tmp_path / "results"
    assert main(["reproduce", "hamed2020/table3", "--profile", "tiny", "--results", str(results),
                 "--set", "n_bootstrap=20"]) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC phantom data" in printed and "downsampled to 128x128" in printed
    out = results / "hamed2020" / "table3"
    table = pd.read_csv(out / "table.csv")
    assert list(table["model"]) == ["retinanet", "yolov8", "baseline_blobs"]
    retina, yolo, floor = table.iloc[0], table.iloc[1], table.iloc[2]
    assert retina["status"] == "ok" and yolo["status"].startswith("not run: The YOLOv8 detector comes from keras-cv")
    assert floor["status"] == "ok" and floor["n_test_images"] == retina["n_test_images"]
    for row in (retina, floor):
        for metric in ("ap", "sens_at_0.5fpi", "sens_at_1fpi", "sens_at_2fpi", "sensitivity_all"):
            assert 0.0 <= row[metric] <= 1.0, metric
            assert row[f"{metric}_ci_low"] <= row[metric] + 1e-12 <= row[f"{metric}_ci_high"] + 2e-12
        assert row["sens_at_0.5fpi"] <= row["sens_at_1fpi"] <= row["sens_at_2fpi"] <= row["sensitivity_all"]
    selection = pd.read_csv(out / "phantom" / "baseline_blobs" / "selection.csv")
    assert len(selection) == 15 and selection["chosen"].sum() == 1  # the grid: 3 sigmas x 5 box sizes
    assert selection.loc[selection["chosen"], "ap_train_val"].item() == selection["ap_train_val"].max()
    markdown = (out / "table.md").read_text()
    assert "SYNTHETIC DATA" in markdown and "as published (Table 3" in markdown and "99.7%" in markdown
    splits = pd.read_csv(out / "phantom" / "splits.csv")
    check_no_leakage(splits, by="split")
    folder = out / "phantom" / "retinanet"
    for name in ("froc.png", "boxes.png", "learning_curves.png"):
        assert (folder / name).stat().st_size > 0, name
    froc = pd.read_csv(folder / "froc.csv")
    assert froc["fp_per_image"].is_monotonic_increasing and froc["sensitivity"].is_monotonic_increasing
    detections = pd.read_csv(folder / "detections.csv")
    test_images = set(splits.loc[splits["split"] == "test", "image_id"])
    assert set(detections["image_id"]) <= test_images and (detections["score"] >= 0.01 - 1e-6).all()
    assert int(retina["n_test_images"]) == len(test_images)
    assert len(pd.read_csv(folder / "log.csv")) == 2  # the tiny profile's two epochs
    run = json.loads((out / "run.json").read_text())
    assert run["synthetic"] is True and run["profile"] == "tiny" and len(run["data_fingerprints"]["phantom"]) == 64
    assert run["versions"]["keras_hub"] != "not installed"


def test_table3_absent_datasets_show_the_papers_rows_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("MAMMO_DATA", raising=False)
    results = tmp_path / "results"
    assert main(["reproduce", "hamed2020/table3", "--profile", "paper", "--results", str(results)]) == 0
    table = pd.read_csv(results / "hamed2020" / "table3" / "table.csv")
    rows = ("retinanet", "yolov8", "retinanet_vgg16_hed", "baseline_blobs")
    assert list(zip(table["dataset"], table["model"])) == [(d, r) for d in ("cbis_ddsm", "inbreast") for r in rows]
    assert table["status"].str.startswith("absent (").all()
    assert table["paper"].iloc[0] == "[37]: higher true positive rate than the complex model which is average 97%"
    assert "[4]: Detection accuracy = 99.7%" in table["paper"].iloc[1]
