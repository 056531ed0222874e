"""The record table: patient ids that differ only by case or surrounding spaces are one patient."""
from __future__ import annotations

import pytest

from mammo_keras.data.records import make_table, summary
from mammo_keras.data.splits import patient_kfold
from mammo_keras.errors import DataError


def _row(image_id: str, patient_id: str, pathology: str = "benign") -> dict:
    return {"image_id": image_id, "patient_id": patient_id, "lesion_id": f"{image_id}_1",
            "abnormality": "mass", "pathology": pathology}


def test_case_and_space_variants_are_merged_to_the_most_common_spelling_with_a_problem():
    table = make_table([_row("a", "P_001"), _row("b", " p_001 "), _row("c", "P_001", "malignant"),
                        _row("d", "P_002 "), _row("e", "q_003"), _row("f", "Q_003")], origin="t.csv")
    assert table["patient_id"].tolist() == ["P_001", "P_001", "P_001", "P_002", "q_003", "q_003"]
    assert summary(table)["patients"] == 3
    assert table.attrs["problems"] == [
        "patient ids [' p_001 ', 'P_001'] differ only by case or surrounding spaces: merged as 'P_001'",
        "patient ids ['Q_003', 'q_003'] differ only by case or surrounding spaces: merged as 'q_003'",
    ]


def test_merged_patients_stay_on_one_side_of_every_split():
    rows = [_row(f"i{k}", ("P" if k % 2 else "p") + f"_{k // 2}", "malignant" if k % 4 < 2 else "benign")
            for k in range(16)]
    table = make_table(rows)
    assert table["patient_id"].nunique() == 8
    folds = patient_kfold(table, n_splits=2, seed=0)  # raises LeakageError if a patient spans folds
    assert (folds.groupby("patient_id")["fold"].nunique() == 1).all()
    assert folds.groupby("patient_id").size().tolist() == [2] * 8


def test_clean_ids_record_no_problem_and_blank_ids_are_still_refused():
    assert "problems" not in make_table([_row("a", "P_001"), _row("b", "P_002")]).attrs
    with pytest.raises(DataError, match="every row needs a patient_id"):
        make_table([_row("a", "   ")])
