"""RSNA Screening Mammography Breast Cancer Detection (Kaggle, 2023) reader: train.csv plus DICOMs.

Facts of the competition data this reader relies on:
- `train.csv`: one row per image: site_id, patient_id, image_id, laterality (L/R), view (CC,
  MLO, and a few ML, LM, AT, LMO), age, cancer (0/1: the breast was positive for malignant
  cancer), biopsy (0/1: a follow-up biopsy was done), invasive (0/1, for cancers), BIRADS (0:
  the breast needed follow-up, 1: rated negative for cancer, 2: rated normal; empty when
  unknown), implant (0/1), density (A-D, may be empty), machine_id, difficult_negative_case
  (True/False). Usually four images per patient; one screening exam each.
- `train_images/<patient_id>/<image_id>.dcm`; many of the files are JPEG 2000 compressed (others
  JPEG Lossless). Decoding them needs `pip install pylibjpeg pylibjpeg-openjpeg` (the optional
  `jpeg2000` extra of this package); without a decoder, reading one raises a DataError that
  names the file and says so (`dicom.read_dicom`).
- The competition scores one prediction per breast, `prediction_id` = patient_id and
  laterality (kept here as `prediction_id`, "<patient_id>_<L|R>"), with the probabilistic F1
  score (`mammo-keras score`, `evaluation.scoring.pf1`).

Labels: `cancer` 1 -> pathology malignant; cancer 0 with biopsy 1 -> benign (biopsied, not
cancer); cancer 0 without biopsy -> normal (a screening negative). The data has no lesion type or
location, so cancer and benign rows are one lesion row per image with abnormality "other" and
unknown geometry: an image-level (breast-level) classification dataset. Views other than CC and
MLO keep `view` "" and their code in `view_raw`.

Reference: Carr et al. 2022, "RSNA Screening Mammography Breast Cancer Detection", Kaggle,
https://www.kaggle.com/competitions/rsna-breast-cancer-detection (data and evaluation pages);
the metric: Simon 2020, "Probabilistic extension of precision, recall, and F1 score for more
thorough evaluation of classification models", Eval4NLP workshop.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from mammo_keras.data.records import make_table
from mammo_keras.data.tabular import MISSING_POLICIES, check_missing, find_file, path_name, read_csv_rows
from mammo_keras.errors import DataError, DatasetNotFoundError

LABEL_CSV = "train.csv"
IMAGE_FOLDER = "train_images"
COLUMNS = ("site_id", "patient_id", "image_id", "laterality", "view", "age", "cancer", "biopsy", "invasive",
           "BIRADS", "implant", "density", "machine_id", "difficult_negative_case")
VIEWS = {"CC": "CC", "MLO": "MLO"}
OTHER_VIEWS = ("ML", "LM", "AT", "LMO", "XCCL", "XCCM")

NAME = "rsna_screening"  # the dataset registry entry (mammo_keras.data); CLI name and $MAMMO_DATA folders below
FOLDERS = ('rsna-screening', 'rsna_screening', 'rsna-breast-cancer-detection')  # sub-folders of a data root (--data DIR / $MAMMO_DATA) tried in order
ALIASES = ('rsna-screening', 'rsna', 'rsna-breast-cancer-detection')
LICENCE = (  # the terms the data come with (model cards, README)
    "the competition's data rules, accepted on Kaggle before download "
    '(https://www.kaggle.com/competitions/rsna-breast-cancer-detection/rules); cite Carr et al. 2022')
LAYOUT = f"""\
  <root>/{LABEL_CSV}                         one row per image (labels as on the competition's data page)
  <root>/{IMAGE_FOLDER}/<patient_id>/<image_id>.dcm   many JPEG 2000: pip install pylibjpeg pylibjpeg-openjpeg"""
HOW_TO_GET = """\
  The RSNA Screening Mammography Breast Cancer Detection data is on Kaggle
  (https://www.kaggle.com/competitions/rsna-breast-cancer-detection/data; accept the competition's
  rules first; cite Carr et al. 2022):
    1. kaggle competitions download -c rsna-breast-cancer-detection
    2. unzip it into DIR (train.csv and train_images/ side by side) and pass --root DIR
       (or set MAMMO_DATA so that $MAMMO_DATA/rsna-screening is DIR);
    3. pip install pylibjpeg pylibjpeg-openjpeg   (or pip install mammo_keras[jpeg2000]) to decode
       the JPEG 2000 files."""


def read(root: str | Path, *, missing: str = "error") -> pd.DataFrame:
    """Read the RSNA 2023 training data into the record table: one row per image.

    Args:
        root: the folder holding train.csv and train_images/ (or a folder above it).
        missing: a listed image whose DICOM is absent: "error", "skip" or "keep".

    Returns:
        The record table (no geometry) plus columns prediction_id, site_id, machine_id, age,
        cancer, biopsy, invasive, birads, implant, density, difficult_negative_case, view_raw,
        image_found.

    Raises:
        DatasetNotFoundError: no train.csv under the root.
        DataError: a bad value (naming train.csv and the line) or, with missing="error", a
            listed image without its DICOM.
    """
    check_missing(missing)
    labels = label_file(Path(root))
    folder = labels.parent / IMAGE_FOLDER
    rows, seen = [], {}
    for line, fields in read_csv_rows(labels, COLUMNS):
        row = _row(labels, line, fields, folder)
        if row["image_id"] in seen:
            raise DataError(labels, f"image_id {row['image_id']!r} is listed twice (first on line "
                                    f"{seen[row['image_id']]})", line=line)
        seen[row["image_id"]] = line
        if not row["image_found"] and missing == "error":
            raise DataError(labels, f"image {row['image_id']!r} has no DICOM: {row['path']} not found", line=line)
        if not row["image_found"] and missing == "skip":
            continue
        rows.append(row)
    table = make_table(rows, origin=str(labels))
    if rows:
        table = table.astype({"cancer": int, "biopsy": int, "image_found": bool})
    return table


def label_file(root: Path) -> Path:
    """train.csv in `root` or below it (not inside the image folders)."""
    if (root / LABEL_CSV).is_file():
        return root / LABEL_CSV
    found = find_file(root, [LABEL_CSV], prune=[IMAGE_FOLDER, "test_images"]) if root.is_dir() else []
    if not found:
        raise DatasetNotFoundError(f"rsna_screening: {LABEL_CSV} not found under {root}.\n"
                                   f"Expected layout:\n{LAYOUT}\nHow to get it:\n{HOW_TO_GET}")
    if len(found) > 1:
        raise DataError(found[1], f"two copies of {LABEL_CSV} under {root}; pass the folder of one as "
                                  f"--root. Received: {[str(p) for p in found]}")
    return found[0]


def _row(path: Path, line: int, fields: dict[str, str], folder: Path) -> dict:
    for column in ("patient_id", "image_id"):  # the image is train_images/<patient_id>/<image_id>.dcm
        if not fields[column]:
            raise DataError(path, f"every row needs a {column}", line=line)
        path_name(path, line, column, fields[column])
    laterality = fields["laterality"].upper()
    if laterality not in ("L", "R"):
        raise DataError(path, f"laterality must be L or R. Received: {fields['laterality']!r}", line=line)
    view_raw = fields["view"].upper()
    if view_raw not in VIEWS and view_raw not in OTHER_VIEWS:
        raise DataError(path, f"view must be one of {list(VIEWS) + list(OTHER_VIEWS)}. "
                              f"Received: {fields['view']!r}", line=line)
    cancer, biopsy, invasive, implant = (_flag(fields, column, path, line)
                                         for column in ("cancer", "biopsy", "invasive", "implant"))
    birads = fields["BIRADS"].removesuffix(".0")
    if birads not in ("", "0", "1", "2"):
        raise DataError(path, f"BIRADS must be 0, 1, 2 or empty. Received: {fields['BIRADS']!r}", line=line)
    density = fields["density"].upper()
    if density not in ("", "A", "B", "C", "D"):
        raise DataError(path, f"density must be A, B, C, D or empty. Received: {fields['density']!r}", line=line)
    difficult = fields["difficult_negative_case"].lower()
    if difficult not in ("true", "false", "1", "0", ""):
        raise DataError(path, "difficult_negative_case must be True or False. "
                              f"Received: {fields['difficult_negative_case']!r}", line=line)
    image_path = folder / fields["patient_id"] / f"{fields['image_id']}.dcm"
    image_id = fields["image_id"]
    row = {"image_id": image_id, "patient_id": fields["patient_id"], "path": str(image_path.absolute()),
           "source": "rsna_screening", "laterality": laterality, "view": VIEWS.get(view_raw, ""),
           "prediction_id": f"{fields['patient_id']}_{laterality}", "site_id": fields["site_id"],
           "machine_id": fields["machine_id"], "age": _age(fields, path, line), "cancer": cancer,
           "biopsy": biopsy, "invasive": invasive, "birads": birads, "implant": implant, "density": density,
           "difficult_negative_case": difficult in ("true", "1"), "view_raw": view_raw,
           "image_found": image_path.is_file()}
    if cancer:
        row.update(lesion_id=f"{image_id}_cancer", abnormality="other", pathology="malignant")
    elif biopsy:
        row.update(lesion_id=f"{image_id}_biopsied", abnormality="other", pathology="benign")
    else:
        row.update(abnormality="normal", pathology="normal")
    return row


def _flag(fields: dict[str, str], column: str, path: Path, line: int) -> int:
    value = fields[column].removesuffix(".0")
    if value not in ("0", "1"):
        raise DataError(path, f"{column} must be 0 or 1. Received: {fields[column]!r}", line=line)
    return int(value)


def _age(fields: dict[str, str], path: Path, line: int) -> float:
    value = fields["age"]
    if not value:
        return math.nan
    try:
        return float(value)
    except ValueError:
        raise DataError(path, f"age must be a number or empty. Received: {value!r}", line=line) from None


__all__ = ["HOW_TO_GET", "LAYOUT", "MISSING_POLICIES", "label_file", "read"]
