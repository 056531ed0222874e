"""CBIS-DDSM reader on a tiny tree in both layouts: CSV UID paths and TCIA descriptive folders."""
from __future__ import annotations

import csv
import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mammo_keras import data
from mammo_keras.cli import main
from mammo_keras.data import cbis_ddsm
from mammo_keras.errors import DataError, DatasetNotFoundError
from dicom_fixtures import write_dicom

UID_ROOT = "1.3.6.1.4.1.9590.100.1.2."
FULL_SHAPE = (48, 64)  # rows, columns: a 64x48 image
CROP_SHAPE = (10, 12)
MASS_HEADER = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
               "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
               "image file path", "cropped image file path", "ROI mask file path"]
CALC_HEADER = ["patient_id", "breast density", "left or right breast", "image view", "abnormality id",
               "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
               "image file path", "cropped image file path", "ROI mask file path"]
# (csv, subject, abnormality id, pathology, box x0 y0 x1 y1, mask shape, crop+mask series, swapped)
LESIONS = [
    ("mass_case_description_train_set.csv", "Mass-Training_P_00001_LEFT_CC", 1, "MALIGNANT",
     (5, 10, 15, 20), FULL_SHAPE, "one", False),
    ("mass_case_description_train_set.csv", "Mass-Training_P_00002_RIGHT_MLO", 1,
     "BENIGN_WITHOUT_CALLBACK", (30, 2, 40, 8), FULL_SHAPE, "two", True),
    ("mass_case_description_train_set.csv", "Mass-Training_P_00002_RIGHT_MLO", 2, "BENIGN",
     (50, 30, 60, 44), FULL_SHAPE, "one", False),
    ("mass_case_description_test_set.csv", "Mass-Test_P_00003_LEFT_MLO", 1, "BENIGN",
     (1, 1, 4, 3), (30, 40), "one", False),
    ("calc_case_description_train_set.csv", "Calc-Training_P_00001_LEFT_CC", 1, "MALIGNANT",
     (20, 20, 22, 25), FULL_SHAPE, "one", True),
    ("calc_case_description_test_set.csv", "Calc-Test_P_00004_RIGHT_CC", 1, "BENIGN",
     (10, 40, 12, 48), FULL_SHAPE, "two", False),
]
LESION_IDS = ["Mass-Training_P_00001_LEFT_CC_1", "Mass-Training_P_00002_RIGHT_MLO_1",
              "Mass-Training_P_00002_RIGHT_MLO_2", "Mass-Test_P_00003_LEFT_MLO_1",
              "Calc-Training_P_00001_LEFT_CC_1", "Calc-Test_P_00004_RIGHT_CC_1"]


def build_tree(root: Path, layout: str) -> dict[str, dict[str, Path]]:
    """Write the tiny dataset under `root`; return lesion_id -> {image, mask, crop} file paths.

    layout "uid": folders named by the UIDs the CSVs use (CSVs in root/csv/);
    layout "tcia": NBIA Data Retriever descriptive folders (CSVs beside CBIS-DDSM/).
    """
    counter = itertools.count(1000)

    def uid() -> str:
        return f"{UID_ROOT}{next(counter)}"

    def place(subject: str, study: str, series: str, number: int, label: str) -> Path:
        if layout == "uid":
            return root / subject / study / series / f"{number:06d}.dcm"
        return (root / "CBIS-DDSM" / subject / f"07-20-2016-DDSM-{study[-4:]}"
                / f"1.000000-{label}-{series[-4:]}" / f"1-{number + 1}.dcm")

    def csv_path(subject: str, study: str, series: str, number: int) -> str:
        return f"{subject}/{study}/{series}/{number:06d}.dcm"

    images: dict[str, str] = {}
    rows: dict[str, list[list]] = {}
    files: dict[str, dict[str, Path]] = {}
    for csv_name, subject, number, pathology, box, mask_shape, series_kind, swapped in LESIONS:
        if subject not in images:
            study, series = uid(), uid()
            pixels = (np.arange(np.prod(FULL_SHAPE)).reshape(FULL_SHAPE) * 7) % 4096
            path = write_dicom(place(subject, study, series, 0, "full mammogram images"), pixels,
                               patient_id=subject, study_uid=study, series_uid=series)
            images[subject] = csv_path(subject, study, series, 0)
            files[subject] = {"image": path}
        lesion_subject = f"{subject}_{number}"
        mask = np.zeros(mask_shape, np.uint8)
        x0, y0, x1, y1 = box
        mask[y0:y1, x0:x1] = 255
        crop = np.full(CROP_SHAPE, 900, np.uint16)
        study = uid()
        if series_kind == "one":  # TCIA: crop 000000.dcm and mask 000001.dcm in one series
            series = uid()
            crop_ref, mask_ref = (study, series, 0), (study, series, 1)
            crop_at, mask_at = (mask_ref, crop_ref) if swapped else (crop_ref, mask_ref)
            labels = {crop_at: "ROI mask images", mask_at: "ROI mask images"}
        else:
            crop_ref, mask_ref = (study, uid(), 0), (study, uid(), 0)
            crop_at, mask_at = (mask_ref, crop_ref) if swapped else (crop_ref, mask_ref)
            labels = {crop_ref: "cropped images", mask_ref: "ROI mask images"}
        crop_file = write_dicom(place(lesion_subject, *crop_at[:2], crop_at[2], labels[crop_at]), crop,
                                patient_id=lesion_subject, study_uid=crop_at[0], series_uid=crop_at[1])
        mask_file = write_dicom(place(lesion_subject, *mask_at[:2], mask_at[2], labels[mask_at]), mask,
                                bits_stored=8, patient_id=lesion_subject, study_uid=mask_at[0],
                                series_uid=mask_at[1])
        files[f"{subject}_{number}"] = {"image": files[subject]["image"], "mask": mask_file,
                                        "crop": crop_file}
        patient = "_".join(subject.split("_")[1:3])
        side, view = subject.split("_")[3:5]
        kind = "mass" if csv_name.startswith("mass") else "calcification"
        descriptors = ["IRREGULAR", "SPICULATED"] if kind == "mass" else ["PLEOMORPHIC", "SEGMENTAL"]
        mask_text = csv_path(lesion_subject, *mask_ref)
        if subject == "Mass-Training_P_00001_LEFT_CC":
            mask_text += "\n"  # the real CSVs have cells that end in a quoted newline
        rows.setdefault(csv_name, []).append(
            [patient, 3, side, view, number, kind, *descriptors, 4, pathology, 5,
             images[subject], csv_path(lesion_subject, *crop_ref), mask_text])
    csv_folder = root / "csv" if layout == "uid" else root
    csv_folder.mkdir(parents=True, exist_ok=True)
    for csv_name, lines in rows.items():
        header = MASS_HEADER if csv_name.startswith("mass") else CALC_HEADER
        with open(csv_folder / csv_name, "w", newline="") as handle:
            csv.writer(handle).writerows([header, *lines])
    return files


@pytest.fixture(params=["uid", "tcia"])
def tree(request, tmp_path):
    return tmp_path, build_tree(tmp_path, request.param)


def test_reads_ids_labels_and_descriptors(tree):
    root, _ = tree
    table = cbis_ddsm.read(root)
    assert table["lesion_id"].tolist() == LESION_IDS
    assert table["image_id"].tolist() == [lesion.rsplit("_", 1)[0] for lesion in LESION_IDS]
    assert table["patient_id"].tolist() == ["P_00001", "P_00002", "P_00002", "P_00003", "P_00001",
                                            "P_00004"]
    assert table["laterality"].tolist() == ["L", "R", "R", "L", "L", "R"]
    assert table["view"].tolist() == ["CC", "MLO", "MLO", "MLO", "CC", "CC"]
    assert table["abnormality"].tolist() == ["mass"] * 4 + ["calcification"] * 2
    assert table["pathology"].tolist() == ["malignant", "benign", "benign", "benign", "malignant",
                                           "benign"]
    assert table["pathology_raw"].tolist() == ["MALIGNANT", "BENIGN_WITHOUT_CALLBACK", "BENIGN",
                                               "BENIGN", "MALIGNANT", "BENIGN"]
    assert table["split"].tolist() == ["train", "train", "train", "test", "train", "test"]
    assert table["source"].unique().tolist() == ["cbis_ddsm"]
    assert table["density"].tolist() == [3] * 6
    assert table["assessment"].tolist() == [4] * 6
    assert table["subtlety"].tolist() == [5] * 6
    assert table["shape"].tolist() == ["IRREGULAR"] * 4 + [""] * 2
    assert table["margins"].tolist() == ["SPICULATED"] * 4 + [""] * 2
    assert table["calc_type"].tolist() == [""] * 4 + ["PLEOMORPHIC"] * 2
    assert table["calc_distribution"].tolist() == [""] * 4 + ["SEGMENTAL"] * 2
    # the quoted newline in the first row's mask cell makes its record span lines 2-3
    assert table["csv_line"].tolist() == [2, 4, 5, 2, 2, 2]


def test_resolves_files_and_repairs_swapped_paths(tree):
    root, files = tree
    table = cbis_ddsm.read(root).set_index("lesion_id")
    for lesion_id in LESION_IDS:
        assert table.loc[lesion_id, "path"] == str(files[lesion_id]["image"])
        assert table.loc[lesion_id, "mask_path"] == str(files[lesion_id]["mask"])
        assert table.loc[lesion_id, "crop_path"] == str(files[lesion_id]["crop"])
    assert table["paths_swapped"].tolist() == [False, True, False, False, True, False]


def test_box_from_mask_and_wrong_size_mask_reported(tree):
    root, _ = tree
    table = cbis_ddsm.read(root)
    boxes = table[["x0", "y0", "x1", "y1"]].to_numpy()
    expected = [lesion[4] for lesion in LESIONS]
    expected[3] = (np.nan,) * 4
    np.testing.assert_array_equal(boxes, np.array(expected, dtype=float))
    first = table.iloc[0]
    assert (first["cx"], first["cy"]) == (10.0, 15.0)
    assert first["radius"] == pytest.approx(math.hypot(10, 10) / 2)
    assert np.isnan(table.loc[3, ["cx", "cy", "radius"]].astype(float)).all()
    problem = table.loc[3, "problem"]
    assert "is 40x30 pixels but its full image is 64x48" in problem
    assert table["problem"].tolist()[:3] + table["problem"].tolist()[4:] == [""] * 5
    assert len(table.attrs["problems"]) == 1
    assert table.attrs["problems"][0].endswith(f"mass_case_description_test_set.csv:2: "
                                               f"Mass-Test_P_00003_LEFT_MLO_1: {problem}")


def test_unchecked_masks_are_used_as_they_are(tmp_path):
    build_tree(tmp_path, "tcia")
    table = cbis_ddsm.read(tmp_path, check_masks=False)
    assert table.loc[3, ["x0", "y0", "x1", "y1"]].tolist() == [1.0, 1.0, 4.0, 3.0]
    assert table["problem"].tolist() == [""] * 6
    assert table.attrs["problems"] == []


def test_abnormality_selects_csvs(tmp_path):
    build_tree(tmp_path, "uid")
    for name in ("calc_case_description_train_set.csv", "calc_case_description_test_set.csv"):
        (tmp_path / "csv" / name).unlink()
    table = cbis_ddsm.read(tmp_path, abnormality="mass")
    assert table["lesion_id"].tolist() == LESION_IDS[:4]
    with pytest.raises(DatasetNotFoundError, match=r"none of the description CSVs \['calc_case_description_train"
                                                   r"_set.csv', 'calc_case_description_test_set.csv'\] found"):
        cbis_ddsm.read(tmp_path, abnormality="calcification")
    with pytest.raises(ValueError, match=r"Received: abnormality=\('mass', 'distortion'\)"):
        cbis_ddsm.read(tmp_path, abnormality=("mass", "distortion"))


def test_any_subset_of_the_csvs_is_read_and_named(tmp_path):
    build_tree(tmp_path, "uid")
    for name in ("calc_case_description_train_set.csv", "calc_case_description_test_set.csv"):
        (tmp_path / "csv" / name).unlink()
    table = cbis_ddsm.read(tmp_path)  # a mass-only download: the default reads what is there
    assert table["lesion_id"].tolist() == LESION_IDS[:4]
    assert [Path(path).name for path in table.attrs["csv_files"]] == [
        "mass_case_description_train_set.csv", "mass_case_description_test_set.csv"]
    assert table.attrs["csv_missing"] == ["calc_case_description_train_set.csv",
                                          "calc_case_description_test_set.csv"]
    (tmp_path / "csv" / "mass_case_description_train_set.csv").unlink()
    only_test = cbis_ddsm.read(tmp_path)
    assert only_test["lesion_id"].tolist() == [LESION_IDS[3]] and only_test["split"].tolist() == ["test"]
    (tmp_path / "csv" / "mass_case_description_test_set.csv").unlink()
    with pytest.raises(DatasetNotFoundError, match="at least one is needed"):
        cbis_ddsm.read(tmp_path)


def _partial_download(files: dict[str, dict[str, Path]]) -> None:
    """Lose one full image (two lesions' image) and one whole lesion (image, mask and crop)."""
    files["Mass-Training_P_00002_RIGHT_MLO"]["image"].unlink()
    for path in files["Calc-Test_P_00004_RIGHT_CC_1"].values():
        path.unlink()


def test_missing_files_are_kept_or_skipped(tree):
    root, files = tree
    _partial_download(files)
    table = cbis_ddsm.read(root, missing="keep")
    assert table["lesion_id"].tolist() == LESION_IDS
    assert table["image_found"].tolist() == [True, False, False, True, True, False]
    missing_path = table.loc[1, "path"]
    assert missing_path.startswith(str(root / "Mass-Training_P_00002_RIGHT_MLO" / UID_ROOT))
    assert not Path(missing_path).exists() and missing_path.endswith("000000.dcm")
    # the image is gone but mask and crop are there: two files tell the mask (larger) from the crop
    np.testing.assert_array_equal(table.loc[1:2, ["x0", "y0", "x1", "y1"]].to_numpy(),
                                  [[30, 2, 40, 8], [50, 30, 60, 44]])
    assert table.loc[1, "problem"] == "full image not found; box from the ROI mask, its size not checked"
    assert np.isnan(table.loc[5, ["x0", "y0", "x1", "y1"]].astype(float)).all()
    assert table.loc[5, "problem"].startswith("full image not found; no ROI mask found")
    missing = table.attrs["missing_files"]
    assert len(missing) == 5  # two image cells of P_00002, and image, mask and crop of P_00004
    assert missing[0].endswith("mass_case_description_train_set.csv:4: image file path: "
                               + table.loc[1, "path"][len(str(root)) + 1:])
    skipped = cbis_ddsm.read(root, missing="skip")
    assert skipped["lesion_id"].tolist() == [LESION_IDS[0], LESION_IDS[3], LESION_IDS[4]]
    with pytest.raises(ValueError, match=r"missing must be one of \['error', 'skip', 'keep'\]. "
                                         r"Received: missing='ignore'"):
        cbis_ddsm.read(root, missing="ignore")


def test_data_info_counts_a_partial_download_and_strict_fails(tmp_path, capsys):
    files = build_tree(tmp_path, "tcia")
    _partial_download(files)
    assert main(["data", "info", "cbis_ddsm", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "label files read (4): mass_case_description_train_set.csv, mass_case_description_test_set.csv, " \
           "calc_case_description_train_set.csv, calc_case_description_test_set.csv" in out
    assert "  images 5   patients 4   label rows 6" in out
    assert ("lesions by type and pathology  calcification: benign 1, malignant 1   "
            "mass: benign 3, malignant 1") in out
    assert "image files      found 3 of 5 listed   missing 2" in out
    assert "    missing: Mass-Training_P_00002_RIGHT_MLO/" in out
    assert "    missing: Calc-Test_P_00004_RIGHT_CC/" in out
    assert "masks and crops included: 5" in out
    assert main(["data", "info", "cbis_ddsm", "--root", str(tmp_path), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["files"]["image_files_missing"] == 2 and facts["files"]["images_listed"] == 5
    assert facts["csv_missing"] == []
    assert main(["data", "info", "cbis_ddsm", "--root", str(tmp_path), "--strict"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    error = captured.err.strip()
    assert "\n" not in error
    assert error.startswith("error: ") and "mass_case_description_train_set.csv:4: image file path" in error
    assert "not found" in error


def test_prepare_skip_missing_prepares_the_rest_and_records_the_missing(tmp_path, capsys):
    files = build_tree(tmp_path / "data", "tcia")
    _partial_download(files)
    command = ["data", "prepare", "cbis_ddsm", "--root", str(tmp_path / "data"), "--task", "chougrad",
               "--option", "r=20", "--option", "size=16", "--workers", "1", "--no-progress"]
    assert main(command + ["--out", str(tmp_path / "strict")]) == 1
    assert "mass_case_description_train_set.csv:4: image file path" in capsys.readouterr().err
    out = tmp_path / "prepared"
    assert main(command + ["--out", str(out), "--skip-missing"]) == 0
    printed = capsys.readouterr().out
    assert "2 items from 2 images" in printed and "skipped 2 images (2 missing, 0 bad" in printed
    report = json.loads((out / "prepare.json").read_text())
    assert [(e["image_id"], e["reason"]) for e in report["skipped"]] == [
        ("Calc-Test_P_00004_RIGHT_CC", "missing"), ("Mass-Training_P_00002_RIGHT_MLO", "missing")]
    assert all(e["error"].endswith(": image file not found") for e in report["skipped"])
    index = pd.read_csv(out / "index.csv")
    assert index["item_id"].tolist() == ["Calc-Training_P_00001_LEFT_CC_1", "Mass-Training_P_00001_LEFT_CC_1"]


def test_registry_and_duplicate_download_folders(tmp_path):
    build_tree(tmp_path, "tcia")
    shutil.copytree(tmp_path / "CBIS-DDSM", tmp_path / "second-copy" / "CBIS-DDSM")
    table = data.read_dataset("cbis-ddsm", tmp_path)
    assert table["lesion_id"].tolist() == LESION_IDS
    assert table["paths_swapped"].tolist() == [False, True, False, False, True, False]


def test_missing_column_names_csv_and_column(tmp_path):
    build_tree(tmp_path, "tcia")
    path = tmp_path / "mass_case_description_test_set.csv"
    with open(path, newline="") as handle:
        lines = [row[:9] + row[10:] for row in csv.reader(handle)]
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(lines)
    with pytest.raises(DataError) as error:
        cbis_ddsm.read(tmp_path)
    assert error.value.path == str(path)
    assert str(error.value).startswith(f"{path}:1: missing required column 'pathology'")


def test_missing_file_names_csv_line_and_path(tree):
    root, files = tree
    files["Mass-Training_P_00002_RIGHT_MLO"]["image"].unlink()
    with pytest.raises(DataError) as error:
        cbis_ddsm.read(root)
    message = str(error.value)
    assert error.value.line == 4
    expected = "mass_case_description_train_set.csv:4: image file path 'Mass-Training_P_00002_RIGHT_MLO/"
    assert expected in message
    assert "not found" in message and "PatientID=Mass-Training_P_00002_RIGHT_MLO" in message


def test_bad_pathology_value_names_line(tmp_path):
    build_tree(tmp_path, "tcia")
    path = tmp_path / "calc_case_description_test_set.csv"
    path.write_text(path.read_text().replace(",BENIGN,", ",UNKNOWN,"))
    with pytest.raises(DataError, match=r"calc_case_description_test_set.csv:2: column 'pathology' "
                                        r"must be one of .*Received: 'UNKNOWN'"):
        cbis_ddsm.read(tmp_path)
