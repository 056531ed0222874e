"""CMMD reader (The Chinese Mammography Database, TCIA): the clinical spreadsheet plus the DICOMs.

Facts of the TCIA collection this reader relies on:
- `CMMD_clinicaldata_revision.xlsx`: one row per breast with a finding: ID1 (the patient,
  "D1-0001"), LeftRight (L/R), Age, number (how many images that breast has, usually 2: CC and
  MLO), abnormality ("calcification", "mass" or "both"), classification ("Benign" /
  "Malignant", confirmed by biopsy) and subtype (the molecular subtype, only for the malignant
  cases of the D2 subset; empty otherwise). A patient with findings in both breasts has two rows.
- The DICOMs come from the NBIA Data Retriever, one folder tree per patient
  (`CMMD/D1-0001/<study>/<series>/1-1.dcm`, or UID-named folders with the "Classic" directory
  type). Folder and file names carry neither the side nor the view, so both come from the header:
  laterality from ImageLaterality (0020,0062), else Laterality (0020,0060); the view from
  ViewPosition, else the ViewCodeSequence code (SNOMED-CT 399162004 cranio-caudal, 399368009
  medio-lateral oblique). The patient is the header's PatientID (= ID1).
- No lesion outlines: every lesion row has unknown geometry (NaN); the spreadsheet's
  abnormality becomes the row's abnormality ("both" gives a mass and a calcification row per
  image) and its classification the pathology (biopsy-proven, unlike VinDr-Mammo's BI-RADS).
- An image whose side has no spreadsheet row has no label; it is left out and listed in
  `attrs["problems"]`, as is a breast whose image count differs from `number`.

Reading .xlsx needs openpyxl (a requirement of the package); a CSV export of the sheet
(comma or semicolon separated, same columns) is read as well.

Reference: Cui et al. 2021, "The Chinese Mammography Database (CMMD): An online mammography
database with biopsy confirmed types for machine diagnosis of breast", The Cancer Imaging
Archive, https://doi.org/10.7937/tcia.eqde-4b16.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from mammo_keras.data.dicom import read_header
from mammo_keras.data.file_cache import FileCache
from mammo_keras.data.records import make_table
from mammo_keras.data.tabular import (MISSING_POLICIES, check_missing, column_positions, find_file,
                                      path_name, read_csv_rows)
from mammo_keras.errors import DataError, DatasetNotFoundError

CLINICAL_NAMES = ("CMMD_clinicaldata_revision.xlsx", "CMMD_clinicaldata_revision.csv",
                  "CMMD_clinicaldata.xlsx", "CMMD_clinicaldata.csv")
COLUMNS = ("ID1", "LeftRight", "Age", "number", "abnormality", "classification", "subtype")
ABNORMALITIES = {"mass": ("mass",), "calcification": ("calcification",), "both": ("mass", "calcification")}
PATHOLOGY = {"benign": "benign", "malignant": "malignant"}
VIEW_CODES = {"399162004": "CC", "399368009": "MLO"}
VIEW_WORDS = {"CC": "CC", "MLO": "MLO", "CRANIO-CAUDAL": "CC", "MEDIO-LATERAL OBLIQUE": "MLO"}

NAME = "cmmd"  # the dataset registry entry (mammo_keras.data); CLI name and $MAMMO_DATA folders below
FOLDERS = ('cmmd', 'CMMD')  # sub-folders of a data root (--data DIR / $MAMMO_DATA) tried in order
ALIASES = ()
LICENCE = (  # the terms the data come with (model cards, README)
    "the TCIA collection's licence (see https://doi.org/10.7937/tcia.eqde-4b16); cite Cui et al. 2021"
    ' and TCIA')
LAYOUT = """\
  <root>/CMMD_clinicaldata_revision.xlsx   (or a .csv export of it) anywhere under the root
  <root>/**/<patient>/.../1-1.dcm          the TCIA download, e.g. CMMD/D1-0001/<study>/<series>/1-1.dcm;
      side and view are read from the DICOM headers (ImageLaterality, ViewPosition / ViewCodeSequence),
      the patient from PatientID"""
HOW_TO_GET = """\
  CMMD is public on The Cancer Imaging Archive (collection "CMMD", https://doi.org/10.7937/tcia.eqde-4b16;
  cite Cui et al. 2021 and TCIA):
    1. download the collection's .tcia manifest and open it with the NBIA Data Retriever
       (https://wiki.cancerimagingarchive.net/display/NBIA/Downloading+TCIA+Images);
    2. download CMMD_clinicaldata_revision.xlsx from the same page;
    3. put both under one folder DIR and pass --root DIR (or set MAMMO_DATA so that $MAMMO_DATA/cmmd is DIR)."""


def read(root: str | Path, *, missing: str = "error", cache: str | Path | None = None) -> pd.DataFrame:
    """Read CMMD into the record table: one row per image and finding type of a listed breast.

    Args:
        root: folder holding the clinical spreadsheet and the DICOM tree.
        missing: a spreadsheet breast without any DICOM: "error", "skip", or "keep" (one row
            with image_found False and the patient's expected folder as path).
        cache: a JSON file keeping the header fields read from each DICOM (`file_cache.FileCache`,
            valid while a file keeps its size and mtime): a second reading of an unchanged tree
            reads no header. None: every header is read.

    Returns:
        The record table (no geometry) plus columns age, subtype, abnormality_raw, n_listed
        (the spreadsheet's `number`), sheet_line, image_found; `attrs["problems"]`.

    Raises:
        DatasetNotFoundError: no clinical spreadsheet under the root.
        DataError: a bad spreadsheet value, a DICOM without a readable side, or (with
            missing="error") a listed breast without images, naming the file (and line).
    """
    check_missing(missing)
    root = Path(root)
    sheet = find_clinical_sheet(root)
    files = FileCache(cache)
    images = index_dicoms(root, cache=files)
    files.save()
    by_breast: dict[tuple[str, str], list[dict]] = {}
    for image in images:
        by_breast.setdefault((image["patient_id"], image["laterality"]), []).append(image)
    rows, problems, listed = [], [], set()
    for line, fields in read_clinical_rows(sheet):
        patient, side = fields["ID1"], fields["LeftRight"]
        path_name(sheet, line, "ID1", patient)  # a kept breast's path is <root>/CMMD/<ID1>
        listed.add((patient, side))
        breast_images = by_breast.get((patient, side), [])
        kinds = ABNORMALITIES[fields["abnormality"]]
        base = {"patient_id": patient, "laterality": side, "source": "cmmd",
                "pathology": PATHOLOGY[fields["classification"]], "age": fields["Age"],
                "subtype": fields["subtype"], "abnormality_raw": fields["abnormality"],
                "n_listed": fields["number"], "sheet_line": line}
        if not breast_images:
            if missing == "error":
                raise DataError(sheet, f"breast {patient} {side} has no DICOM under {root} (no header with "
                                       f"PatientID={patient} and ImageLaterality={side})", line=line)
            if missing == "keep":
                image_id = f"{patient}_{side}"
                rows.extend({**base, "image_id": image_id, "lesion_id": f"{image_id}_l{line}_{kind}",
                             "path": str((root / "CMMD" / patient).absolute()), "abnormality": kind,
                             "image_found": False} for kind in kinds)
            continue
        if fields["number"] and fields["number"] != str(len(breast_images)):
            problems.append(f"{sheet}:{line}: breast {patient} {side} lists {fields['number']} images; "
                            f"{len(breast_images)} found")
        for image in breast_images:
            rows.extend({**base, "image_id": image["image_id"], "path": str(image["path"]),
                         "view": image["view"], "lesion_id": f"{image['image_id']}_l{line}_{kind}",
                         "abnormality": kind, "image_found": True} for kind in kinds)
    for (patient, side), unlisted in sorted(by_breast.items()):
        if (patient, side) not in listed:
            problems.extend(f"{image['path']}: {patient} {side} has no row in {sheet.name}; left out "
                            f"(no label)" for image in unlisted)
    table = make_table(rows, origin=str(sheet))
    if rows:
        table = table.astype({"image_found": bool, "sheet_line": int})
    table.attrs["problems"] = problems
    return table


def find_clinical_sheet(root: Path) -> Path:
    """The clinical spreadsheet under `root` (the .xlsx preferred to a CSV export)."""
    found = find_file(root, CLINICAL_NAMES) if root.is_dir() else []
    if not found:
        raise DatasetNotFoundError(f"cmmd: no clinical spreadsheet ({' or '.join(CLINICAL_NAMES[:2])}) "
                                   f"under {root}.\nExpected layout:\n{LAYOUT}\nHow to get it:\n{HOW_TO_GET}")
    rank = {name.lower(): i for i, name in enumerate(CLINICAL_NAMES)}
    return min(found, key=lambda path: (rank[path.name.lower()], len(path.parts)))


def read_clinical_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(spreadsheet line, checked fields) for each row of the clinical sheet (.xlsx or .csv).

    Raises:
        DataError: a missing column or a value outside the documented ones, naming file and line.
    """
    for line, fields in (_xlsx_rows(path) if path.suffix.lower() == ".xlsx" else read_csv_rows(path, COLUMNS)):
        if not fields["ID1"]:
            continue
        side = fields["LeftRight"].upper()
        if side not in ("L", "R"):
            raise DataError(path, f"LeftRight must be L or R. Received: {fields['LeftRight']!r}", line=line)
        abnormality = fields["abnormality"].lower()
        if abnormality not in ABNORMALITIES:
            raise DataError(path, f"abnormality must be one of {list(ABNORMALITIES)}. "
                                  f"Received: {fields['abnormality']!r}", line=line)
        classification = fields["classification"].lower()
        if classification not in PATHOLOGY:
            raise DataError(path, "classification must be Benign or Malignant. "
                                  f"Received: {fields['classification']!r}", line=line)
        yield line, {**fields, "LeftRight": side, "abnormality": abnormality, "classification": classification,
                     "Age": _integer_text(fields["Age"]), "number": _integer_text(fields["number"])}


def index_dicoms(root: Path, *, cache: FileCache | None = None) -> list[dict]:
    """Every .dcm under `root`: path, patient (PatientID), side and view from the header, image_id.

    image_id is `<patient>_<side>_<view>`, numbered `_2`, `_3` ... (in path order) when a breast
    has more than one image of a view. With a `cache`, a file's header fields are read once while
    it keeps its size and mtime.

    Raises:
        DataError: a DICOM whose header has no PatientID or no side, naming the file.
    """
    cache = cache or FileCache(None)
    images = []
    for folder, folders, files in os.walk(root):
        folders.sort()
        for name in sorted(files):
            if not name.lower().endswith(".dcm"):
                continue
            path = Path(folder) / name
            header = cache.get("header", path, lambda: _header_fields(path))
            patient = str(header.get("PatientID", "")).strip()
            if not patient:
                raise DataError(path, "DICOM header has no PatientID (CMMD's ID1, e.g. D1-0001)")
            images.append({"path": path.absolute(), "patient_id": patient,
                           "laterality": header_laterality(header, path), "view": header_view(header)})
    counts: dict[str, int] = {}
    for image in images:
        stem = f"{image['patient_id']}_{image['laterality']}_{image['view'] or 'view'}"
        counts[stem] = counts.get(stem, 0) + 1
        image["image_id"] = stem if counts[stem] == 1 else f"{stem}_{counts[stem]}"
    return images


def _header_fields(path: Path) -> dict:
    """The header fields `index_dicoms` uses, as JSON values (for the cache); the header is read once."""
    header = read_header(path)
    codes = [{"CodeValue": str(item.get("CodeValue", "")), "CodeMeaning": str(item.get("CodeMeaning", ""))}
             for item in header.get("ViewCodeSequence", []) or []]
    return {**{keyword: str(header.get(keyword, "") or "") for keyword in
               ("PatientID", "ImageLaterality", "Laterality", "ViewPosition")}, "ViewCodeSequence": codes}


def header_laterality(header, path: Path) -> str:
    """"L" or "R" from ImageLaterality, else Laterality; the folders of CMMD do not carry the side."""
    for keyword in ("ImageLaterality", "Laterality"):
        value = str(header.get(keyword, "") or "").strip().upper()
        if value in ("L", "R"):
            return value
    found = {k: str(header.get(k, "")) for k in ("ImageLaterality", "Laterality")}
    raise DataError(path, "the DICOM header must give the side as ImageLaterality (0020,0062) or "
                          f"Laterality (0020,0060), L or R. Received: {found}")


def header_view(header) -> str:
    """"CC", "MLO" or "" from ViewPosition, else the ViewCodeSequence code or meaning."""
    value = str(header.get("ViewPosition", "") or "").strip().upper()
    if value in VIEW_WORDS:
        return VIEW_WORDS[value]
    for item in header.get("ViewCodeSequence", []) or []:
        code = str(item.get("CodeValue", "")).strip()
        meaning = str(item.get("CodeMeaning", "")).strip().upper()
        if code in VIEW_CODES:
            return VIEW_CODES[code]
        if meaning in VIEW_WORDS:
            return VIEW_WORDS[meaning]
    return ""


def _xlsx_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        sheet = pd.read_excel(path, dtype=str, header=None).fillna("")
    except ImportError as error:
        raise DataError(path, f"reading .xlsx needs openpyxl: `pip install openpyxl` (in requirements.txt), "
                              f"or export the sheet as CSV beside it ({error})") from None
    except (ValueError, OSError, KeyError) as error:  # not a spreadsheet, or a damaged one
        raise DataError(path, f"cannot read the spreadsheet ({error})") from None
    if sheet.empty:
        raise DataError(path, "the spreadsheet is empty")
    positions = column_positions(path, sheet.iloc[0].tolist(), COLUMNS)
    for offset, values in enumerate(sheet.iloc[1:].itertuples(index=False), start=2):
        fields = {column: str(values[i]).strip() for column, i in positions.items()}
        if any(fields.values()):
            yield offset, fields


def _integer_text(value: str) -> str:
    """'2.0' (a spreadsheet number) -> '2'; other text stripped."""
    value = value.strip()
    if value.endswith(".0") and value[:-2].isdigit():
        return value[:-2]
    return value


__all__ = ["HOW_TO_GET", "LAYOUT", "MISSING_POLICIES", "find_clinical_sheet", "header_laterality",
           "header_view", "index_dicoms", "read", "read_clinical_rows"]
