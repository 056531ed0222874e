"""End to end: Chougrad's Table 2 config at the tiny profile (phantom data), as `make reproduce-table2`."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from mammo_keras.cli import main


@pytest.mark.usefixtures("isolated_cache")
def test_chougrad_table2_tiny_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MAMMO_DATA", raising=False)
    results = tmp_path / "results"
    args = ["reproduce", "chougrad2018/table2", "--profile", "tiny", "--results", str(results),
            "--set", "n_splits=2", "--set", "n_bootstrap=100"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC DATA" in printed and "phantom (synthetic)" in printed
    out = results / "chougrad2018" / "table2"
    table = pd.read_csv(out / "table.csv")
    assert list(table["model"]) == ["vgg16", "resnet50", "inceptionv3"]
    assert (table["status"] == "ok").all() and (table["n_items"] == 20).all()
    assert table["accuracy_pooled"].between(0, 1).all()
    assert (table["accuracy_ci_low"] <= table["accuracy_pooled"]).all()
    assert (table["accuracy_pooled"] <= table["accuracy_ci_high"]).all()
    assert (out / "comparison.png").stat().st_size > 0 and (out / "phantom" / "vgg16" / "roc.png").is_file()
    assert (out / "phantom" / "inceptionv3" / "fold_1" / "grad_cam.png").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["synthetic"] is True and run["profile"] == "tiny" and run["seed"] == 0
    assert len(run["data_fingerprints"]["phantom"]) == 64 and run["git_commit"]
    folds = pd.read_csv(out / "phantom" / "vgg16" / "folds.csv")
    assert folds.groupby("patient_id")["fold"].nunique().max() == 1
    # A second run reuses every finished fold and gives the same table.
    assert main(args) == 0
    assert "done earlier, reused" in capsys.readouterr().out
    again = pd.read_csv(out / "table.csv")
    pd.testing.assert_series_equal(again["accuracy_pooled"], table["accuracy_pooled"])
