"""BCDR reader: film (F01, F02, F03) and digital (D01, D02) distributions, plus normal ones (DN01).

Facts of the distributions this parser relies on:
- each folder holds `bcdr_<dist>_outlines.csv` (one row per lesion outline on one
  image) and `bcdr_<dist>_img.csv` (every image of the distribution); the normal
  distributions have only the image list.
- outlines columns: patient_id, study_id, series, lesion_id, segmentation_id,
  image_view, image_filename, lw_x_points, lw_y_points, [mammography_type,]
  mammography_nodule, mammography_calcification, mammography_microcalcification,
  mammography_axillary_adenopathy, mammography_architectural_distortion,
  mammography_stroma_distortion, age, density, classification. Values are often
  padded with a leading space (" Malign", " patient_3/study_3/img_3_3_1_LCC.tif",
  " 1220 1232 ..."); point lists are space separated integer pixel coordinates.
- image_view: 1 RCC, 2 LCC, 3 RO (right MLO), 4 LO (left MLO). In the image list,
  image_type_id is 0-based (0 RCC, 1 LCC, 2 RO, 3 LO); other codes are not CC/MLO.
- image_filename is relative to the folder of the CSV; images are TIFF.

Abnormality per outline: nodule -> mass; else calcification or microcalcification
-> calcification; else architectural or stroma distortion -> distortion; an outline
with none of these (e.g. axillary adenopathy only) -> other, so it stays out of
the mass and calcification sets; the raw flags are kept in `findings`.
Pathology: classification "Benign" -> benign, "Malign" -> malignant (biopsy-proven).

Reference: Lopez et al. 2012, "BCDR: a breast cancer digital repository",
15th Int. Conf. Experimental Mechanics; Chougrad et al. 2018 (BCDR-F03 subset).
"""
from __future__ import annotations

import csv
import posixpath
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mammo_keras.data.records import contour_geometry, make_table
from mammo_keras.errors import DataError, DatasetNotFoundError

UNANNOTATED_POLICIES = ("skip", "normal")
OUTLINE_COLUMNS = (
    "patient_id", "study_id", "series", "lesion_id", "segmentation_id", "image_view",
    "image_filename", "lw_x_points", "lw_y_points", "mammography_nodule",
    "mammography_calcification", "mammography_microcalcification",
    "mammography_architectural_distortion", "mammography_stroma_distortion", "classification",
)
IMAGE_LIST_COLUMNS = ("patient_id", "study_id", "image_filename")
FINDINGS = ("nodule", "calcification", "microcalcification", "axillary_adenopathy",
            "architectural_distortion", "stroma_distortion")
VIEW_CODES = {1: ("R", "CC"), 2: ("L", "CC"), 3: ("R", "MLO"), 4: ("L", "MLO")}
VIEW_NAMES = {"RCC": ("R", "CC"), "LCC": ("L", "CC"), "RO": ("R", "MLO"), "LO": ("L", "MLO"),
              "RMLO": ("R", "MLO"), "LMLO": ("L", "MLO")}
CLASSIFICATION = {"benign": "benign", "malign": "malignant", "malignant": "malignant"}
UNKNOWN_FINDING_ABNORMALITY = "other"
_CSV_NAME = re.compile(r"^bcdr_([a-z]+\d+)_(outlines|img)\.csv$", re.IGNORECASE)

NAME = "bcdr"  # the dataset registry entry (mammo_keras.data); CLI name and $MAMMO_DATA folders below
FOLDERS = ('bcdr', 'BCDR')  # sub-folders of a data root (--data DIR / $MAMMO_DATA) tried in order
ALIASES = ()
LICENCE = (  # the terms the data come with (model cards, README)
    'free for research after registration, under the terms of https://bcdr.eu; cite the BCDR papers '
    'the site names')
LAYOUT = """\
  <root>/                         one folder per distribution, any names, e.g.
    BCDR-F03/bcdr_f03_outlines.csv   lesion outlines (lw_x_points, lw_y_points, classification)
    BCDR-F03/bcdr_f03_img.csv        image list (optional; needed for normal images)
    BCDR-F03/patient_<p>/study_<s>/img_<p>_<s>_<n>_<VIEW>.tif   (paths as in image_filename)
    BCDR-D01_dataset/bcdr_d01_outlines.csv ...
    BCDR-DN01_dataset/bcdr_dn01_img.csv   (normal distribution: image list only)"""
HOW_TO_GET = """\
  BCDR (Breast Cancer Digital Repository, Centro Hospitalar Sao Joao / INEGI, Porto) is free
  for research after registration at https://bcdr.eu (Register, then Download: choose the
  distributions, e.g. BCDR-F03 used by Chougrad et al.). Unpack each distribution folder
  under one folder and pass it as --root (or put it under $MAMMO_DATA/bcdr)."""


def read(root: str | Path, *, distributions: Sequence[str] | None = None,
         unannotated: str = "skip", missing: str = "error") -> pd.DataFrame:
    """Read BCDR distributions into the record table: one row per lesion outline.

    Args:
        root: folder holding the distribution folders (or one distribution folder).
        distributions: names to read such as ("F03",); default every one found.
        unannotated: images of a lesion distribution's image list without an outline are
            dropped ("skip") or added as normal ("normal") when no outline exists on the
            same breast in the same study (the other view of an outlined breast is never
            called normal). Images of normal distributions (no outlines CSV) are always normal.
        missing: a row whose TIFF is absent raises ("error") or is dropped ("skip").

    Returns:
        The record table with extra columns distribution, study_id, bcdr_lesion_id,
        segmentation_id, findings, age, density.

    Raises:
        DatasetNotFoundError: no BCDR CSV under root, or a requested distribution is absent.
        DataError: a missing column, malformed value or point list, naming CSV and line.
    """
    if unannotated not in UNANNOTATED_POLICIES:
        raise ValueError(f"unannotated must be one of {list(UNANNOTATED_POLICIES)}. "
                         f"Received: unannotated={unannotated!r}")
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be one of ['error', 'skip']. Received: missing={missing!r}")
    found = find_distributions(Path(root))
    wanted = _select(found, distributions, Path(root))
    rows: list[dict] = []
    for name in wanted:
        files = found[name]
        lesion_rows = []
        if "outlines" in files:
            lesion_rows = read_outlines(files["outlines"], name, missing=missing)
        rows += lesion_rows
        if "img" in files and ("outlines" not in files or unannotated == "normal"):
            rows += _normal_rows(files["img"], name, lesion_rows, missing=missing)
    return make_table(rows, origin=str(root))


def find_distributions(root: Path) -> dict[str, dict[str, Path]]:
    """Distribution name ("F03") -> {"outlines": csv, "img": csv} found up to two folders deep."""
    if not root.is_dir():
        raise DatasetNotFoundError(f"bcdr: folder not found: {root}.\nExpected layout:\n{LAYOUT}")
    found: dict[str, dict[str, Path]] = {}
    for pattern in ("*.csv", "*/*.csv", "*/*/*.csv"):
        for path in sorted(root.glob(pattern)):
            match = _CSV_NAME.match(path.name)
            if match:
                found.setdefault(match.group(1).upper(), {}).setdefault(match.group(2).lower(), path)
    if not found:
        raise DatasetNotFoundError(f"bcdr: no bcdr_<dist>_outlines.csv or bcdr_<dist>_img.csv under "
                                   f"{root}.\nExpected layout:\n{LAYOUT}\nHow to get it:\n{HOW_TO_GET}")
    return found


def read_outlines(path: Path, distribution: str, *, missing: str = "error") -> list[dict]:
    """Record rows of one outlines CSV.

    Raises:
        DataError: a required column is missing or a value is malformed, naming CSV and line.
    """
    rows = []
    for line, record in _read_csv(path, OUTLINE_COLUMNS):
        image_path = _image_path(path, record["image_filename"], line, missing)
        if image_path is None:
            continue
        laterality, view = _view_code(path, record["image_view"], line)
        flags = {name: _flag(path, record, f"mammography_{name}", line) for name in FINDINGS}
        classification = record["classification"].strip().lower()
        if classification not in CLASSIFICATION:
            raise DataError(path, f"classification must be Benign or Malign. "
                                  f"Received: {record['classification']!r}", line=line)
        image_id = _image_id(distribution, record["image_filename"])
        lesion = record["lesion_id"].strip()
        segmentation = record["segmentation_id"].strip()
        row = {"image_id": image_id, "patient_id": f"bcdr_{record['patient_id'].strip()}",
               "lesion_id": f"{image_id}#lesion{lesion}_seg{segmentation}",
               "path": str(image_path), "source": "bcdr", "laterality": laterality, "view": view,
               "abnormality": _abnormality(flags), "pathology": CLASSIFICATION[classification],
               "distribution": distribution, "study_id": record["study_id"].strip(),
               "bcdr_lesion_id": lesion, "segmentation_id": segmentation,
               "findings": ",".join(name for name in FINDINGS if flags[name]),
               "age": record.get("age", "").strip(), "density": record.get("density", "").strip()}
        row.update(contour_geometry(_points(path, record, line)))
        rows.append(row)
    return rows


def _normal_rows(path: Path, distribution: str, lesion_rows: list[dict], *,
                 missing: str) -> list[dict]:
    """Normal rows from an image list; in lesion distributions only clean breasts qualify."""
    outlined = {row["image_id"] for row in lesion_rows}
    outlined_breasts = {(row["patient_id"], row["study_id"], row["laterality"]) for row in lesion_rows}
    is_lesion_distribution = bool(lesion_rows)
    rows = []
    for line, record in _read_csv(path, IMAGE_LIST_COLUMNS):
        image_id = _image_id(distribution, record["image_filename"])
        patient_id = f"bcdr_{record['patient_id'].strip()}"
        laterality, view = _image_list_view(record)
        study = record["study_id"].strip()
        if image_id in outlined:
            continue
        if is_lesion_distribution and (not laterality or
                                       (patient_id, study, laterality) in outlined_breasts):
            continue
        image_path = _image_path(path, record["image_filename"], line, missing)
        if image_path is None:
            continue
        rows.append({"image_id": image_id, "patient_id": patient_id, "path": str(image_path),
                     "source": "bcdr", "laterality": laterality, "view": view,
                     "abnormality": "normal", "pathology": "normal", "distribution": distribution,
                     "study_id": study, "age": record.get("age", "").strip(),
                     "density": record.get("density", "").strip()})
    return rows


def _read_csv(path: Path, required: Sequence[str]):
    """(line number, row dict) pairs with stripped header names; checks required columns."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle, skipinitialspace=True)
        header = [name.strip().lower() for name in next(reader, [])]
        absent = [name for name in required if name not in header]
        if absent:
            raise DataError(path, f"BCDR CSV lacks column(s) {absent}. Required: {list(required)}. "
                                  f"Received header: {header}", line=1)
        for fields in reader:
            if not any(field.strip() for field in fields):
                continue
            fields = fields + [""] * (len(header) - len(fields))
            yield reader.line_num, dict(zip(header, fields))


def _points(path: Path, record: dict, line: int) -> list[tuple[float, float]]:
    try:
        xs = [float(value) for value in record["lw_x_points"].split()]
        ys = [float(value) for value in record["lw_y_points"].split()]
    except ValueError:
        raise DataError(path, "lw_x_points and lw_y_points are space separated integers. "
                              f"Received: {record['lw_x_points']!r}, {record['lw_y_points']!r}",
                        line=line) from None
    if not xs or len(xs) != len(ys):
        raise DataError(path, "lw_x_points and lw_y_points need the same non-zero number of points. "
                              f"Received: {len(xs)} x and {len(ys)} y values", line=line)
    return list(zip(xs, ys))


def _flag(path: Path, record: dict, column: str, line: int) -> bool:
    value = record.get(column, "").strip()
    if value in ("", "0"):
        return False
    if value == "1":
        return True
    raise DataError(path, f"{column} must be 0 or 1. Received: {value!r}", line=line)


def _abnormality(flags: dict[str, bool]) -> str:
    if flags["nodule"]:
        return "mass"
    if flags["calcification"] or flags["microcalcification"]:
        return "calcification"
    if flags["architectural_distortion"] or flags["stroma_distortion"]:
        return "distortion"
    return UNKNOWN_FINDING_ABNORMALITY


def _view_code(path: Path, value: str, line: int) -> tuple[str, str]:
    """(laterality, view) of an outline's image_view; another code would leave the lesion without a
    breast side, so it is refused."""
    code = _whole_number(value)
    if code not in VIEW_CODES:
        raise DataError(path, f"image_view must be a code 1-4 (RCC, LCC, RO, LO). "
                              f"Received: {value.strip()!r}", line=line)
    return VIEW_CODES[code]


def _image_list_view(record: dict) -> tuple[str, str]:
    """(laterality, view) of an image list row; ("", "") for the codes that are not CC/MLO."""
    name = record.get("image_type_name", "").strip().upper()
    if name in VIEW_NAMES:
        return VIEW_NAMES[name]
    code = _whole_number(record.get("image_type_id", ""))
    return VIEW_CODES.get(code + 1, ("", "")) if code is not None else ("", "")


def _whole_number(value: str) -> int | None:
    """`value` as an int ("2", " 2.0"); None for text, fractions, inf and nan."""
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _image_id(distribution: str, filename: str) -> str:
    return f"bcdr_{distribution.lower()}/{filename.strip().lstrip('/')}"


def _image_path(csv_path: Path, filename: str, line: int, missing: str) -> Path | None:
    """The image a row names, looked for only inside the CSV's folder (the name comes from a file
    anyone may have edited, and becomes the image_id and the item file name)."""
    relative = filename.strip().lstrip("/")
    if not relative:
        raise DataError(csv_path, "image_filename is empty", line=line)
    normal = posixpath.normpath(relative.replace("\\", "/"))
    if normal == ".." or normal.startswith("../"):
        raise DataError(csv_path, f"image_filename must name a file inside the CSV's folder "
                                  f"{csv_path.parent}. Received: {filename.strip()!r}", line=line)
    folder = csv_path.parent
    if (folder / relative).is_file():
        return (folder / relative).resolve()
    for sub in sorted(folder.iterdir()):  # some downloads nest the images one folder deeper
        if (sub / relative).is_file():
            return (sub / relative).resolve()
    if missing == "skip":
        return None
    raise DataError(csv_path, f"image {relative!r} not found under {folder}", line=line)


def _select(found: dict[str, dict[str, Path]], distributions: Sequence[str] | None,
            root: Path) -> list[str]:
    if distributions is None:
        return sorted(found)
    wanted = [name.upper().replace("BCDR-", "").replace("BCDR_", "") for name in distributions]
    absent = [name for name in wanted if name not in found]
    if absent:
        raise DatasetNotFoundError(f"bcdr: distribution(s) {absent} not found under {root}. "
                                   f"Found: {sorted(found)}.\nExpected layout:\n{LAYOUT}")
    return wanted
