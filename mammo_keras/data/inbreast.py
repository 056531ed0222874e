"""INbreast reader: DICOMs, OsiriX plist ROI files and the BI-RADS table.

Facts of the release this parser relies on (INbreast Release 1.0):
- `AllDICOMs/<fileid>_<patienthash>_MG_<L|R>_<CC|ML>_ANON.dcm`: the file id is the
  image, the hash is the woman (the CSV's "Patient ID" column is anonymised to
  "removed", so the hash is the only patient key); ML means MLO.
- `AllXML/<fileid>.xml` (only for images with annotations): an Apple plist,
  dict > Images (array) > dict > ROIs (array of dicts with Name, NumberOfPoints,
  Point_px = ["(x, y)", ...] in image pixels, x = column), Area, Center, ...).
  Single calcifications are often marked with one point; each ROI is one row.
- `INbreast.csv`: semicolon separated, `Patient ID;Patient age;Laterality;View;
  Acquisition date;File Name;ACR;Bi-Rads`, Bi-Rads in 1, 2, 3, 4a, 4b, 4c, 5, 6.

INbreast has no per-lesion biopsy result, so every row of an image carries the
label derived from the image's BI-RADS (kept in the `birads` column):
- `labeling="birads"` (default): 1 -> normal, 2-3 -> benign, 4-6 -> malignant.
- `labeling="shen"`: 1-2 negative (1 normal, 2 benign), 4-6 positive (malignant);
  BI-RADS 3 images are excluded, as in Shen et al.
BI-RADS 0 (incomplete assessment), if present, is excluded under both.

`subset="shen2017"` selects the images Shen et al. analysed (Sec. 3.2.1). The paper does not
list them by file name; it states the rule and the counts, and the rule is what is implemented:
"we assigned all images with BI-RADS 1 and 2 as negative; BI-RADS 4, 5 and 6 as positive; and
excluded 12 patients and 23 images with BI-RADS 3", of "115 patients and 410 mammograms",
leaving 387 images of 103 women (its split: "280 from 72 women and 107 from 31 women"). So the
subset is `labeling="shen"` (BI-RADS 3 images out, BI-RADS 0 out as under every labeling), a
woman left without images dropping out with them; the stated counts imply that the 12 women had
BI-RADS 3 images only, so reading "excluded 12 patients" as whole patients gives the same subset.
`attrs["subset"]` holds the rule, the paper's counts and this folder's, and a note when a full
release (410 images) does not give the paper's 387 images of 103 women.

ROI names map to abnormalities (case-insensitive): Mass, Spiculated/Espiculated
Region -> mass; Calcification(s), Cluster -> calcification; (Architectural)
Distortion -> distortion; Asymmetry (also misspelt Assymetry) -> asymmetry. Any other
name keeps its row with abnormality "other" (it then stays out of the mass and
calcification sets the papers use) and the raw name in `roi_name`. An image without
ROIs is one normal row when its BI-RADS is 1; otherwise one "unlocalised" lesion row
(abnormality "other", NaN geometry) so that its image label is not lost.

Reference: Moreira et al. 2012, "INbreast: toward a full-field digital mammographic
database", Academic Radiology 19(2); Shen et al. 2019 (shen2017_end2end), Sec. 3.2.1.
"""
from __future__ import annotations

import csv
import plistlib
import re
from pathlib import Path
from xml.parsers.expat import ExpatError

import pandas as pd

from mammo_keras.data.records import contour_geometry, make_table
from mammo_keras.errors import DataError, DatasetNotFoundError

RELEASE_FOLDER = "INbreast Release 1.0"
LABELINGS = ("birads", "shen")
SUBSETS = {
    "shen2017": {
        "rule": "BI-RADS 1-2 negative, 4-6 positive; BI-RADS 3 (and 0) images excluded, and a woman left "
                "without images with them (Shen et al. Sec. 3.2.1; the paper names no files)",
        "labeling": "shen",
        "paper": {"release_images": 410, "release_patients": 115, "images": 387, "patients": 103,
                  "excluded_images": 23, "excluded_patients": 12},
        "quote": "we assigned all images with BI-RADS 1 and 2 as negative; BI-RADS 4, 5 and 6 as positive; "
                 "and excluded 12 patients and 23 images with BI-RADS 3",
    },
}
MISSING_POLICIES = ("error", "skip")
BIRADS_VALUES = ("0", "1", "2", "3", "4", "4a", "4b", "4c", "5", "6")
ROI_ABNORMALITY = {
    "mass": "mass", "spiculated region": "mass", "espiculated region": "mass",
    "calcification": "calcification", "calcifications": "calcification",
    "cluster": "calcification", "distortion": "distortion",
    "architectural distortion": "distortion", "asymmetry": "asymmetry",
    "assymetry": "asymmetry", "asymetry": "asymmetry",
}
UNKNOWN_ROI_ABNORMALITY = "other"
VIEW_CODES = {"CC": "CC", "ML": "MLO", "MLO": "MLO"}
_DICOM_NAME = re.compile(r"^(\d+)_([^_]+)_MG_([LR])_(CC|MLO|ML)_ANON\.dcm$", re.IGNORECASE)
_POINT = re.compile(r"^\s*\(?\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\)?\s*$")

NAME = "inbreast"  # the dataset registry entry (mammo_keras.data); CLI name and $MAMMO_DATA folders below
FOLDERS = ('inbreast', 'INbreast')  # sub-folders of a data root (--data DIR / $MAMMO_DATA) tried in order
ALIASES = ()
LICENCE = (  # the terms the data come with (model cards, README)
    'given on request for research use under the terms the Breast Research Group (INESC TEC / '
    'University of Porto) sets when it grants access; cite Moreira et al. 2012')
LAYOUT = """\
  <root>/                     (or <root>/INbreast Release 1.0/)
    INbreast.csv              semicolon separated: ...;File Name;ACR;Bi-Rads
    AllDICOMs/<fileid>_<patienthash>_MG_<L|R>_<CC|ML>_ANON.dcm
    AllXML/<fileid>.xml       OsiriX plist ROIs (only for annotated images)"""
HOW_TO_GET = """\
  INbreast is not public on the web; it is given on request for research use by the
  Breast Research Group, INESC TEC / Faculty of Medicine, University of Porto
  (Moreira et al. 2012). Ask through http://medicalresearch.inescporto.pt/breastresearch/
  (the dataset request form), unpack "INbreast Release 1.0" and pass its folder as --root
  (or put it under $MAMMO_DATA/inbreast)."""


def read(root: str | Path, *, labeling: str | None = None, csv_path: str | Path | None = None,
         missing: str = "error", subset: str | None = None) -> pd.DataFrame:
    """Read INbreast into the record table: one row per ROI, one normal row per image without ROIs.

    Args:
        root: the release folder (or its parent).
        labeling: "birads" (1 normal, 2-3 benign, 4-6 malignant; the default) or "shen" (BI-RADS 3
            excluded).
        subset: "shen2017": the images Shen et al. analysed (see the module docstring); it sets
            the labeling to "shen" (another `labeling` with it is an error).
        csv_path: the BI-RADS table; default `<release>/INbreast.csv`. A table exported
            from INbreast.xls with commas instead of semicolons is accepted.
        missing: a table row whose DICOM is absent raises ("error") or is dropped ("skip").

    Returns:
        The record table with extra columns birads, acr, roi_name; with a `subset`,
        `attrs["subset"]` = {name, rule, quote, paper: the paper's counts, found: this folder's
        (release_images, release_patients, images, patients, excluded_images, excluded_patients),
        note: "" or how the counts differ from the paper's on a full release}.

    Raises:
        DatasetNotFoundError: the folder lacks AllDICOMs or the table.
        DataError: malformed XML, table rows or DICOM names, naming the file (and line).
    """
    if subset is not None and subset not in SUBSETS:
        raise ValueError(f"subset must be one of {list(SUBSETS)} or None. Received: subset={subset!r}")
    if subset is not None and labeling not in (None, SUBSETS[subset]["labeling"]):
        raise ValueError(f"subset {subset!r} labels the images itself ({SUBSETS[subset]['rule']}); leave "
                         f"`labeling` out. Received: labeling={labeling!r}")
    labeling = SUBSETS[subset]["labeling"] if subset is not None else (labeling or "birads")
    if labeling not in LABELINGS:
        raise ValueError(f"labeling must be one of {list(LABELINGS)}. Received: labeling={labeling!r}")
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {list(MISSING_POLICIES)}. Received: missing={missing!r}")
    release = _release_folder(Path(root))
    table_path = Path(csv_path) if csv_path is not None else release / "INbreast.csv"
    if not table_path.is_file():
        raise DatasetNotFoundError(f"inbreast: BI-RADS table not found at {table_path}.\n"
                                   f"Expected layout:\n{LAYOUT}")
    dicoms = index_dicoms(release / "AllDICOMs")
    rows, listed, excluded = [], set(), set()
    for entry in read_birads_table(table_path):
        file_id = entry["file_id"]
        if file_id not in dicoms:
            if missing == "skip":
                continue
            raise DataError(table_path, f"File Name {file_id} has no DICOM "
                                        f"{file_id}_*_MG_*_ANON.dcm in {release / 'AllDICOMs'}",
                            line=entry["line"])
        listed.add((file_id, dicoms[file_id]["patient_id"]))
        pathology = birads_pathology(entry["birads"], labeling)
        if pathology is None:
            excluded.add((file_id, dicoms[file_id]["patient_id"]))
            continue
        image = dicoms[file_id]
        base = {"image_id": file_id, "patient_id": image["patient_id"], "path": str(image["path"]),
                "source": "inbreast", "laterality": image["laterality"], "view": image["view"],
                "birads": entry["birads"], "acr": entry["acr"]}
        rois = read_rois(release / "AllXML" / f"{file_id}.xml")
        if not rois and pathology == "normal":
            rows.append({**base, "abnormality": "normal", "pathology": "normal", "roi_name": ""})
            continue
        if not rois:  # a finding without an outline: keep the image label, geometry unknown
            rows.append({**base, "lesion_id": f"{file_id}_unlocalised", "roi_name": "",
                         "abnormality": UNKNOWN_ROI_ABNORMALITY, "pathology": pathology})
            continue
        for number, roi in enumerate(rois):
            row = {**base, "lesion_id": f"{file_id}_roi{number}", "roi_name": roi["name"],
                   "abnormality": roi_abnormality(roi["name"]),
                   "pathology": pathology}
            if roi["points"]:
                row.update(contour_geometry(roi["points"]))
            rows.append(row)
    table = make_table(rows, origin=str(table_path))
    if subset is not None:
        table.attrs["subset"] = subset_report(subset, listed, excluded, table)
    return table


def subset_report(subset: str, listed: set[tuple[str, str]], excluded: set[tuple[str, str]],
                  table: pd.DataFrame) -> dict:
    """The subset's rule and counts next to the paper's; a note when a full release does not match them."""
    spec = SUBSETS[subset]
    kept_patients = set(table["patient_id"]) if len(table) else set()
    found = {"release_images": len(listed), "release_patients": len({p for _, p in listed}),
             "images": int(table["image_id"].nunique()) if len(table) else 0, "patients": len(kept_patients),
             "excluded_images": len(excluded),
             "excluded_patients": len({p for _, p in excluded} - kept_patients)}
    paper = spec["paper"]
    note = ""
    if found["release_images"] == paper["release_images"] and any(
            found[key] != paper[key] for key in ("images", "patients", "excluded_images", "excluded_patients")):
        note = ("this full release gives " + ", ".join(f"{key} {found[key]} (paper {paper[key]})"
                                                      for key in ("images", "patients", "excluded_images",
                                                                  "excluded_patients")))
    return {"name": subset, "rule": spec["rule"], "quote": spec["quote"], "paper": dict(paper), "found": found,
            "note": note}


def birads_pathology(birads: str, labeling: str = "birads") -> str | None:
    """Pathology for a BI-RADS category, or None when `labeling` excludes the image.

    Reference: Shen et al. 2019, Sec. 3.2.1 (BI-RADS 1-2 negative, 4-6 positive, 3 excluded).
    """
    if birads == "0" or (birads == "3" and labeling == "shen"):
        return None
    if birads == "1":
        return "normal"
    if birads in ("2", "3"):
        return "benign"
    return "malignant"


def roi_abnormality(name: str) -> str:
    """Abnormality for an OsiriX ROI name; unknown names map to UNKNOWN_ROI_ABNORMALITY."""
    return ROI_ABNORMALITY.get(" ".join(name.lower().split()), UNKNOWN_ROI_ABNORMALITY)


def index_dicoms(folder: Path) -> dict[str, dict]:
    """File id -> {path, patient_id, laterality, view} parsed from the DICOM file names.

    Raises:
        DataError: a name not in the release's pattern, or two files of one file id (naming both:
            which one is the image is unknown, and their patient or side may differ).
    """
    if not folder.is_dir():
        raise DatasetNotFoundError(f"inbreast: DICOM folder not found at {folder}.\n"
                                   f"Expected layout:\n{LAYOUT}")
    images = {}
    for path in sorted(folder.glob("*.dcm")):
        match = _DICOM_NAME.match(path.name)
        if match is None:
            raise DataError(path, "INbreast DICOM names follow "
                                  "<fileid>_<patienthash>_MG_<L|R>_<CC|ML>_ANON.dcm. "
                                  f"Received: {path.name!r}")
        file_id, patient, laterality, view = match.groups()
        if file_id in images:
            raise DataError(path, f"file id {file_id} is also the id of {images[file_id]['path'].name} in "
                                  f"{folder}; each INbreast image has its own file id (the table labels it by "
                                  f"that id alone), so keep one of the two files")
        images[file_id] = {"path": path.resolve(), "patient_id": patient,
                           "laterality": laterality.upper(), "view": VIEW_CODES[view.upper()]}
    return images


def read_birads_table(path: Path) -> list[dict]:
    """Rows of INbreast.csv as {file_id, birads, acr, line}; rows without a File Name are skipped.

    Raises:
        DataError: missing columns, a BI-RADS value outside BIRADS_VALUES, or a File Name listed
            twice, naming file and line. A repeat is refused even when it agrees with the first row, as
            VinDr-Mammo and RSNA repeats are: the release lists each image once, so a repeat means an
            edited or merged table, and a conflicting one would label one image two ways.
    """
    text = _read_text(path)
    lines = text.splitlines()
    if not lines:
        raise DataError(path, "the BI-RADS table is empty")
    delimiter = ";" if lines[0].count(";") >= lines[0].count(",") else ","
    reader = csv.reader(lines, delimiter=delimiter)
    header = [" ".join(name.lower().split()) for name in next(reader)]
    columns = {}
    for wanted in ("file name", "bi-rads", "acr"):
        if wanted not in header:
            raise DataError(path, f"the BI-RADS table needs the columns 'File Name', 'Bi-Rads' "
                                  f"and 'ACR'. Received header: {lines[0]!r}", line=1)
        columns[wanted] = header.index(wanted)
    entries, seen = [], {}
    for number, fields in enumerate(reader, start=2):
        fields = fields + [""] * (len(header) - len(fields))
        file_id = _integer_text(fields[columns["file name"]])
        if not file_id:
            continue
        birads = _integer_text(fields[columns["bi-rads"]]).lower()
        if birads not in BIRADS_VALUES:
            raise DataError(path, f"Bi-Rads must be one of {list(BIRADS_VALUES)}. "
                                  f"Received: {fields[columns['bi-rads']]!r}", line=number)
        entry = {"file_id": file_id, "birads": birads, "acr": _integer_text(fields[columns["acr"]]),
                 "line": number}
        first = seen.get(file_id)
        if first is not None:
            agreement = ("with the same Bi-Rads and ACR" if (first["birads"], first["acr"]) == (birads, entry["acr"])
                         else f"with Bi-Rads {first['birads']}, ACR {first['acr'] or '-'} there and Bi-Rads "
                              f"{birads}, ACR {entry['acr'] or '-'} here")
            raise DataError(path, f"File Name {file_id} is listed twice (first on line {first['line']}, "
                                  f"{agreement}); each image has one row", line=number)
        seen[file_id] = entry
        entries.append(entry)
    return entries


def read_rois(path: Path) -> list[dict]:
    """ROIs of one OsiriX plist file as {name, points}; [] when the file does not exist.

    Raises:
        DataError: the file is not a plist of the expected structure or a point is malformed.
    """
    if not path.is_file():
        return []
    try:
        with open(path, "rb") as handle:
            document = plistlib.load(handle)
        images = document["Images"]
        rois = [roi for image in images for roi in image.get("ROIs", [])]
    except (plistlib.InvalidFileException, ExpatError, ValueError, KeyError, TypeError,
            AttributeError) as error:
        raise DataError(path, "not an OsiriX ROI plist (dict > Images > [dict > ROIs]). "
                              f"Received: {type(error).__name__}: {error}") from None
    parsed = []
    for number, roi in enumerate(rois):
        if not isinstance(roi, dict):
            raise DataError(path, f"ROI {number} is not a dict. Received: {type(roi).__name__}")
        points = [_parse_point(text, path, number) for text in roi.get("Point_px", [])]
        parsed.append({"name": str(roi.get("Name", "")), "points": points})
    return parsed


def _parse_point(text: object, path: Path, number: int) -> tuple[float, float]:
    match = _POINT.match(str(text))
    try:
        if match is None:
            raise ValueError
        return float(match.group(1)), float(match.group(2))
    except ValueError:
        raise DataError(path, f"ROI {number}: Point_px entries look like '(x, y)'. "
                              f"Received: {text!r}") from None


def _release_folder(root: Path) -> Path:
    for candidate in (root, root / RELEASE_FOLDER):
        if (candidate / "AllDICOMs").is_dir():
            return candidate
    raise DatasetNotFoundError(f"inbreast: no AllDICOMs folder in {root} or {root / RELEASE_FOLDER}.\n"
                               f"Expected layout:\n{LAYOUT}\nHow to get it:\n{HOW_TO_GET}")


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _integer_text(value: str) -> str:
    """'22678622.0' (a spreadsheet export) -> '22678622'; other text stripped."""
    value = value.strip()
    if value.endswith(".0") and value[:-2].isdigit():
        return value[:-2]
    return value
