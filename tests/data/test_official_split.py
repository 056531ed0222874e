"""CBIS-DDSM's official train/test split as a split option (`split: official`), and its known trap:
the mass and the calc files each keep a patient on one side, merged they do not; such a split raises,
naming the patients. On a tiny download in the real format (tests/cbis_fixtures.py)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from cbis_fixtures import TRAP_PATIENTS, write_cbis
from mammo_keras.cli import main
from mammo_keras.config import load_config
from mammo_keras.data import cbis_ddsm
from mammo_keras.data.splits import LeakageError, official_leaks, official_split
from mammo_keras.errors import DataError

MASS_TEST = ["P_00101", "P_00102", "P_00103", "P_00104"]


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cbis(root / "cbis-ddsm")
    return root


def test_the_reader_records_each_csvs_side_and_the_merged_trap_is_found(download):
    table = cbis_ddsm.read(download / "cbis-ddsm")
    assert set(table.loc[table["split"] == "test", "patient_id"]) == {*MASS_TEST, "P_00301", "P_00302", "P_00001"}
    assert official_leaks(table) == {
        "P_00001": {"train": ["Mass-Training_P_00001_LEFT_CC"], "test": ["Calc-Test_P_00001_RIGHT_CC"]},
        "P_00101": {"train": ["Calc-Training_P_00101_LEFT_CC"], "test": ["Mass-Test_P_00101_RIGHT_CC"]}}
    masses = cbis_ddsm.read(download / "cbis-ddsm", abnormality="mass")
    assert official_leaks(masses) == {}  # each file pair alone keeps patients apart


def test_official_split_tests_on_the_official_test_part_and_validates_on_training_patients(download):
    table = cbis_ddsm.read(download / "cbis-ddsm", abnormality="mass").rename(columns={"split": "official_split"})
    split = official_split(table, val_fraction=0.25, seed=0)
    assert sorted(split.loc[split["split"] == "test", "patient_id"]) == MASS_TEST
    val = split.loc[split["split"] == "val"]
    assert len(val) == 2 and set(val["patient_id"]) <= {f"P_{n:05d}" for n in range(1, 9)}
    assert sorted(val["pathology"]) == ["benign", "malignant"]  # stratified
    merged = cbis_ddsm.read(download / "cbis-ddsm").rename(columns={"split": "official_split"})
    with pytest.raises(LeakageError, match=r"cbis_ddsm: 2 patients are on both sides of the official train/test "
                                           r"split.*P_00001 \(train: Mass-Training_P_00001_LEFT_CC; test: "
                                           r"Calc-Test_P_00001_RIGHT_CC\); P_00101"):
        official_split(merged, val_fraction=0.25, seed=0, origin="cbis_ddsm")
    with pytest.raises(DataError, match="inbreast: the official split must be 'train' or 'test' on every row; "
                                        "12 rows are not"):
        official_split(table.assign(official_split=""), val_fraction=0.25, seed=0, origin="inbreast")


def test_data_info_reports_the_trap(download, capsys):
    assert main(["data", "info", "cbis-ddsm", "--root", str(download / "cbis-ddsm"), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)["official_split"]
    assert facts == {"images": {"test": 7, "train": 13}, "patients": {"test": 7, "train": 13},
                     "patients_on_both_sides": list(TRAP_PATIENTS)}
    assert main(["data", "info", "cbis-ddsm", "--root", str(download / "cbis-ddsm")]) == 0
    assert "patients on both sides of the official split: 2 (P_00001, P_00101)" in capsys.readouterr().out


CONFIG = """\
paper: coccomini2021
table: official_test
title: "official split on a tiny CBIS-DDSM"
task: chougrad
datasets: [cbis_ddsm]
kind: {kind}
stages: coccomini2021
split: official
abnormality: mass
input_size: 32
val_fraction: 0.25
fractions: [0.6, 0.2, 0.2]
n_bootstrap: 50
grad_cam: false
models:
  - {{name: coccomini_scratch_cnn, label: cnn, options: {{fc_units: 8}}}}
  - {{name: baseline, label: baseline_lr, baseline: {{classifier: logistic_regression}}}}
"""


@pytest.mark.usefixtures("isolated_cache")
@pytest.mark.parametrize("kind", ["cv", "holdout"])
def test_runner_rows_share_the_official_split(download, tmp_path, monkeypatch, kind):
    from mammo_keras.training import cv

    seen = {}

    def untrained(build, images, index, spec, out, *, split_source=None, **options):  # the CNN row: no training
        seen["split"] = split_source
        test = split_source.set_index("patient_id")["split"].reindex(index["patient_id"]).to_numpy() == "test"
        return index[test][["item_id", "patient_id", "label"]].assign(fold=0, score=index[test]["label"] * 0.8 + 0.1)

    monkeypatch.setattr(cv, "holdout", untrained)
    path = tmp_path / "official.yaml"
    path.write_text(CONFIG.format(kind=kind))
    results = tmp_path / "results"
    assert main(["reproduce", str(path), "--data", str(download), "--results", str(results)]) == 0
    out = results / "coccomini2021" / "official_test"
    split = pd.read_csv(out / "cbis_ddsm" / "split.csv")
    assert sorted(split.loc[split["split"] == "test", "patient_id"]) == MASS_TEST
    assert seen["split"].set_index("patient_id")["split"].to_dict() == \
        split.drop_duplicates("patient_id").set_index("patient_id")["split"].to_dict()
    baseline = pd.read_csv(out / "cbis_ddsm" / "baseline_lr" / "fold_0" / "predictions.csv")
    assert sorted(baseline["patient_id"]) == MASS_TEST  # the baseline tests on the same official part
    table = pd.read_csv(out / "table.csv").set_index("model")
    assert (table["status"] == "ok").all() and table.loc["cnn", "n_items"] == 4
    assert "official train/test split" in (out / "table.md").read_text().splitlines()[0]
    plan = json.loads((out / "plan.json").read_text())["split"]
    assert plan["rule"] == "official" and plan["test"] == "the dataset's official test part"


@pytest.mark.usefixtures("isolated_cache")
def test_merged_mass_and_calc_with_the_official_split_is_an_error_naming_the_patients(download, tmp_path,
                                                                                     monkeypatch, capsys):
    path = tmp_path / "official.yaml"
    path.write_text(CONFIG.format(kind="holdout").replace("abnormality: mass", "abnormality: null"))
    assert main(["reproduce", str(path), "--data", str(download), "--results", str(tmp_path / "results")]) == 1
    error = capsys.readouterr().err
    assert "cbis_ddsm: 2 patients are on both sides of the official train/test split" in error
    assert "P_00001" in error and "P_00101" in error


def test_split_option_is_checked_and_defaults_stay_patient_level():
    assert load_config("shen2017/table3", "paper").split == "patient"
    assert load_config("chougrad2018/table2", "tiny", overrides={"split": "official"}).official_val_fraction == 0.15
    assert load_config("shen2017/table3", "paper", overrides={"split": "official"}).official_val_fraction == \
        pytest.approx(0.1)  # Shen: 10% of the training patients
    with pytest.raises(ValueError, match=r"`split` must be one of \('patient', 'official'\)"):
        load_config("shen2017/table3", "tiny", overrides={"split": "cbis"})
    with pytest.raises(ValueError, match="a transfer row tests on another dataset"):
        load_config("chougrad2018/mias_test", "tiny", overrides={"split": "official"})


def test_detection_items_use_the_official_split(download):
    from mammo_keras.runner.detection import load_items, settings_of

    config = load_config("hamed2020/table3", "tiny", overrides={"datasets": ["cbis_ddsm"], "split": "official",
                                                                  "max_items": None, "fractions": [0.6, 0.2, 0.2]})
    items = load_items(config, "cbis_ddsm", download, settings_of(config))
    assert sorted(items.loc[items["split"] == "test", "patient_id"]) == MASS_TEST
    assert set(items.loc[items["split"] == "val", "patient_id"]) <= {f"P_{n:05d}" for n in range(1, 9)}


def test_every_cbis_config_takes_the_official_split():
    """`--set split=official` is accepted by every config that reads CBIS-DDSM, except a transfer config,
    which tests on another dataset and says so."""
    from mammo_keras.config import list_configs

    cbis = [name for name in list_configs() if "cbis_ddsm" in load_config(name, "paper").datasets]
    assert len(cbis) >= 15 and "shen2017/table3" in cbis and "hamed2020/table3" in cbis
    for name in cbis:
        if load_config(name, "paper").kind == "transfer":
            with pytest.raises(ValueError, match="a transfer row tests on another dataset"):
                load_config(name, "paper", overrides={"split": "official"})
        else:
            assert load_config(name, "paper", overrides={"split": "official"}).split == "official", name
