"""VinDr-Mammo reader: the two annotation CSVs of the PhysioNet release plus its DICOMs.

Facts of the release (version 1.0.0) this reader relies on:
- 5,000 four-view screening exams (20,000 images) from Vietnam, each double read with
  arbitration; labels are BI-RADS assessments and breast density (ACR A-D), per breast, and
  bounding boxes with a category and a BI-RADS assessment for the non-benign findings.
- `breast-level_annotations.csv`: one row per image: study_id, series_id, image_id,
  laterality (L/R), view_position (CC/MLO), height, width, breast_birads ("BI-RADS 1" ...
  "BI-RADS 5"), breast_density ("DENSITY A" ... "DENSITY D"), split ("training" / "test").
- `finding_annotations.csv`: the same columns plus finding_categories (a Python-list text
  such as "['Mass']", "['Mass', 'Suspicious Calcification']" or "['No Finding']"),
  finding_birads ("BI-RADS 3"; empty for No Finding) and xmin, ymin, xmax, ymax (box in image
  pixels, x the column; empty for No Finding); an image with several findings has several rows.
- `images/<study_id>/<image_id>.dicom`.
- The release has no patient identifier beyond the exam: `patient_id` is the study_id. Its own
  split (4,000 training and 1,000 test exams) is kept as the `split` column ("train" / "test",
  as CBIS-DDSM's), the official split a config can use.

Labels. VinDr-Mammo has no biopsy pathology: every label is a radiologist's BI-RADS category
(kept in `birads`, the breast's, and `finding_birads`). The `pathology` column is derived from
it as the INbreast reader does, and as BI-RADS defines the categories: 1 (negative) -> normal;
2 (benign) and 3 (probably benign) -> benign; 4 (suspicious) and 5 (highly suggestive of
malignancy) -> "malignant", which here means *suspicious* (BI-RADS 4-5), not proven cancer.
`labeling="shen"` excludes BI-RADS 3 images (1-2 negative, 4-5 positive, as Shen et al. treat
INbreast). A finding takes its own BI-RADS; an image whose breast BI-RADS is above 1 but has no
box keeps one "unlocalised" row (abnormality "other", no geometry) so its label is not lost.

Finding categories map to abnormalities: Mass -> mass; Suspicious Calcification ->
calcification; Architectural Distortion -> distortion; Asymmetry, Focal Asymmetry, Global
Asymmetry -> asymmetry; the others (Skin Thickening, Skin Retraction, Nipple Retraction,
Suspicious Lymph Node) -> other. A box with several categories is one lesion row whose
abnormality is the first of them in that order (mass first, so mass detection sees every box
that shows a mass); all of its categories are kept in `finding_categories` ("Mass;Suspicious
Calcification"). Boxes become the lesion geometry (`records.box_geometry`), which the detection
task reads.

Reference: Nguyen et al. 2023, "VinDr-Mammo: A large-scale benchmark dataset for computer-aided
diagnosis in full-field digital mammography", Scientific Data 10:277
(https://doi.org/10.1038/s41597-023-02100-7); PhysioNet, https://doi.org/10.13026/br2v-7517.
Shen et al. 2019 (shen2017_end2end), Sec. 3.2.1 for the BI-RADS 3 exclusion.
"""
from __future__ import annotations

import ast
import math
from pathlib import Path

import pandas as pd

from mammo_keras.data.inbreast import birads_pathology
from mammo_keras.data.records import box_geometry, make_table
from mammo_keras.data.tabular import MISSING_POLICIES, check_missing, find_file, path_name, read_csv_rows
from mammo_keras.errors import DataError, DatasetNotFoundError

BREAST_CSV = "breast-level_annotations.csv"
FINDING_CSV = "finding_annotations.csv"
IMAGE_FOLDER = "images"
IMAGE_SUFFIX = ".dicom"
LABELINGS = ("birads", "shen")
BREAST_COLUMNS = ("study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
                  "breast_birads", "breast_density", "split")
FINDING_COLUMNS = BREAST_COLUMNS + ("finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax")
SPLITS = {"training": "train", "train": "train", "test": "test"}
VIEWS = ("CC", "MLO")
CATEGORY_ABNORMALITY = {
    "mass": "mass", "suspicious calcification": "calcification",
    "architectural distortion": "distortion", "asymmetry": "asymmetry",
    "focal asymmetry": "asymmetry", "global asymmetry": "asymmetry",
}
ABNORMALITY_ORDER = ("mass", "calcification", "distortion", "asymmetry", "other")
NO_FINDING = "no finding"

NAME = "vindr_mammo"  # the dataset registry entry (mammo_keras.data); CLI name and $MAMMO_DATA folders below
FOLDERS = ('vindr-mammo', 'vindr_mammo')  # sub-folders of a data root (--data DIR / $MAMMO_DATA) tried in order
ALIASES = ('vindr-mammo', 'vindr')
LICENCE = (  # the terms the data come with (model cards, README)
    "PhysioNet credentialed access under the project's data use agreement "
    '(https://physionet.org/content/vindr-mammo/1.0.0/); cite Nguyen et al. 2023 and PhysioNet')
LAYOUT = f"""\
  <root>/{BREAST_CSV}    one row per image (BI-RADS, density, official split)
  <root>/{FINDING_CSV}         one row per finding box (or 'No Finding')
  <root>/{IMAGE_FOLDER}/<study_id>/<image_id>{IMAGE_SUFFIX}
  (<root> may also be a folder above them, e.g. the physionet.org/ folder wget writes)"""
HOW_TO_GET = """\
  VinDr-Mammo is on PhysioNet with credentialed access (https://physionet.org/content/vindr-mammo/1.0.0/,
  https://doi.org/10.13026/br2v-7517; cite Nguyen et al. 2023 and PhysioNet):
    1. become a PhysioNet credentialed user and sign the project's data use agreement;
    2. wget -r -N -c -np --user USER --ask-password https://physionet.org/files/vindr-mammo/1.0.0/
       (the two CSVs, metadata.csv and images/<study_id>/<image_id>.dicom);
    3. pass the 1.0.0 folder (or any folder above it) as --root
       (or set MAMMO_DATA so that $MAMMO_DATA/vindr-mammo is that folder)."""


def read(root: str | Path, *, labeling: str = "birads", missing: str = "error") -> pd.DataFrame:
    """Read VinDr-Mammo into the record table: one row per finding box, one normal row per negative image.

    Args:
        root: the release folder (with the two CSVs and images/), or a folder above it.
        labeling: "birads" (1 normal, 2-3 benign, 4-5 malignant = suspicious) or "shen"
            (BI-RADS 3 images excluded).
        missing: a listed image whose DICOM is absent: "error", "skip" or "keep".

    Returns:
        The record table plus columns study_id, series_id, split, birads, finding_birads,
        finding_categories, density, height, width, image_found.

    Raises:
        DatasetNotFoundError: the annotation CSVs are not under the root.
        DataError: a bad value, a finding of an image the breast-level file does not list, a
            box outside the image or a missing DICOM (with missing="error"), naming file and line.
    """
    if labeling not in LABELINGS:
        raise ValueError(f"labeling must be one of {list(LABELINGS)}. Received: labeling={labeling!r}")
    check_missing(missing)
    release = release_folder(Path(root))
    breast_csv, finding_csv = release / BREAST_CSV, release / FINDING_CSV
    images = {}
    for line, fields in read_csv_rows(breast_csv, BREAST_COLUMNS):
        image = _image(breast_csv, line, fields)
        if image["image_id"] in images:
            raise DataError(breast_csv, f"image_id {image['image_id']!r} is listed twice "
                                        f"(first on line {images[image['image_id']]['line']})", line=line)
        images[image["image_id"]] = image
    findings: dict[str, list[dict]] = {}
    if finding_csv.is_file():
        for line, fields in read_csv_rows(finding_csv, FINDING_COLUMNS):
            finding = _finding(finding_csv, line, fields, images)
            if finding is not None:
                findings.setdefault(fields["image_id"], []).append(finding)
    rows = []
    for image_id, image in images.items():
        path = release / IMAGE_FOLDER / image["study_id"] / f"{image_id}{IMAGE_SUFFIX}"
        found = path.is_file()
        if not found and missing == "error":
            raise DataError(breast_csv, f"image {image_id!r} has no DICOM: {path} not found", line=image["line"])
        if not found and missing == "skip":
            continue
        breast_pathology = birads_pathology(image["birads"], labeling)
        if breast_pathology is None:
            continue
        base = {"image_id": image_id, "patient_id": image["study_id"], "path": str(path.absolute()),
                "source": "vindr_mammo", "laterality": image["laterality"], "view": image["view"],
                "study_id": image["study_id"], "series_id": image["series_id"], "split": image["split"],
                "birads": image["birads"], "density": image["density"], "height": image["height"],
                "width": image["width"], "image_found": found}
        boxes = findings.get(image_id, [])
        if not boxes:
            if breast_pathology == "normal":
                rows.append({**base, "abnormality": "normal", "pathology": "normal",
                             "finding_birads": "", "finding_categories": ""})
            else:
                rows.append({**base, "lesion_id": f"{image_id}_unlocalised", "abnormality": "other",
                             "pathology": breast_pathology, "finding_birads": "", "finding_categories": ""})
            continue
        for number, finding in enumerate(boxes):
            rows.append({**base, **finding["geometry"], "lesion_id": f"{image_id}_f{number}",
                         "abnormality": finding["abnormality"],
                         "pathology": birads_pathology(finding["birads"] or image["birads"]) or breast_pathology,
                         "finding_birads": finding["birads"], "finding_categories": finding["categories"]})
    return make_table(rows, origin=str(breast_csv))


def release_folder(root: Path) -> Path:
    """The folder holding breast-level_annotations.csv: `root` or one below it."""
    if (root / BREAST_CSV).is_file():
        return root
    found = find_file(root, [BREAST_CSV], prune=[IMAGE_FOLDER]) if root.is_dir() else []
    if len(found) > 1:
        raise DataError(found[1], f"two copies of {BREAST_CSV} under {root}; pass the one release "
                                  f"folder as --root. Received: {[str(p) for p in found]}")
    if not found:
        raise DatasetNotFoundError(f"vindr_mammo: {BREAST_CSV} not found under {root}.\n"
                                   f"Expected layout:\n{LAYOUT}\nHow to get it:\n{HOW_TO_GET}")
    return found[0].parent


def parse_birads(text: str, path: Path, line: int, column: str) -> str:
    """'BI-RADS 4' (or '4') -> '4'; '' stays ''."""
    value = text.strip()
    if not value:
        return ""
    number = value.upper().replace("BI-RADS", "").replace("BIRADS", "").strip()
    if number not in ("0", "1", "2", "3", "4", "5", "6"):
        raise DataError(path, f"column {column!r} must read 'BI-RADS 0' ... 'BI-RADS 6'. "
                              f"Received: {text!r}", line=line)
    return number


def parse_categories(text: str, path: Path, line: int) -> list[str]:
    """"['Mass', 'Suspicious Calcification']" -> ['Mass', 'Suspicious Calcification']."""
    value = text.strip()
    try:
        parsed = ast.literal_eval(value) if value.startswith("[") else [value]
    except (ValueError, SyntaxError):
        parsed = None
    if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
        raise DataError(path, "finding_categories reads like \"['Mass', 'Suspicious Calcification']\". "
                              f"Received: {text!r}", line=line)
    return [" ".join(item.split()) for item in parsed if item.strip()]


def category_abnormality(categories: list[str]) -> str:
    """The abnormality of a box: the first of ABNORMALITY_ORDER among its categories."""
    kinds = {CATEGORY_ABNORMALITY.get(category.lower(), "other") for category in categories}
    return next(kind for kind in ABNORMALITY_ORDER if kind in kinds)


def _image(path: Path, line: int, fields: dict[str, str]) -> dict:
    laterality = fields["laterality"].upper()
    if laterality not in ("L", "R"):
        raise DataError(path, f"laterality must be L or R. Received: {fields['laterality']!r}", line=line)
    view = fields["view_position"].upper()
    if view not in VIEWS:
        raise DataError(path, f"view_position must be one of {list(VIEWS)}. "
                              f"Received: {fields['view_position']!r}", line=line)
    split = SPLITS.get(fields["split"].lower())
    if split is None:
        raise DataError(path, f"split must be 'training' or 'test'. Received: {fields['split']!r}", line=line)
    birads = parse_birads(fields["breast_birads"], path, line, "breast_birads")
    if not birads:
        raise DataError(path, "every image needs a breast_birads value. Received: ''", line=line)
    density = fields["breast_density"].upper().replace("DENSITY", "").strip()
    if density not in ("A", "B", "C", "D", ""):
        raise DataError(path, f"breast_density must read 'DENSITY A' ... 'DENSITY D'. "
                              f"Received: {fields['breast_density']!r}", line=line)
    for column in ("study_id", "image_id"):  # the image is images/<study_id>/<image_id>.dicom
        if not fields[column]:
            raise DataError(path, f"every row needs a {column}", line=line)
        path_name(path, line, column, fields[column])
    return {"image_id": fields["image_id"], "study_id": fields["study_id"], "series_id": fields["series_id"],
            "laterality": laterality, "view": view, "split": split, "birads": birads, "density": density,
            "height": _number(fields, "height", path, line), "width": _number(fields, "width", path, line),
            "line": line}


def _finding(path: Path, line: int, fields: dict[str, str], images: dict[str, dict]) -> dict | None:
    image = images.get(fields["image_id"])
    if image is None:
        raise DataError(path, f"image_id {fields['image_id']!r} is not listed in {BREAST_CSV}", line=line)
    categories = parse_categories(fields["finding_categories"], path, line)
    if not categories or [c.lower() for c in categories] == [NO_FINDING]:
        return None
    box = [_number(fields, column, path, line) for column in ("xmin", "ymin", "xmax", "ymax")]
    geometry = {}
    if not any(math.isnan(value) for value in box):
        x0, y0, x1, y1 = box
        width, height = image["width"], image["height"]
        inside = (0 <= x0 < x1 <= (width if not math.isnan(width) else math.inf)
                  and 0 <= y0 < y1 <= (height if not math.isnan(height) else math.inf))
        if not inside:
            raise DataError(path, f"the box must have xmin < xmax, ymin < ymax and lie in the "
                                  f"{width:g}x{height:g} image. Received: xmin={x0:g}, ymin={y0:g}, "
                                  f"xmax={x1:g}, ymax={y1:g}", line=line)
        geometry = box_geometry(x0, y0, x1, y1)
    return {"geometry": geometry, "abnormality": category_abnormality(categories),
            "categories": ";".join(categories),
            "birads": parse_birads(fields["finding_birads"], path, line, "finding_birads")}


def _number(fields: dict[str, str], column: str, path: Path, line: int) -> float:
    value = fields[column]
    if value == "" or value.lower() == "nan":
        return math.nan
    try:
        return float(value)
    except ValueError:
        raise DataError(path, f"column {column!r} must be a number. Received: {value!r}", line=line) from None


__all__ = ["HOW_TO_GET", "LAYOUT", "MISSING_POLICIES", "category_abnormality", "parse_birads",
           "parse_categories", "read", "release_folder"]
