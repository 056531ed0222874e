"""BCDR reader on a tiny distribution in the real CSV format (padded values, point lists)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mammo_keras.data import bcdr
from mammo_keras.errors import DataError, DatasetNotFoundError

OUTLINE_HEADER = ("patient_id,study_id,series,lesion_id,segmentation_id,image_view,image_filename,"
                  "lw_x_points,lw_y_points,mammography_type,mammography_nodule,"
                  "mammography_calcification,mammography_microcalcification,"
                  "mammography_axillary_adenopathy,mammography_architectural_distortion,"
                  "mammography_stroma_distortion,age,density,classification")
OUTLINE_ROWS = [
    "3,3,1,4,5,2, patient_3/study_3/img_3_3_1_LCC.tif, 10 20 30, 5 15 25,0,1,0,0,0,0,0,59,2, Malign ",
    "3,3,1,4,6,4, patient_3/study_3/img_3_3_1_LO.tif, 12 14, 40 44,0,0,0,1,0,0,0,59,2, Malign ",
    "7,9,1,11,13,1, patient_7/study_9/img_7_9_1_RCC.tif, 100 110 105, 200 210 220,0,0,0,0,0,0,1,47,3, Benign",
]
IMAGE_HEADER = "patient_id,study_id,series,image_filename,image_type_name,image_type_id,age,density"
IMAGE_ROWS = [
    "3,3,1, patient_3/study_3/img_3_3_1_LCC.tif, LCC,1,59,2",
    "3,3,1, patient_3/study_3/img_3_3_1_LO.tif, LO,3,59,2",
    "3,3,1, patient_3/study_3/img_3_3_1_RCC.tif, RCC,0,59,2",
    "7,9,1, patient_7/study_9/img_7_9_1_RCC.tif, RCC,0,47,3",
    "7,9,1, patient_7/study_9/img_7_9_1_RO.tif, RO,2,47,3",
]


def _write_tif(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "BCDR-F03"
    for row in IMAGE_ROWS:
        _write_tif(folder / row.split(",")[3].strip())
    (folder / "bcdr_f03_outlines.csv").write_text("\n".join([OUTLINE_HEADER] + OUTLINE_ROWS) + "\n")
    (folder / "bcdr_f03_img.csv").write_text("\n".join([IMAGE_HEADER] + IMAGE_ROWS) + "\n")
    normal = tmp_path / "BCDR-DN01_dataset"
    _write_tif(normal / "patient_50/study_60/img_50_60_1_LO.tif")
    (normal / "bcdr_dn01_img.csv").write_text(
        IMAGE_HEADER + "\n50,60,1, patient_50/study_60/img_50_60_1_LO.tif, LO,3,44,1\n")
    return tmp_path


def test_outline_rows(root):
    table = bcdr.read(root, distributions=["BCDR-F03"])
    assert list(table["image_id"]) == ["bcdr_f03/patient_3/study_3/img_3_3_1_LCC.tif",
                                       "bcdr_f03/patient_3/study_3/img_3_3_1_LO.tif",
                                       "bcdr_f03/patient_7/study_9/img_7_9_1_RCC.tif"]
    assert list(table["patient_id"]) == ["bcdr_3", "bcdr_3", "bcdr_7"]
    assert list(table["laterality"]) == ["L", "L", "R"]
    assert list(table["view"]) == ["CC", "MLO", "CC"]
    assert list(table["abnormality"]) == ["mass", "calcification", "distortion"]
    assert list(table["pathology"]) == ["malignant", "malignant", "benign"]
    assert list(table["findings"]) == ["nodule", "microcalcification", "stroma_distortion"]
    assert list(table["lesion_id"])[0] == "bcdr_f03/patient_3/study_3/img_3_3_1_LCC.tif#lesion4_seg5"
    boxes = table[["x0", "y0", "x1", "y1"]].to_numpy().tolist()
    assert boxes == [[10, 5, 31, 26], [12, 40, 15, 45], [100, 200, 111, 221]]
    assert table.iloc[1]["contour"] == [(12.0, 40.0), (14.0, 44.0)]
    assert list(table["age"]) == ["59", "59", "47"] and list(table["density"]) == ["2", "2", "3"]
    assert table.iloc[0]["path"] == str((root / "BCDR-F03/patient_3/study_3/img_3_3_1_LCC.tif").resolve())


def test_normal_distribution_and_unannotated_images(root):
    default = bcdr.read(root)
    assert list(default["distribution"]) == ["DN01", "F03", "F03", "F03"]
    assert default.iloc[0]["abnormality"] == "normal"
    assert (default.iloc[0]["patient_id"], default.iloc[0]["laterality"], default.iloc[0]["view"]) == (
        "bcdr_50", "L", "MLO")
    with_normals = bcdr.read(root, distributions=["F03"], unannotated="normal")
    normals = with_normals[with_normals["abnormality"] == "normal"]
    # the right breast of patient 3 has no outline; patient 7's RO shows the outlined right breast
    assert list(normals["image_id"]) == ["bcdr_f03/patient_3/study_3/img_3_3_1_RCC.tif"]
    assert list(normals["pathology"]) == ["normal"]
    assert len(with_normals) == 4


def test_missing_column_names_csv_and_column(root):
    path = root / "BCDR-F03" / "bcdr_f03_outlines.csv"
    path.write_text(OUTLINE_HEADER.replace(",lw_y_points", "") + "\n")
    expected = r"bcdr_f03_outlines\.csv:1: BCDR CSV lacks column\(s\) \['lw_y_points'\]"
    with pytest.raises(DataError, match=expected):
        bcdr.read(root, distributions=["F03"])


def test_malformed_points_name_csv_line(root):
    rows = OUTLINE_ROWS[:1] + [OUTLINE_ROWS[1].replace(" 12 14,", " 12 1x4,")]
    (root / "BCDR-F03" / "bcdr_f03_outlines.csv").write_text("\n".join([OUTLINE_HEADER] + rows))
    with pytest.raises(DataError, match=r"bcdr_f03_outlines\.csv:3: lw_x_points and lw_y_points are"):
        bcdr.read(root, distributions=["F03"])


def test_point_count_mismatch_names_csv_line(root):
    rows = [OUTLINE_ROWS[0].replace(" 5 15 25,", " 5 15,")]
    (root / "BCDR-F03" / "bcdr_f03_outlines.csv").write_text("\n".join([OUTLINE_HEADER] + rows))
    with pytest.raises(DataError, match=r"outlines\.csv:2: .*Received: 3 x and 2 y values"):
        bcdr.read(root, distributions=["F03"])


def test_bad_classification_and_missing_image(root):
    rows = [OUTLINE_ROWS[0].replace(" Malign ", " Unknown")]
    (root / "BCDR-F03" / "bcdr_f03_outlines.csv").write_text("\n".join([OUTLINE_HEADER] + rows))
    with pytest.raises(DataError, match=r"outlines\.csv:2: classification must be Benign or Malign"):
        bcdr.read(root, distributions=["F03"])
    (root / "BCDR-F03" / "bcdr_f03_outlines.csv").write_text("\n".join([OUTLINE_HEADER] + OUTLINE_ROWS))
    (root / "BCDR-F03/patient_7/study_9/img_7_9_1_RCC.tif").unlink()
    expected = r"outlines\.csv:4: image 'patient_7/study_9/img_7_9_1_RCC\.tif' not found"
    with pytest.raises(DataError, match=expected):
        bcdr.read(root, distributions=["F03"])
    assert len(bcdr.read(root, distributions=["F03"], missing="skip")) == 2


def test_unknown_distribution_lists_found(root):
    with pytest.raises(DatasetNotFoundError, match=r"\['D01'\] not found .*Found: \['DN01', 'F03'\]"):
        bcdr.read(root, distributions=["D01"])
