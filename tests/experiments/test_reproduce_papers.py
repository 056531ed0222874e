"""End to end at the tiny profile (phantom data): the Table 2 configs of Jain & Levy and Coccomini, and
Shen's chain (the Table 1 patch classifier, then Table 3's whole-image network from it).

Chougrad's Table 2, the default of `make reproduce-table2`, has its own test with the resume check
(test_reproduce_chougrad.py). These run each config as `make reproduce-table2 PAPER=...` does, with
fewer bootstrap replicates, and check the table, the run record and the plots.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

from mammo_keras.cli import main
from mammo_keras.config import load_config

CASES = {
    "jain_levy": ["levynet", "alexnet", "googlenet_shallow", "googlenet_deeper"],
    "coccomini2021": ["scratch_cnn"],
}


@pytest.mark.usefixtures("isolated_cache")
@pytest.mark.parametrize("paper", sorted(CASES))
def test_table2_tiny_end_to_end(paper, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MAMMO_DATA", raising=False)
    results = tmp_path / "results"
    assert main(["reproduce", f"{paper}/table2", "--profile", "tiny", "--results", str(results),
                 "--set", "n_bootstrap=100"]) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC DATA" in printed and "--data DIR" in printed
    out = results / paper / "table2"
    config = load_config(f"{paper}/table2", "tiny")
    table = pd.read_csv(out / "table.csv")
    assert list(table["model"]) == CASES[paper]
    assert (table["status"] == "ok").all() and (table["dataset"] == "phantom (synthetic)").all()
    assert table["accuracy_pooled"].notna().all() and table["auc_pooled"].notna().all()
    if config.flip_tta:  # Shen's A-AUC: the AUC of the mean score over four flips
        assert table["a_auc_pooled"].between(0, 1).all()
    for metric in config.metrics:
        # Precision is undefined (NaN, shown as "-") for a model that calls nothing malignant.
        rows = table[table[f"{metric}_pooled"].notna()]
        pooled = rows[f"{metric}_pooled"]
        assert pooled.between(0, 1).all(), metric
        assert (rows[f"{metric}_ci_low"] <= pooled + 1e-12).all() and (pooled <= rows[f"{metric}_ci_high"] + 1e-12).all()
    markdown = (out / "table.md").read_text()
    assert "as published" in markdown  # the paper's own rows are printed beneath ours
    run = json.loads((out / "run.json").read_text())
    assert run["synthetic"] is True and run["profile"] == "tiny" and len(run["data_fingerprints"]["phantom"]) == 64
    for label in CASES[paper]:
        folder = out / "phantom" / label
        assert (folder / "learning_curves.png").stat().st_size > 0
        assert all(log.with_name("grad_cam.png").is_file() for log in folder.glob("*/log.csv"))
        logs = list(folder.glob("*/log.csv"))
        assert logs and all(len(pd.read_csv(log)) >= 1 for log in logs)
        predictions = pd.concat(pd.read_csv(p) for p in folder.glob("*/predictions.csv"))
        assert predictions["score"].between(0, 1).all()
        assert int(table.loc[table["model"] == label, "n_items"].iloc[0]) == len(predictions)


@pytest.mark.usefixtures("isolated_cache")
def test_shen_chain_starts_from_the_patch_classifier_and_keeps_its_split(tmp_path, capsys, monkeypatch):
    """table1 saves the patch classifier and its patient split; table3 starts from both. No whole-image
    test patient is one the patch classifier trained on."""
    monkeypatch.delenv("MAMMO_DATA", raising=False)
    results = tmp_path / "results"
    assert main(["reproduce", "shen2017/table3", "--profile", "tiny", "--results", str(results),
                 "--set", "n_bootstrap=50"]) == 0
    first = pd.read_csv(results / "shen2017" / "table3" / "table.csv")
    assert first["status"].str.startswith("skipped: the patient split of shen2017/table1").all()
    for table in ("table1", "table3"):
        assert main(["reproduce", f"shen2017/{table}", "--profile", "tiny", "--results", str(results),
                     "--set", "n_bootstrap=50"]) == 0
    patch_split = pd.read_csv(results / "shen2017" / "table1" / "phantom" / "split.csv", dtype=str)
    whole_split = pd.read_csv(results / "shen2017" / "table3" / "phantom" / "split.csv", dtype=str)
    patch_train = set(patch_split.loc[patch_split["split"] == "train", "patient_id"])
    for part in ("test", "val"):
        assert not patch_train & set(whole_split.loc[whole_split["split"] == part, "patient_id"])
    assert patch_train & set(whole_split.loc[whole_split["split"] == "train", "patient_id"])
    table = pd.read_csv(results / "shen2017" / "table3" / "table.csv")
    assert (table["status"] == "ok").all() and table["a_auc_pooled"].between(0, 1).all()
    plan = json.loads((results / "shen2017" / "table3" / "plan.json").read_text())
    assert plan["split"]["reuses"] == "shen2017/table1"
    assert plan["rows"][0]["init"]["patch_weights"].startswith("saved model of shen2017/table1")
    metrics = json.loads((results / "shen2017" / "table3" / "phantom" / "row4" / "test" / "metrics.json").read_text())
    assert metrics["selection"] == "best_val_auc" and metrics["inputs"]["normalisation"] == "train_mean_grey"
    assert "Declared deviations" not in (results / "shen2017" / "table3" / "table.md").read_text()
