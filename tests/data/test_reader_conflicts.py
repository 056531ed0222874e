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


@pytest.fixture(scope="module")
def cbis_root(tmp_path_factory):
    from cbis_fixtures import write_cbis

    return write_cbis(tmp_path_factory.mktemp("cbis_clean"), trap=False)


def _cbis_rows(cbis_root: Path, tmp_path: Path, key: tuple[str, str] = ("mass", "train")):
    """A copy of the clean CBIS-DDSM tree, one of its CSVs and that CSV's rows (header first)."""
    import shutil

    from cbis_fixtures import CSV_NAME

    root = Path(shutil.copytree(cbis_root, tmp_path / "cbis"))
    path = root / CSV_NAME[key]
    with open(path, newline="") as handle:
        return root, path, list(csv.reader(handle))


def _write_rows(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


@pytest.mark.parametrize("roi_column", ["ROI mask file path", "cropped image file path"])
@pytest.mark.parametrize("how", ["image_is_roi", "roi_is_image", "all_three"])
def test_cbis_image_that_is_its_own_mask_or_crop_is_refused(cbis_root, tmp_path, roi_column, how):
    from mammo_keras.data import cbis_ddsm

    root, path, rows = _cbis_rows(cbis_root, tmp_path)
    header = rows[0]
    image, roi = header.index("image file path"), header.index(roi_column)
    if how == "image_is_roi":  # the image path names the ROI file: the mask (or crop) trained as the image
        rows[2][image] = rows[2][roi]
    elif how == "roi_is_image":
        rows[2][roi] = rows[2][image]
    else:
        for column in ("cropped image file path", "ROI mask file path"):
            rows[2][header.index(column)] = rows[2][image]
    _write_rows(path, rows)
    for missing in ("error", "keep"):
        with pytest.raises(DataError, match="name the same file") as error:
            cbis_ddsm.read(root, abnormality="mass", missing=missing)
        assert error.value.path == str(path) and error.value.line == 3


def test_cbis_mask_path_resolving_to_the_image_file_is_refused(cbis_root, tmp_path):
    """Another file name in the image's one-file series is taken by position, i.e. the image itself."""
    from mammo_keras.data import cbis_ddsm

    root, path, rows = _cbis_rows(cbis_root, tmp_path)
    header = rows[0]
    rows[1][header.index("ROI mask file path")] = rows[1][header.index("image file path")].replace(
        "000000.dcm", "000001.dcm")
    _write_rows(path, rows)
    with pytest.raises(DataError, match="name the same file") as error:
        cbis_ddsm.read(root, abnormality="mass")
    assert error.value.path == str(path) and error.value.line == 2


@pytest.mark.parametrize("column, value, shown", [("left or right breast", "RIGHT", "laterality 'R' here but 'L'"),
                                                  ("image view", "MLO", "view 'MLO' here but 'CC'"),
                                                  ("patient_id", "P_00099", "patient_id 'P_00099' here but 'P_00001'")])
def test_cbis_rows_of_one_image_that_disagree_are_refused(cbis_root, tmp_path, column, value, shown):
    from mammo_keras.data import cbis_ddsm

    root, path, rows = _cbis_rows(cbis_root, tmp_path)
    header = rows[0]
    second = list(rows[1])  # a second lesion of the first image
    second[header.index("abnormality id")] = "2"
    _write_rows(path, [*rows, second])
    assert len(cbis_ddsm.read(root, abnormality="mass")) == 13  # agreeing rows of one image are lesions
    second[header.index(column)] = value
    _write_rows(path, [*rows, second])
    with pytest.raises(DataError) as error:
        cbis_ddsm.read(root, abnormality="mass")
    assert error.value.path == str(path) and error.value.line == len(rows) + 1
    assert f"image Mass-Training_P_00001_LEFT_CC has {shown} on {path.name}:2" in str(error.value)


@pytest.mark.parametrize("key, value", [(("mass", "train"), "calcification"), (("calc", "test"), "mass")])
def test_cbis_abnormality_type_of_the_other_csv_is_refused(cbis_root, tmp_path, key, value):
    from mammo_keras.data import cbis_ddsm

    root, path, rows = _cbis_rows(cbis_root, tmp_path, key)
    rows[1][rows[0].index("abnormality type")] = value
    _write_rows(path, rows)
    with pytest.raises(DataError) as error:
        cbis_ddsm.read(root)
    assert error.value.path == str(path) and error.value.line == 2
    assert f"abnormality type {value!r} contradicts the CSV: {path.name} describes" in str(error.value)


@pytest.mark.parametrize("tags", [{"RescaleSlope": 2}, {"RescaleIntercept": -1000}, {"RescaleSlope": 0.5},
                                  {"RescaleSlope": 2, "RescaleIntercept": 10}, {}])
def test_dicom_value_range_follows_the_rescale_pydicom_applies(tmp_path, tags):
    """pydicom rescales only with both tags; one alone is ignored by the pixels and by the range."""
    import pydicom

    from mammo_keras.data.dicom import apply_modality_lut, read_dicom, value_range

    stored = np.array([[0, 1000, 2000, 4095]], np.uint16)
    path = write_dicom(tmp_path / "x.dcm", stored, bits_stored=12, extra=tags)
    dataset = pydicom.dcmread(path)
    expected = apply_modality_lut(stored, dataset)
    both = len(tags) == 2
    np.testing.assert_array_equal(read_dicom(path, apply_voi=False), np.float32(expected))
    low, high = value_range(dataset, voi_applied=False)
    assert (low, high) == ((10.0, 8200.0) if both else (0.0, 4095.0))
    np.testing.assert_allclose(read_dicom(path, normalise=True), stored / 4095.0, rtol=1e-6)
