"""Tests for patient-level stratified splits and their leakage checks."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammo_keras.data.records import circle_geometry, make_table
from mammo_keras.data.splits import (
    LeakageError, folds_per_split, check_no_leakage, load_assignments, patient_kfold,
    save_assignments, train_val_test,
)
from mammo_keras.errors import DataError

CLASSES = ("normal", "benign", "malignant")


def mias_like_table(women: int = 60, seed: int = 0) -> pd.DataFrame:
    """mini-MIAS layout: mdb(2k-1) and mdb(2k) are one woman's two breasts; some images hold
    two lesion rows. Labels are drawn about 60% normal, 20% benign, 20% malignant."""
    rng = np.random.default_rng(seed)
    rows = []
    for number in range(1, 2 * women + 1):
        image_id = f"mdb{number:03d}"
        patient = f"woman{(number + 1) // 2:03d}"
        pathology = str(rng.choice(CLASSES, p=[0.6, 0.2, 0.2]))
        common = {"image_id": image_id, "patient_id": patient, "path": f"/data/{image_id}.pgm",
                  "source": "mias", "laterality": "L" if number % 2 else "R", "pathology": pathology}
        if pathology == "normal":
            rows.append({**common, "abnormality": "normal"})
            continue
        for lesion in range(2 if number % 7 == 0 else 1):
            rows.append({**common, "abnormality": "mass", "lesion_id": f"{image_id}_{lesion}",
                         **circle_geometry(500 + 40 * lesion, 400, 30)})
    return make_table(rows, origin="mias-like")


def class_shares(table: pd.DataFrame) -> pd.Series:
    return table["pathology"].value_counts(normalize=True).reindex(CLASSES, fill_value=0.0)


# ---------------------------------------------------------------- K-fold

def test_patient_kfold_keeps_each_woman_in_one_fold_and_balances_classes():
    table = mias_like_table()
    assigned = patient_kfold(table, 5, seed=0)
    assert len(assigned) == len(table)
    pd.testing.assert_frame_equal(assigned.drop(columns="fold"), table)
    assert sorted(assigned["fold"].unique()) == [0, 1, 2, 3, 4]
    assert (assigned.groupby("patient_id")["fold"].nunique() == 1).all()
    patients_per_fold = assigned.groupby("fold")["patient_id"].nunique()
    assert patients_per_fold.sum() == 60 and patients_per_fold.min() >= 10
    overall = class_shares(table)
    for _, fold in assigned.groupby("fold"):
        # Stated bound: each class share within 0.1 of the whole table's (folds of ~12 women).
        assert (class_shares(fold) - overall).abs().max() <= 0.1


def test_same_seed_same_folds_different_seed_different_folds():
    table = mias_like_table()
    first = patient_kfold(table, 5, seed=7)["fold"].to_numpy()
    np.testing.assert_array_equal(first, patient_kfold(table, 5, seed=7)["fold"].to_numpy())
    assert not np.array_equal(first, patient_kfold(table, 5, seed=8)["fold"].to_numpy())


def test_too_few_patients_for_the_folds_is_an_error():
    table = mias_like_table(women=3)
    with pytest.raises(ValueError, match=r"at least 5 patients\. Received: 3 patients"):
        patient_kfold(table, 5, seed=0)
    with pytest.raises(ValueError, match=r"n_splits must be an integer >= 2\. Received: n_splits=1"):
        patient_kfold(table, 1, seed=0)


def test_a_class_rarer_than_the_folds_gives_folds_and_no_warning():
    """scikit-learn's "least populated class" warning came once per split into every run's log; the
    folds are made anyway and a part without both classes is an error of its own (the test below)."""
    import warnings

    table = mias_like_table(women=30)
    rare = np.where(table["patient_id"].isin(["woman001", "woman002", "woman003"]), "malignant", "benign")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folds = train_val_test(table.assign(pathology=rare, abnormality="mass"), fractions=(0.7, 0.15, 0.15),
                               seed=0)
    assert set(folds["split"]) == {"train", "val", "test"}


def test_a_fold_with_one_class_is_an_error():
    table = mias_like_table(women=10)
    only_benign = table.assign(pathology="benign", abnormality="mass")
    with pytest.raises(ValueError, match=r"at least two classes of 'pathology'.*"
                                         r"Received: fold 0 holds only pathology='benign'"):
        patient_kfold(only_benign, 2, seed=0)
    malignant = np.where(table["patient_id"] == "woman001", "malignant", "benign")
    one_malignant_woman = table.assign(pathology=malignant, abnormality="mass")
    with pytest.raises(ValueError, match=r"Received: fold \d holds only pathology='benign'"):
        patient_kfold(one_malignant_woman, 5, seed=0)


# ---------------------------------------------------------------- leakage

def test_leakage_names_the_patient_and_its_folds():
    assigned = patient_kfold(mias_like_table(), 5, seed=0)
    row = assigned.index[assigned["image_id"] == "mdb004"][0]
    partner_fold = int(assigned.loc[assigned["image_id"] == "mdb003", "fold"].iloc[0])
    other_fold = (partner_fold + 1) % 5
    assigned.loc[row, "fold"] = other_fold
    with pytest.raises(LeakageError, match=(
            rf"<input>: 1 patients appear in more than one fold .*patient 'woman002' in folds "
            rf"\[{min(partner_fold, other_fold)}, {max(partner_fold, other_fold)}\]")):
        check_no_leakage(assigned, by="fold")
    assert issubclass(LeakageError, DataError) and issubclass(LeakageError, ValueError)


def test_unassigned_rows_and_unknown_columns_are_errors():
    assigned = patient_kfold(mias_like_table(), 5, seed=0)
    assigned["fold"] = assigned["fold"].astype(float)
    assigned.loc[3, "fold"] = np.nan
    with pytest.raises(DataError, match=r"every row needs a fold; 1 rows have none \(first: row 3\)"):
        check_no_leakage(assigned)
    with pytest.raises(ValueError, match=r"by must be one of \['fold', 'split'\]\. Received: by='group'"):
        check_no_leakage(assigned, by="group")


# ---------------------------------------------------------------- save / load

def test_save_load_round_trip_is_atomic_and_rechecked(tmp_path):
    assigned = patient_kfold(mias_like_table(), 5, seed=0)
    path = save_assignments(assigned, tmp_path / "folds" / "folds.csv")
    assert [p.name for p in path.parent.iterdir()] == ["folds.csv"]
    loaded = load_assignments(path)
    assert list(loaded.columns) == ["image_id", "patient_id", "lesion_id", "fold"]
    assert loaded["fold"].dtype == np.int64
    expected = assigned[["image_id", "patient_id", "lesion_id", "fold"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(loaded, expected)

    partner_fold = int(loaded.loc[loaded["image_id"] == "mdb003", "fold"].iloc[0])
    leaked = [line.rsplit(",", 1)[0] + f",{(partner_fold + 1) % 5}" if line.startswith("mdb004,") else line
              for line in path.read_text().splitlines()]
    (tmp_path / "leaked.csv").write_text("\n".join(leaked) + "\n")
    with pytest.raises(LeakageError, match=r"leaked\.csv: 1 patients .*patient 'woman002' in folds"):
        load_assignments(tmp_path / "leaked.csv")

    lines = path.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",two"
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"bad\.csv:4: fold must be a non-negative integer; found 'two'"):
        load_assignments(tmp_path / "bad.csv")
    with pytest.raises(DataError, match=r"missing\.csv: fold assignment file not found"):
        load_assignments(tmp_path / "missing.csv")


def test_save_refuses_leaking_assignments(tmp_path):
    assigned = patient_kfold(mias_like_table(), 5, seed=0)
    first_row = assigned.index[assigned["patient_id"] == "woman001"][0]
    assigned.loc[first_row, "fold"] = (assigned.loc[first_row, "fold"] + 1) % 5
    with pytest.raises(LeakageError, match="woman001"):
        save_assignments(assigned, tmp_path / "folds.csv")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- train / val / test

@pytest.mark.parametrize("fractions, folds, counts", [
    ((0.8, 0.1, 0.1), 10, [8, 1, 1]),
    ((0.7, 0.15, 0.15), 20, [14, 3, 3]),
    ((0.5, 0.0, 0.5), 2, [1, 0, 1]),
    ((0.765, 0.085, 0.15), 13, [10, 1, 2]),
])
def test_fractions_are_rounded_to_whole_folds(fractions, folds, counts):
    assert folds_per_split(fractions, 20) == (folds, counts)


def test_train_val_test_is_patient_level_stratified_and_honours_fractions(tmp_path):
    table = mias_like_table(women=100, seed=1)
    assigned = train_val_test(table, fractions=(0.8, 0.1, 0.1), seed=3)
    assert set(assigned["split"]) == {"train", "val", "test"}
    assert (assigned.groupby("patient_id")["split"].nunique() == 1).all()
    patient_share = assigned.drop_duplicates("patient_id")["split"].value_counts(normalize=True)
    row_share = assigned["split"].value_counts(normalize=True)
    for name, target in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        # Stated bound: within 0.03 of the requested fraction, in patients and in rows.
        assert abs(patient_share[name] - target) <= 0.03
        assert abs(row_share[name] - target) <= 0.03
    overall = class_shares(table)
    for _, split in assigned.groupby("split"):
        assert (class_shares(split) - overall).abs().max() <= 0.1
    np.testing.assert_array_equal(
        assigned["split"], train_val_test(table, fractions=(0.8, 0.1, 0.1), seed=3)["split"])
    assert not np.array_equal(
        assigned["split"], train_val_test(table, fractions=(0.8, 0.1, 0.1), seed=4)["split"])
    loaded = load_assignments(save_assignments(assigned, tmp_path / "split.csv"))
    assert loaded["split"].tolist() == assigned["split"].tolist()


def test_train_val_test_rejects_bad_fractions():
    table = mias_like_table(women=20)
    with pytest.raises(ValueError, match=r"summing to 1\. Received: fractions=\(0\.8, 0\.3, 0\.1\)"):
        train_val_test(table, fractions=(0.8, 0.3, 0.1), seed=0)
    with pytest.raises(ValueError, match=r"Received: fractions=\(0\.0, 0\.5, 0\.5\)"):
        train_val_test(table, fractions=(0.0, 0.5, 0.5), seed=0)
