"""VinDr-Mammo reader on a tiny release in the real format (two annotation CSVs, images/<study>/<image>.dicom)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from dicom_fixtures import write_dicom

from mammo_keras import data
from mammo_keras.cli import main
from mammo_keras.data import vindr_mammo
from mammo_keras.data.imageio import read_normalised
from mammo_keras.data.detection import detection_items, load_images
from mammo_keras.errors import DataError, DatasetNotFoundError

HEIGHT, WIDTH = 30, 40
# image_id -> (study_id, laterality, view, breast BI-RADS, density, split)
IMAGES = {
    "img_lcc": ("study_a", "L", "CC", 5, "C", "training"),
    "img_lmlo": ("study_a", "L", "MLO", 5, "C", "training"),
    "img_rcc": ("study_a", "R", "CC", 1, "C", "training"),
    "img_rmlo": ("study_a", "R", "MLO", 2, "C", "training"),
    "img_b1": ("study_b", "L", "CC", 4, "B", "test"),
    "img_b2": ("study_b", "R", "CC", 3, "B", "test"),
}
# (image_id, categories, finding BI-RADS, box)
FINDINGS = [
    ("img_lcc", "['Mass']", 4, (2.5, 3.0, 12.0, 10.5)),
    ("img_lcc", "['Suspicious Calcification', 'Mass']", 5, (20.0, 5.0, 26.0, 9.0)),
    ("img_lmlo", "['Focal Asymmetry']", 3, (1.0, 1.0, 39.0, 29.0)),
    ("img_rcc", "['No Finding']", None, None),
    ("img_rmlo", "['No Finding']", None, None),
    ("img_b1", "['Skin Thickening']", 4, (0.0, 0.0, 5.0, 5.0)),
    ("img_b2", "['No Finding']", None, None),
]
BREAST_HEADER = ["study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
                 "breast_birads", "breast_density", "split"]
FINDING_HEADER = ["image_id", "study_id", "series_id", "laterality", "view_position", "height", "width",
                  "breast_birads", "breast_density", "finding_categories", "finding_birads", "xmin", "ymin",
                  "xmax", "ymax", "split"]


def _breast_row(image_id):
    study, side, view, birads, density, split = IMAGES[image_id]
    return {"study_id": study, "series_id": f"series_{study}", "image_id": image_id, "laterality": side,
            "view_position": view, "height": HEIGHT, "width": WIDTH, "breast_birads": f"BI-RADS {birads}",
            "breast_density": f"DENSITY {density}", "split": split}


def write_release(root: Path, *, findings=FINDINGS, skip_dicoms=()) -> Path:
    """The release folder under root/physionet.org/files/vindr-mammo/1.0.0 (as wget -r writes it)."""
    release = root / "physionet.org" / "files" / "vindr-mammo" / "1.0.0"
    release.mkdir(parents=True)
    with open(release / vindr_mammo.BREAST_CSV, "w", newline="") as handle:
        writer = csv.DictWriter(handle, BREAST_HEADER)
        writer.writeheader()
        writer.writerows(_breast_row(image_id) for image_id in IMAGES)
    with open(release / vindr_mammo.FINDING_CSV, "w", newline="") as handle:
        writer = csv.DictWriter(handle, FINDING_HEADER)  # column order differs from the breast file
        writer.writeheader()
        for image_id, categories, birads, box in findings:
            row = {**_breast_row(image_id), "finding_categories": categories,
                   "finding_birads": f"BI-RADS {birads}" if birads else "",
                   **dict(zip(("xmin", "ymin", "xmax", "ymax"), box or ("", "", "", "")))}
            writer.writerow(row)
    for number, (image_id, (study, *_)) in enumerate(IMAGES.items()):
        if image_id not in skip_dicoms:
            pixels = np.full((HEIGHT, WIDTH), 100 * (number + 1), np.uint16)
            write_dicom(release / "images" / study / f"{image_id}.dicom", pixels, patient_id=study)
    return release


@pytest.fixture
def release(tmp_path):
    return write_release(tmp_path)


def test_rows_labels_boxes_and_official_split(release, tmp_path):
    table = vindr_mammo.read(tmp_path)  # found below the wget folder
    assert table["image_id"].tolist() == ["img_lcc", "img_lcc", "img_lmlo", "img_rcc", "img_rmlo", "img_b1",
                                          "img_b2"]
    assert table["lesion_id"].tolist() == ["img_lcc_f0", "img_lcc_f1", "img_lmlo_f0", "", "img_rmlo_unlocalised",
                                           "img_b1_f0", "img_b2_unlocalised"]
    assert table["patient_id"].tolist() == ["study_a"] * 5 + ["study_b"] * 2
    assert table["abnormality"].tolist() == ["mass", "mass", "asymmetry", "normal", "other", "other", "other"]
    assert table["pathology"].tolist() == ["malignant", "malignant", "benign", "normal", "benign", "malignant",
                                           "benign"]
    assert table["finding_categories"].tolist() == ["Mass", "Suspicious Calcification;Mass", "Focal Asymmetry",
                                                    "", "", "Skin Thickening", ""]
    assert table["finding_birads"].tolist() == ["4", "5", "3", "", "", "4", ""]
    assert table["birads"].tolist() == ["5", "5", "5", "1", "2", "4", "3"]
    assert table["density"].tolist() == ["C"] * 5 + ["B"] * 2
    assert table["split"].tolist() == ["train"] * 5 + ["test"] * 2
    assert table["laterality"].tolist() == ["L", "L", "L", "R", "R", "L", "R"]
    assert table["view"].tolist() == ["CC", "CC", "MLO", "CC", "MLO", "CC", "CC"]
    first = table.iloc[0]
    assert (first["x0"], first["y0"], first["x1"], first["y1"]) == (2.5, 3.0, 12.0, 10.5)
    assert (first["cx"], first["cy"]) == (7.25, 6.75)
    assert first["radius"] == pytest.approx(math.hypot(9.5, 7.5) / 2)
    assert table[["x0", "y0", "x1", "y1"]].iloc[3:5].isna().all().all()
    assert first["path"] == str(release / "images" / "study_a" / "img_lcc.dicom")
    assert set(table["source"]) == {"vindr_mammo"} and table["image_found"].all()
    assert read_normalised(first["path"]).shape == (HEIGHT, WIDTH)


def test_boxes_feed_detection(release):
    table = vindr_mammo.read(release)
    items = detection_items(table, abnormality="mass")
    assert items["image_id"].tolist() == ["img_lcc", "img_rcc"]  # the mass image and the normal one
    assert items["boxes"].tolist() == [[(2.5, 3.0, 12.0, 10.5), (20.0, 5.0, 26.0, 9.0)], []]
    images, boxes, scales = load_images(items, (15, 20))
    assert images.shape == (2, 15, 20) and scales == [2.0, 2.0]
    np.testing.assert_allclose(boxes[0], [[1.25, 1.5, 6.0, 5.25], [10.0, 2.5, 13.0, 4.5]])


def test_shen_labeling_excludes_birads_3(release):
    table = vindr_mammo.read(release, labeling="shen")
    assert "img_b2" not in set(table["image_id"])
    assert table["image_id"].nunique() == 5
    with pytest.raises(ValueError, match=r"labeling must be one of \['birads', 'shen'\]. Received: labeling='x'"):
        vindr_mammo.read(release, labeling="x")


def test_missing_dicoms_error_skip_keep_and_data_info(tmp_path, capsys):
    release = write_release(tmp_path, skip_dicoms=("img_rmlo", "img_b2"))
    with pytest.raises(DataError) as error:
        vindr_mammo.read(release)
    assert error.value.path == str(release / vindr_mammo.BREAST_CSV) and error.value.line == 5
    assert "image 'img_rmlo' has no DICOM" in str(error.value)
    kept = vindr_mammo.read(release, missing="keep")
    assert kept.loc[~kept["image_found"], "image_id"].tolist() == ["img_rmlo", "img_b2"]
    assert vindr_mammo.read(release, missing="skip")["image_id"].nunique() == 4
    assert data.read_dataset("vindr-mammo", release, missing="skip")["image_id"].nunique() == 4
    assert main(["data", "info", "vindr_mammo", "--root", str(release)]) == 0
    out = capsys.readouterr().out
    assert "image files      found 4 of 6 listed   missing 2" in out
    assert "missing: images/study_a/img_rmlo.dicom" in out
    assert "lesions by type and pathology  asymmetry: benign 1   mass: malignant 2   other: benign 2, malignant 1" in out
    assert main(["data", "info", "vindr_mammo", "--root", str(release), "--strict"]) == 1
    assert "has no DICOM" in capsys.readouterr().err


def test_bad_values_name_file_and_line(tmp_path):
    bad_box = [("img_lcc", "['Mass']", 4, (2.0, 3.0, 50.0, 10.0))]
    release = write_release(tmp_path / "box", findings=bad_box)
    with pytest.raises(DataError, match=r"finding_annotations.csv:2: the box must have xmin < xmax.*"
                                        r"40x30 image. Received: xmin=2, ymin=3, xmax=50, ymax=10"):
        vindr_mammo.read(release)
    release = write_release(tmp_path / "categories", findings=[("img_lcc", "['Mass', 'Calc'", 4, (1, 1, 2, 2))])
    with pytest.raises(DataError, match=r"finding_annotations.csv:2: finding_categories reads like"):
        vindr_mammo.read(release)
    release = write_release(tmp_path / "split")
    path = release / vindr_mammo.BREAST_CSV
    path.write_text(path.read_text().replace("img_b2,R,CC,30,40,BI-RADS 3,DENSITY B,test",
                                             "img_b2,R,CC,30,40,BI-RADS 3,DENSITY B,validation"))
    with pytest.raises(DataError, match=r"breast-level_annotations.csv:7: split must be 'training' or 'test'. "
                                        r"Received: 'validation'"):
        vindr_mammo.read(release)
    path.write_text(path.read_text().replace("validation", "test").replace("BI-RADS 3", "BI-RADS 7"))
    with pytest.raises(DataError, match=r":7: column 'breast_birads' must read 'BI-RADS 0' ... 'BI-RADS 6'"):
        vindr_mammo.read(release)


def test_missing_release_and_unknown_finding_image(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"(?s)breast-level_annotations.csv not found under .*Expected layout"):
        vindr_mammo.read(tmp_path)
    release = write_release(tmp_path / "r", findings=[("img_lcc", "['Mass']", 4, (1, 1, 2, 2))])
    path = release / vindr_mammo.FINDING_CSV
    path.write_text(path.read_text().replace("img_lcc", "img_zzz"))
    with pytest.raises(DataError, match=r"finding_annotations.csv:2: image_id 'img_zzz' is not listed in "
                                        r"breast-level_annotations.csv"):
        vindr_mammo.read(release)
