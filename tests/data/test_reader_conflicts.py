"""Label tables that contradict themselves or point outside the dataset, found by an audit: each is
a DataError naming the file and row (and, for two files, both), never a silently chosen answer."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from dicom_fixtures import write_dicom

from mammo_keras.data import cmmd, rsna_screening, vindr_mammo
from mammo_keras.errors import DataError

OUTSIDE_IDS = ["../../../outside", "..", ".", "a/b", "a\\b", "/abs", "c:evil"]


def _set_cell(path: Path, row: int, column: str, value: str, *, delimiter: str = ",") -> Path:
    """Set `column` of data row `row` (0 = the first after the header) of a CSV; returns the CSV."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle, delimiter=delimiter))
    rows[row + 1][rows[0].index(column)] = value
    with open(path, "w", newline="") as handle:
        csv.writer(handle, delimiter=delimiter).writerows(rows)
    return path


@pytest.mark.parametrize("column", ["study_id", "image_id"])
@pytest.mark.parametrize("value", OUTSIDE_IDS)
def test_vindr_ids_that_leave_the_image_folder_are_refused(tmp_path, column, value):
    from test_vindr_mammo import write_release

    release = write_release(tmp_path / "r", findings=[])
    breast = _set_cell(release / vindr_mammo.BREAST_CSV, 4, column, value)
    for missing in ("error", "skip", "keep"):
        with pytest.raises(DataError, match=f"{column} must be a single file or folder name") as error:
            vindr_mammo.read(release, missing=missing)
        assert error.value.path == str(breast) and error.value.line == 6


def test_vindr_study_id_outside_is_refused_where_the_file_exists(tmp_path):
    from test_vindr_mammo import write_release

    release = write_release(tmp_path / "r", findings=[])
    write_dicom(tmp_path / "outside" / "img_b1.dicom", np.ones((30, 40), np.uint16))  # there to be read
    _set_cell(release / vindr_mammo.BREAST_CSV, 4, "study_id", "../../../../../../outside")
    assert (release / "images" / "../../../../../../outside" / "img_b1.dicom").is_file()
    with pytest.raises(DataError, match="study_id must be a single file or folder name"):
        vindr_mammo.read(release)


@pytest.mark.parametrize("column", ["patient_id", "image_id"])
@pytest.mark.parametrize("value", OUTSIDE_IDS)
def test_rsna_ids_that_leave_the_image_folder_are_refused(tmp_path, column, value):
    from test_rsna_screening import write_competition

    root = write_competition(tmp_path / "rsna")
    labels = _set_cell(root / "train.csv", 2, column, value)
    for missing in ("error", "skip", "keep"):
        with pytest.raises(DataError, match=f"{column} must be a single file or folder name") as error:
            rsna_screening.read(root, missing=missing)
        assert error.value.path == str(labels) and error.value.line == 4


@pytest.mark.parametrize("value", OUTSIDE_IDS)
def test_cmmd_patient_that_leaves_the_root_is_refused(tmp_path, value):
    from test_cmmd import write_tree

    root = write_tree(tmp_path / "cmmd")
    sheet = _set_cell(root / "CMMD_clinicaldata_revision.csv", 3, "ID1", value, delimiter=";")
    for missing in ("error", "skip", "keep"):
        with pytest.raises(DataError, match="ID1 must be a single file or folder name") as error:
            cmmd.read(root, missing=missing)
        assert error.value.path == str(sheet) and error.value.line == 5


def test_plain_ids_with_dots_and_dashes_still_read(tmp_path):
    from test_rsna_screening import write_competition

    root = write_competition(tmp_path / "rsna", rows=[["2", "p.1-x", "..img", "L", "CC", "61", "0", "0", "0", "",
                                                       "0", "", "29", "False"]])
    table = rsna_screening.read(root)
    assert table["path"].tolist() == [str(root / "train_images" / "p.1-x" / "..img.dcm")]


def _inbreast(tmp_path: Path, rows: list[str], extra_dicoms: tuple[str, ...] = ()) -> Path:
    """An INbreast release of test_inbreast's DICOMs (plus `extra_dicoms`) whose table holds `rows`."""
    from test_inbreast import CSV_HEADER, DICOMS

    root = tmp_path / "INbreast Release 1.0"
    for name in (*DICOMS.values(), *extra_dicoms):
        write_dicom(root / "AllDICOMs" / name, np.zeros((4, 4), np.uint16))
    (root / "INbreast.csv").write_text("\n".join([CSV_HEADER, *rows]) + "\n")
    return root


@pytest.mark.parametrize("repeat, agreement", [
    ("removed;removed;L;MLO;200907;22614097;1;5", "with Bi-Rads 1, ACR 1 there and Bi-Rads 5, ACR 1 here"),
    ("removed;removed;L;MLO;200907;22614097;3;1", "with Bi-Rads 1, ACR 1 there and Bi-Rads 1, ACR 3 here"),
    ("removed;removed;L;MLO;200907;22614097.0;1;1", "with the same Bi-Rads and ACR"),
])
def test_inbreast_file_name_listed_twice_is_refused(tmp_path, repeat, agreement):
    from mammo_keras.data import inbreast
    from test_inbreast import CSV_ROWS

    root = _inbreast(tmp_path, [*CSV_ROWS[:4], repeat])
    for labeling in ("birads", "shen"):
        with pytest.raises(DataError) as error:
            inbreast.read(root, labeling=labeling)
        assert error.value.path == str(root / "INbreast.csv") and error.value.line == 6
        assert f"File Name 22614097 is listed twice (first on line 5, {agreement})" in str(error.value)


def test_inbreast_two_dicoms_of_one_file_id_are_named(tmp_path):
    from mammo_keras.data import inbreast
    from test_inbreast import CSV_ROWS, DICOMS

    other = "22614097_ffffffffffffffff_MG_R_CC_ANON.dcm"  # another woman and side
    root = _inbreast(tmp_path, CSV_ROWS, extra_dicoms=(other,))
    for missing in ("error", "skip"):
        with pytest.raises(DataError) as error:
            inbreast.read(root, missing=missing)
        assert error.value.path == str(root / "AllDICOMs" / other)
        assert f"file id 22614097 is also the id of {DICOMS['22614097']}" in str(error.value)
