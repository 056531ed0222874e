"""mini-MIAS reader: a hand-written Info.txt in the real format, then the real database."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mammo_keras.data import mias, read_dataset
from mammo_keras.data.records import image_labels, summary
from mammo_keras.errors import DataError
from mias_fixtures import INFO, write_folder


@pytest.mark.parametrize("suffix", [".pgm", ".png"])
def test_reads_both_distributions(tmp_path, suffix):
    table = mias.read(write_folder(tmp_path / "m", suffix=suffix))
    assert len(table) == 7
    assert list(table["image_id"]) == ["mdb001", "mdb002", "mdb003", "mdb004", "mdb005", "mdb005", "mdb006"]
    assert all(path.endswith(suffix) for path in table["path"])


def test_parses_exact_values(tmp_path):
    table = mias.read(write_folder(tmp_path / "m"))
    first = table.iloc[0]
    # Y is counted from the bottom-left corner: row = 1024 - 425 = 599.
    assert (first.cx, first.cy, first.radius) == (535.0, 599.0, 197.0)
    assert (first.x0, first.y0, first.x1, first.y1) == (338.0, 402.0, 732.0, 796.0)
    assert first.abnormality == "mass" and first.pathology == "benign" and first.tissue == "fatty-glandular"
    assert first.lesion_id == "mdb001_1" and first.info_line == 5
    normal = table[table.image_id == "mdb003"].iloc[0]
    assert (normal.abnormality, normal.pathology, normal.lesion_id) == ("normal", "normal", "")
    assert np.isnan(normal.x0)
    no_coordinates = table[table.image_id == "mdb004"].iloc[0]
    assert no_coordinates.abnormality == "calcification" and np.isnan(no_coordinates.cx)
    note3 = table[table.image_id == "mdb006"].iloc[0]
    assert note3.pathology == "malignant" and np.isnan(note3.radius)
    assert list(table[table.image_id == "mdb005"]["lesion_id"]) == ["mdb005_1", "mdb005_2"]


def test_patients_and_laterality(tmp_path):
    table = mias.read(write_folder(tmp_path / "m"))
    assert dict(zip(table.image_id, table.patient_id)) == {
        "mdb001": "mias_p001", "mdb002": "mias_p001", "mdb003": "mias_p002",
        "mdb004": "mias_p002", "mdb005": "mias_p003", "mdb006": "mias_p003"}
    assert dict(zip(table.image_id, table.laterality))["mdb001"] == "R"
    assert dict(zip(table.image_id, table.laterality))["mdb002"] == "L"


def test_benign_plus_malignant_image_counts_malignant(tmp_path):
    labels = image_labels(mias.read(write_folder(tmp_path / "m")))
    assert dict(zip(labels.image_id, labels.pathology))["mdb005"] == "malignant"
    assert labels["pathology"].value_counts().to_dict() == {"benign": 3, "malignant": 2, "normal": 1}


@pytest.mark.parametrize("bad_line, message", [
    ("mdb007 G CIRC X 1 2 3", "severity B or M"),
    ("mdb007 Q NORM", "background tissue"),
    ("mdb007 G BLOB B 1 2 3", "abnormality class"),
    ("mdb007 G CIRC B 1 2", "X Y RADIUS"),
    ("mdb007 G CIRC B 1 two 3", "must be numbers"),
    ("mdb007 G CIRC B 1500 2 3", "must lie in the"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    info = INFO.replace("mdb006 D CALC M *NOTE 3* \r\n", f"mdb006 D CALC M *NOTE 3* \r\n{bad_line}\r\n")
    root = write_folder(tmp_path / "m", info=info, refnums=range(1, 8))
    with pytest.raises(DataError) as caught:
        mias.read(root)
    assert f"Info.txt:12: " in str(caught.value) and message in str(caught.value)


@pytest.mark.parametrize("bad_line, message", [
    ("mdb0012 G CIRC M 500 500 30", "'mdb' and three digits"),
    ("mdb01 G CIRC M 500 500 30", "'mdb' and three digits"),
    ("MDB007 G CIRC M 500 500 30", "'mdb' and three digits"),
    ("mdb007G CIRC M 500 500 30", "'mdb' and three digits"),
    ("mdb007 G CIRC M 500 500 1e9", "at most 512 pixels"),
    ("mdb007 G CIRC M 500 500 513", "at most 512 pixels"),
    ("mdb007 G CIRC M 500 500 0", "radius must be positive"),
    ("mdb007 G CIRC M 500 0 30", "must lie in the 1024x1024 image"),  # row 1024 - 0 is below the image
    ("mdb007 G CIRC M 500 1025 30", "must lie in the 1024x1024 image"),
    ("mdb007 G CIRC M 1024 500 30", "must lie in the 1024x1024 image"),
    ("mdb007 G CIRC M nan 500 30", "must lie in the 1024x1024 image"),
])
def test_row_that_would_be_skipped_or_misplaced_is_refused(tmp_path, bad_line, message):
    """A row starting with mdb that does not parse is an error, not a line of free text (a lesion lost)."""
    info = INFO.replace("mdb006 D CALC M *NOTE 3* \r\n", f"mdb006 D CALC M *NOTE 3* \r\n{bad_line}\r\n")
    root = write_folder(tmp_path / "m", info=info, refnums=range(1, 8))
    with pytest.raises(DataError, match=r"Info\.txt:12: ") as caught:
        mias.read(root)
    assert message in str(caught.value)


def test_edge_of_the_image_is_inside(tmp_path):
    """Y = 1024 is the top row (row 0) and X = 0 the first column; the largest radius is half the image."""
    info = INFO.replace("mdb006 D CALC M *NOTE 3* \r\n", "mdb006 D CALC M 0 1024 512\r\n")
    row = mias.read(write_folder(tmp_path / "m", info=info)).iloc[-1]
    assert (row.cx, row.cy, row.radius) == (0.0, 0.0, 512.0)


@pytest.mark.parametrize("second, message", [
    ("mdb003 D CIRC M 500 500 30", "mdb003 is both normal and abnormal"),  # a lesion besides NORM
    ("mdb001 G NORM", "mdb001 is both normal and abnormal"),  # NORM besides a lesion
    ("mdb003 D NORM", "mdb003 is listed twice: this row repeats line 7"),
    ("mdb001 G CIRC B 535 425 197", "mdb001 is listed twice: this row repeats line 5"),
    ("mdb005 D MISC B 400 400 20", "background tissue 'D' here but 'F' on line 9"),
    ("mdb003 G NORM", "background tissue 'G' here but 'D' on line 7"),
])
def test_contradictory_rows_are_refused(tmp_path, second, message):
    info = INFO.replace("mdb006 D CALC M *NOTE 3* \r\n", f"mdb006 D CALC M *NOTE 3* \r\n{second}\r\n")
    with pytest.raises(DataError, match=r"Info\.txt:12: ") as caught:
        mias.read(write_folder(tmp_path / "m", info=info))
    assert message in str(caught.value)


@pytest.mark.parametrize("suffix", [".pgm", ".png"])
def test_image_not_1024_square_is_refused(tmp_path, suffix):
    """Info.txt's coordinates are of a 1024 x 1024 image; a resized or cropped file would misplace them."""
    root = write_folder(tmp_path / "m", suffix=suffix)
    Image.fromarray(np.zeros((1000, 1024), np.uint8)).save(root / f"mdb002{suffix}")
    with pytest.raises(DataError, match=rf"mdb002\{suffix}: mini-MIAS images are 1024x1024 pixels.* this one is "
                                        r"1024x1000 \(width x height\)"):
        mias.read(root)


def test_missing_image_and_missing_info(tmp_path):
    root = write_folder(tmp_path / "m", refnums=range(1, 6))
    with pytest.raises(DataError, match=r"Info.txt:11: image file mdb006.pgm/.png not found"):
        mias.read(root)
    with pytest.raises(DataError, match="Info.txt not found"):
        mias.read(tmp_path / "empty")


def test_real_mini_mias_counts(mini_mias):
    table = read_dataset("mias", mini_mias)
    facts = summary(table)
    assert facts["images"] == 322 and facts["rows"] == 330 and facts["patients"] == 161
    assert facts["images_by_pathology"] == {"benign": 63, "malignant": 52, "normal": 207}
    assert facts["lesions_with_geometry"] == 119
    assert facts["lesions_by_abnormality"] == {"asymmetry": 15, "calcification": 30,
                                               "distortion": 19, "mass": 59}
