"""CMMD reader on a tiny TCIA tree: the clinical sheet (.xlsx and a CSV export) and DICOMs whose
folders carry neither side nor view (both come from the header)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dicom_fixtures import write_dicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from mammo_keras import data
from mammo_keras.data import cmmd
from mammo_keras.errors import DataError, DatasetNotFoundError

HEADER = ["ID1", "LeftRight", "Age", "number", "abnormality", "classification", "subtype"]
SHEET = [
    ["D1-0001", "L", 44, 2, "mass", "Benign", ""],
    ["D1-0002", "R", 51, 2, "both", "Malignant", ""],
    ["D2-0003", "L", 60, 2, "calcification", "Malignant", "Luminal A"],
    ["D2-0004", "R", 38, 2, "mass", "Benign", ""],
]
# patient -> [(side in ImageLaterality, side in Laterality, ViewPosition, view code)]
DICOMS = {
    "D1-0001": [("L", None, "CC", None), ("L", None, "MLO", None)],
    "D1-0002": [("R", None, "CC", None), ("", "R", "", "399368009"), ("L", None, "CC", None),
                ("L", None, "MLO", None)],
    "D2-0003": [("L", None, "", "399162004")],
}


def write_tree(root, *, sheet="csv"):
    for patient, images in DICOMS.items():
        for number, (image_side, side, view, code) in enumerate(images, start=1):
            extra = {}
            if side:
                extra["Laterality"] = side
            if code:
                item = Dataset()
                item.CodeValue, item.CodingSchemeDesignator = code, "SCT"
                extra["ViewCodeSequence"] = Sequence([item])
            path = root / "CMMD" / patient / "07-18-2010-NA-NA-12345" / "1.000000-NA-67890" / f"1-{number}.dcm"
            write_dicom(path, np.full((6, 4), 10 * number, np.uint16), patient_id=patient,
                        laterality=image_side, view=view, extra=extra)
    frame = pd.DataFrame(SHEET, columns=HEADER)
    if sheet == "xlsx":
        frame.to_excel(root / "CMMD_clinicaldata_revision.xlsx", index=False)
    else:  # a semicolon CSV export, as some users make it
        frame.to_csv(root / "CMMD_clinicaldata_revision.csv", index=False, sep=";")
    return root


def test_rows_side_and_view_from_the_header(tmp_path):
    table = cmmd.read(write_tree(tmp_path), missing="skip")
    assert table["image_id"].tolist() == ["D1-0001_L_CC", "D1-0001_L_MLO", "D1-0002_R_CC", "D1-0002_R_CC",
                                          "D1-0002_R_MLO", "D1-0002_R_MLO", "D2-0003_L_CC"]
    assert table["abnormality"].tolist() == ["mass", "mass", "mass", "calcification", "mass", "calcification",
                                             "calcification"]
    assert table["pathology"].tolist() == ["benign", "benign"] + ["malignant"] * 5
    assert table["laterality"].tolist() == ["L", "L", "R", "R", "R", "R", "L"]
    assert table["view"].tolist() == ["CC", "MLO", "CC", "CC", "MLO", "MLO", "CC"]
    assert table["lesion_id"].tolist()[:4] == ["D1-0001_L_CC_l2_mass", "D1-0001_L_MLO_l2_mass",
                                               "D1-0002_R_CC_l3_mass", "D1-0002_R_CC_l3_calcification"]
    assert table["subtype"].tolist()[-1] == "Luminal A" and table["age"].tolist()[0] == "44"
    assert table[["x0", "y0", "x1", "y1"]].isna().all().all()  # CMMD has no outlines
    assert table["path"].iloc[4].endswith("D1-0002/07-18-2010-NA-NA-12345/1.000000-NA-67890/1-2.dcm")
    problems = table.attrs["problems"]
    assert problems[0].endswith("CMMD_clinicaldata_revision.csv:4: breast D2-0003 L lists 2 images; 1 found")
    assert [p.split(": ", 1)[1] for p in problems[1:]] == [
        "D1-0002 L has no row in CMMD_clinicaldata_revision.csv; left out (no label)"] * 2


def test_missing_breast_error_keep_and_registry(tmp_path):
    root = write_tree(tmp_path)
    with pytest.raises(DataError) as error:
        cmmd.read(root)
    assert error.value.line == 5 and error.value.path.endswith("CMMD_clinicaldata_revision.csv")
    assert "breast D2-0004 R has no DICOM" in str(error.value)
    kept = data.read_dataset("cmmd", root, missing="keep")
    assert kept.loc[~kept["image_found"], ["image_id", "pathology"]].values.tolist() == [["D2-0004_R", "benign"]]


@pytest.mark.parametrize("sheet", ["xlsx", "csv"])
def test_xlsx_and_csv_give_the_same_table(tmp_path, sheet):
    if sheet == "xlsx":
        pytest.importorskip("openpyxl", reason="openpyxl (requirements.txt) reads CMMD's .xlsx")
    table = cmmd.read(write_tree(tmp_path / sheet, sheet=sheet), missing="skip")
    assert table["sheet_line"].tolist() == [2, 2, 3, 3, 3, 3, 4]
    assert table["n_listed"].tolist() == ["2"] * 7 and table["age"].tolist()[-1] == "60"


def test_xlsx_without_openpyxl_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "CMMD_clinicaldata_revision.xlsx").write_bytes(b"PK\x03\x04")

    def no_openpyxl(*args, **kwargs):
        raise ImportError("Missing optional dependency 'openpyxl'.")

    monkeypatch.setattr(pd, "read_excel", no_openpyxl)
    with pytest.raises(DataError, match=r"CMMD_clinicaldata_revision.xlsx: reading .xlsx needs openpyxl: "
                                        r"`pip install openpyxl`"):
        cmmd.read(tmp_path)


def test_bad_values_and_headers_without_a_side(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no clinical spreadsheet"):
        cmmd.read(tmp_path)
    root = write_tree(tmp_path / "bad")
    sheet = root / "CMMD_clinicaldata_revision.csv"
    sheet.write_text(sheet.read_text().replace("Benign", "Unknown", 1))
    with pytest.raises(DataError, match=r"CMMD_clinicaldata_revision.csv:2: classification must be Benign or "
                                        r"Malignant. Received: 'Unknown'"):
        cmmd.read(root)
    root = write_tree(tmp_path / "noside")
    path = root / "CMMD" / "D9-0009" / "1-1.dcm"
    write_dicom(path, np.zeros((4, 4), np.uint16), patient_id="D9-0009", laterality="")
    with pytest.raises(DataError, match=r"1-1.dcm: the DICOM header must give the side as ImageLaterality"):
        cmmd.read(root, missing="skip")


def test_a_second_reading_with_a_cache_reads_no_header_and_a_changed_file_is_read_again(tmp_path, monkeypatch):
    import json
    import os

    root, cache = write_tree(tmp_path / "data"), tmp_path / "reader_cache.json"
    reads = []
    real = cmmd.read_header
    monkeypatch.setattr(cmmd, "read_header", lambda path: reads.append(path) or real(path))
    plain = cmmd.read(root, missing="skip")
    n_files = len(reads)
    first = cmmd.read(root, missing="skip", cache=cache)
    assert len(reads) == 2 * n_files == 2 * len(list(root.rglob("*.dcm")))  # the first cached reading reads all
    reads.clear()
    second = cmmd.read(root, missing="skip", cache=cache)
    assert reads == []
    pd.testing.assert_frame_equal(first, plain)
    pd.testing.assert_frame_equal(second, plain)
    assert second.attrs == plain.attrs
    assert len(json.loads(cache.read_text())["entries"]["header"]) == n_files
    # a file rewritten with another view is read again, and only it
    changed = sorted(root.rglob("*.dcm"))[0]
    write_dicom(changed, np.full((6, 4), 10, np.uint16), patient_id="D1-0001", laterality="L", view="MLO")
    os.utime(changed, ns=(os.stat(changed).st_atime_ns, os.stat(changed).st_mtime_ns + 10 ** 9))
    third = cmmd.read(root, missing="skip", cache=cache)
    assert reads == [changed]
    assert third["view"].tolist()[:2] == ["MLO", "MLO"] and third["image_id"].tolist()[:2] == ["D1-0001_L_MLO",
                                                                                              "D1-0001_L_MLO_2"]
