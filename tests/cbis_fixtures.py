"""A tiny CBIS-DDSM download in the real format (four description CSVs, DICOMs in UID folders), sized
for splits: enough patients on each side of the official train/test split to draw a validation
part, and the known trap of the real data when `trap` is set: two patients whose mass lesion sits
on one side of the official split and whose calcification sits on the other (in the real data
about 31 patient ids are in both when the mass and calc files are merged)."""
from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np

from dicom_fixtures import write_dicom

SHAPE = (48, 64)  # rows, columns of every full image (and its ROI mask)
HEADERS = {
    "mass": ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
             "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
             "image file path", "cropped image file path", "ROI mask file path"],
    "calc": ["patient_id", "breast density", "left or right breast", "image view", "abnormality id",
             "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
             "image file path", "cropped image file path", "ROI mask file path"],
}
SUBJECT_PREFIX = {("mass", "train"): "Mass-Training", ("mass", "test"): "Mass-Test",
                  ("calc", "train"): "Calc-Training", ("calc", "test"): "Calc-Test"}
CSV_NAME = {("mass", "train"): "mass_case_description_train_set.csv",
            ("mass", "test"): "mass_case_description_test_set.csv",
            ("calc", "train"): "calc_case_description_train_set.csv",
            ("calc", "test"): "calc_case_description_test_set.csv"}
TRAP_PATIENTS = ("P_00001", "P_00101")  # mass in train and calc in test; mass in test and calc in train


def lesions(*, trap: bool = True) -> list[tuple[str, str, str, str, str]]:
    """(kind, side of the official split, patient, laterality, pathology) per lesion (one per image)."""
    rows = []
    for number in range(1, 9):  # mass train: 8 patients, alternating benign / malignant
        rows.append(("mass", "train", f"P_{number:05d}", "LEFT", "MALIGNANT" if number % 2 else "BENIGN"))
    for number in range(101, 105):  # mass test: 4 patients
        rows.append(("mass", "test", f"P_{number:05d}", "RIGHT", "MALIGNANT" if number % 2 else "BENIGN"))
    for number in range(201, 205):  # calc train and test: other patients
        rows.append(("calc", "train", f"P_{number:05d}", "LEFT", "MALIGNANT" if number % 2 else "BENIGN"))
    for number in range(301, 303):
        rows.append(("calc", "test", f"P_{number:05d}", "LEFT", "MALIGNANT" if number % 2 else "BENIGN"))
    if trap:
        rows.append(("calc", "test", TRAP_PATIENTS[0], "RIGHT", "BENIGN"))
        rows.append(("calc", "train", TRAP_PATIENTS[1], "LEFT", "MALIGNANT"))
    return rows


def write_cbis(root: Path, *, trap: bool = True) -> Path:
    """Write the tiny download under `root` (CSVs in root/, DICOMs in UID folders); returns `root`."""
    counter = itertools.count(1000)
    uid = lambda: f"1.3.6.1.4.1.9590.100.1.2.{next(counter)}"  # noqa: E731
    rng = np.random.default_rng(0)
    rows: dict[tuple[str, str], list[list]] = {}
    for number, (kind, side, patient, laterality, pathology) in enumerate(lesions(trap=trap)):
        subject = f"{SUBJECT_PREFIX[(kind, side)]}_{patient}_{laterality}_CC"
        study, series = uid(), uid()
        image = rng.integers(0, 2000, SHAPE).astype(np.uint16)
        x0, y0 = 8 + 3 * (number % 8), 6 + 2 * (number % 5)
        image[y0:y0 + 12, x0:x0 + 14] += 2000 if pathology == "MALIGNANT" else 800  # a lesion to see
        write_dicom(root / subject / study / series / "000000.dcm", image, patient_id=subject,
                    study_uid=study, series_uid=series)
        lesion_subject, lesion_study, lesion_series = f"{subject}_1", uid(), uid()
        mask = np.zeros(SHAPE, np.uint8)
        mask[y0:y0 + 12, x0:x0 + 14] = 255
        write_dicom(root / lesion_subject / lesion_study / lesion_series / "000000.dcm",
                    np.full((10, 12), 900, np.uint16), patient_id=lesion_subject, study_uid=lesion_study,
                    series_uid=lesion_series)
        write_dicom(root / lesion_subject / lesion_study / lesion_series / "000001.dcm", mask, bits_stored=8,
                    patient_id=lesion_subject, study_uid=lesion_study, series_uid=lesion_series)
        descriptors = ["IRREGULAR", "SPICULATED"] if kind == "mass" else ["PLEOMORPHIC", "SEGMENTAL"]
        rows.setdefault((kind, side), []).append(
            [patient, 3, laterality, "CC", 1, "mass" if kind == "mass" else "calcification", *descriptors, 4,
             pathology, 3, f"{subject}/{study}/{series}/000000.dcm",
             f"{lesion_subject}/{lesion_study}/{lesion_series}/000000.dcm",
             f"{lesion_subject}/{lesion_study}/{lesion_series}/000001.dcm"])
    for key, lines in rows.items():
        with open(root / CSV_NAME[key], "w", newline="") as handle:
            csv.writer(handle).writerows([HEADERS[key[0]], *lines])
    return root
