"""CBIS-DDSM reader: the four TCIA description CSVs plus the DICOM files they name.

Facts about the distribution this reader relies on (and the defects it repairs):

- Mass CSVs spell the density column `breast_density`, calc CSVs `breast density`;
  header names are compared ignoring case, spaces and underscores.
- CSV paths read `<subject>/<StudyInstanceUID>/<SeriesInstanceUID>/000000.dcm`, but
  the NBIA Data Retriever names folders descriptively
  (`<subject>/07-20-2016-DDSM-74994/1.000000-full mammogram images-24515/1-1.dcm`).
  Files are therefore found through their headers: every `.dcm` under the root is
  indexed by (PatientID = subject folder name, StudyInstanceUID, SeriesInstanceUID).
  Within a series a CSV file name selects the file of that name, else the file at
  that position (`000001.dcm` -> the second file in InstanceNumber/name order).
- In many rows the "cropped image file path" and "ROI mask file path" columns are
  swapped, and TCIA often puts both files in one series. The ROI mask is the one
  with the full image's size (the larger one); the crop is small. Rows whose mask
  column named the crop get `paths_swapped = True`.
- Pathology BENIGN_WITHOUT_CALLBACK is benign (raw value kept in `pathology_raw`).
- Some ROI masks differ in size from their full image. With `check_masks` such a
  lesion keeps NaN geometry and a `problem` text (also listed in
  `table.attrs["problems"]`) instead of a box in the wrong coordinates.
- Some path cells end with a newline inside the quotes; paths are stripped.
- Users often hold a subset of the four CSVs (a mass-only download is common) or a
  partial DICOM download. Any non-empty subset of the CSVs is read (`attrs["csv_files"]`
  lists the ones found, `attrs["csv_missing"]` the others); `missing="keep"` or
  `"skip"` tolerates files the CSVs name but the download lacks (`image_found`,
  `attrs["missing_files"]`).

Reference: Lee et al. 2017, "A curated mammography data set for use in
computer-aided detection and diagnosis research", Scientific Data 4:170177.
"""
from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mammo_keras.data.dicom import read_dicom, read_header
from mammo_keras.data.file_cache import FileCache
from mammo_keras.data.records import make_table, mask_geometry
from mammo_keras.errors import DataError, DatasetNotFoundError

KINDS = ("mass", "calcification")
SPLITS = ("train", "test")
CSV_NAMES = {
    ("mass", "train"): "mass_case_description_train_set.csv",
    ("mass", "test"): "mass_case_description_test_set.csv",
    ("calcification", "train"): "calc_case_description_train_set.csv",
    ("calcification", "test"): "calc_case_description_test_set.csv",
}
COMMON_COLUMNS = (
    "patient_id", "breast density", "left or right breast", "image view", "abnormality id",
    "abnormality type", "assessment", "pathology", "subtlety", "image file path",
    "cropped image file path", "ROI mask file path",
)
KIND_COLUMNS = {"mass": ("mass shape", "mass margins"),
                "calcification": ("calc type", "calc distribution")}
PATHOLOGY = {"MALIGNANT": "malignant", "BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": "benign"}
LATERALITY = {"LEFT": "L", "RIGHT": "R"}
VIEWS = ("CC", "MLO")
IMAGE_COLUMN, CROP_COLUMN, MASK_COLUMN = "image file path", "cropped image file path", "ROI mask file path"
MISSING_POLICIES = ("error", "skip", "keep")
_SUBJECT = re.compile(r"^(Mass|Calc)-(Training|Test)_P_\d+_(LEFT|RIGHT)_(CC|MLO)(_\d+)?$")

NAME = "cbis_ddsm"  # the dataset registry entry (mammo_keras.data); CLI name and $MAMMO_DATA folders below
FOLDERS = ('cbis-ddsm', 'cbis_ddsm', 'CBIS-DDSM')  # sub-folders of a data root (--data DIR / $MAMMO_DATA) tried in order
ALIASES = ('cbis-ddsm', 'ddsm')
LICENCE = (  # the terms the data come with (model cards, README)
    "the TCIA collection's licence (Creative Commons Attribution 3.0, CC BY 3.0); cite Lee et al. "
    '2017 and TCIA')
LAYOUT = """\
  <root>/**/mass_case_description_train_set.csv   the four TCIA description CSVs,
  <root>/**/mass_case_description_test_set.csv    anywhere under the root
  <root>/**/calc_case_description_train_set.csv
  <root>/**/calc_case_description_test_set.csv    (any non-empty subset of them works)
  <root>/**/<subject>/<study>/<series>/<file>.dcm  the DICOM files, e.g. as the NBIA Data Retriever
      writes them: CBIS-DDSM/Mass-Training_P_00001_LEFT_CC/07-20-2016-DDSM-74994/
      1.000000-full mammogram images-24515/1-1.dcm (crops and ROI masks under <subject>_<abnormality id>).
  Folder names do not matter: files are matched to the CSV paths through the DICOM headers
  (PatientID, StudyInstanceUID, SeriesInstanceUID)."""
HOW_TO_GET = """\
  CBIS-DDSM is public on The Cancer Imaging Archive (collection "CBIS-DDSM",
  https://doi.org/10.7937/K9/TCIA.2016.7O02S9CY; cite Lee et al. 2017 and TCIA):
    1. download the .tcia manifest of the collection and open it with the NBIA Data Retriever
       (https://wiki.cancerimagingarchive.net/display/NBIA/Downloading+TCIA+Images), "Descriptive"
       or "Classic" directory type both work; about 163 GB, 10,239 DICOM files;
    2. download the four description CSVs from the same page (mass/calc x training/test);
    3. put everything under one folder DIR and pass --root DIR
       (or set MAMMO_DATA so that $MAMMO_DATA/cbis-ddsm is DIR)."""


@dataclass(frozen=True)
class DicomEntry:
    """What the index knows about one DICOM file, from its header alone."""

    path: Path
    subject: str
    study: str
    series: str
    rows: int
    columns: int
    instance: int

    @property
    def area(self) -> int:
        return self.rows * self.columns

    @property
    def size_text(self) -> str:
        return f"{self.columns}x{self.rows}"


@dataclass(frozen=True)
class DescriptionCsv:
    path: Path
    kind: str
    split: str


SeriesKey = tuple[str, str, str]


def read(root: str | Path, *, abnormality: str | Sequence[str] = KINDS,
         check_masks: bool = True, missing: str = "error", cache: str | Path | None = None) -> pd.DataFrame:
    """Read CBIS-DDSM into the record table, one row per CSV row (lesion).

    Args:
        root: folder holding the description CSVs and the DICOM files.
        abnormality: "mass", "calcification" or both; of these, the description CSVs
            present are read (at least one must be).
        check_masks: leave geometry NaN (with a `problem` text) when an ROI mask's
            size differs from its full image's; False uses such masks as they are.
        missing: what to do with a file a CSV names that is not under the root:
            "error" raises; "keep" keeps the row (`image_found` False, `path` the CSV's
            path under the root; a missing mask or crop leaves the geometry unknown, with
            a `problem` text); "skip" drops the rows whose full image is missing.
        cache: a JSON file (`data prepare` gives `<out>/reader_cache.json`) keeping each DICOM
            header's fields and each ROI mask's box, keyed by the file's path, size and mtime_ns
            (`file_cache.FileCache`): a second reading reads only the files that changed. None
            reads every header and decodes every mask.

    Returns:
        The record table plus columns split, density, subtlety, assessment, shape,
        margins, calc_type, calc_distribution, pathology_raw, crop_path,
        paths_swapped, image_found, problem, csv_file, csv_line. `attrs["problems"]`
        lists the problem rows as `csv:line: lesion_id: text`; `attrs["csv_files"]`
        the description CSVs read and `attrs["csv_missing"]` the names not found;
        `attrs["missing_files"]` the files named but not found, as `csv:line: column: path`.

    Raises:
        DatasetNotFoundError: none of the selected description CSVs is under the root.
        DataError: a CSV lacks a column or has a bad value, or (with missing="error") a
            referenced file is not found (naming the CSV, its line and the path looked for); a row
            whose image path names its ROI mask or crop, whose abnormality type is not its CSV's
            kind, or whose image has another patient, side or view on an earlier row.
    """
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {list(MISSING_POLICIES)}. Received: missing={missing!r}")
    root = Path(root).absolute()
    kinds = _check_abnormality(abnormality)
    descriptions = find_descriptions(root, kinds)
    files = FileCache(cache)
    index = index_dicoms(root, cache=files)
    rows, problems, absent = [], [], []
    images: dict[str, dict] = {}
    for description in descriptions:
        for line, fields in read_description(description):
            row = _lesion_row(root, index, description, line, fields, check_masks=check_masks,
                              missing=missing, absent=absent, cache=files)
            _check_same_image(images, row, (description.path, line))
            if missing == "skip" and not row["image_found"]:
                continue
            if row["problem"]:
                problems.append(f"{description.path}:{line}: {row['lesion_id']}: {row['problem']}")
            rows.append(row)
    table = make_table(rows, origin=str(root))
    if rows:
        table = table.astype({"density": "Int64", "subtlety": "Int64", "assessment": "Int64",
                              "paths_swapped": bool, "image_found": bool, "csv_line": int})
    table.attrs["problems"] = problems + table.attrs.get("problems", [])
    table.attrs["csv_files"] = [str(description.path) for description in descriptions]
    read_names = {description.path.name.lower() for description in descriptions}
    table.attrs["csv_missing"] = [name for key, name in CSV_NAMES.items()
                                  if key[0] in kinds and name.lower() not in read_names]
    table.attrs["missing_files"] = absent
    files.save()
    return table


def find_descriptions(root: Path, kinds: Sequence[str]) -> list[DescriptionCsv]:
    """The description CSVs of `kinds` found anywhere under `root`, mass before calc, train before test.

    Any non-empty subset of them is enough (users often hold only the two mass CSVs).
    """
    wanted = {name.lower(): key for key, name in CSV_NAMES.items() if key[0] in kinds}
    found: dict[tuple[str, str], list[Path]] = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name.lower() in wanted:
                found.setdefault(wanted[name.lower()], []).append(Path(folder) / name)
    if not found:
        names = [CSV_NAMES[key] for key in wanted.values()]
        raise DatasetNotFoundError(
            f"cbis_ddsm: none of the description CSVs {names} found under {root}; at least one "
            f"is needed.\nExpected layout:\n{LAYOUT}\nHow to get it:\n{HOW_TO_GET}")
    descriptions = []
    for kind in kinds:
        for split in SPLITS:
            if (kind, split) not in found:
                continue
            paths = sorted(found[(kind, split)])
            if len(paths) > 1:
                raise DataError(paths[1], f"two copies of {CSV_NAMES[(kind, split)]} under {root}; "
                                          f"keep one. Received: {[str(p) for p in paths]}")
            descriptions.append(DescriptionCsv(paths[0], kind, split))
    return descriptions


def read_description(description: DescriptionCsv) -> Iterator[tuple[int, dict[str, str]]]:
    """(first line number, fields by canonical column name) for each CSV row.

    Raises:
        DataError: a required column is missing, naming the CSV and the column.
    """
    required = COMMON_COLUMNS + KIND_COLUMNS[description.kind]
    try:
        with open(description.path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            positions = {_header_key(name): i for i, name in enumerate(header)}
            for column in required:
                if _header_key(column) not in positions:
                    raise DataError(description.path, f"missing required column {column!r}. "
                                                      f"Received columns: {header}", line=1)
            line = reader.line_num + 1
            for values in reader:
                if any(value.strip() for value in values):
                    yield line, {column: _cell(values, positions[_header_key(column)])
                                 for column in required}
                line = reader.line_num + 1
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(description.path, f"cannot read CSV ({error})") from None


def index_dicoms(root: Path, *, cache: FileCache | None = None) -> dict[SeriesKey, list[DicomEntry]]:
    """Every .dcm under `root` by (subject, study UID, series UID), from headers only.

    A file present twice (same SOPInstanceUID in one series) is indexed once. With a `cache`, a
    header whose file kept its size and mtime_ns is not read again.
    """
    cache = cache or FileCache(None)
    index: dict[SeriesKey, list[DicomEntry]] = {}
    seen: set[tuple[SeriesKey, str]] = set()
    for folder, folders, files in os.walk(root):
        folders.sort()
        for name in sorted(files):
            if not name.lower().endswith(".dcm"):
                continue
            path = Path(folder) / name
            header = cache.get("header", path, lambda: _header_fields(path))
            key = (_subject_of(path, root, header["patient"]), header["study"], header["series"])
            instance = header["sop_instance"] if header["sop_instance"] is not None else str(path)
            if (key, instance) in seen:
                continue
            seen.add((key, instance))
            index.setdefault(key, []).append(DicomEntry(
                path=path, subject=key[0], study=key[1], series=key[2],
                rows=header["rows"], columns=header["columns"], instance=header["instance"]))
    for entries in index.values():
        entries.sort(key=lambda entry: (entry.instance, entry.path.name))
    return index


def _header_fields(path: Path) -> dict:
    """What the index keeps of a DICOM header (JSON values, for the cache)."""
    header = read_header(path)
    return {"patient": str(header.get("PatientID", "")).strip(),
            "study": str(header.get("StudyInstanceUID", "")), "series": str(header.get("SeriesInstanceUID", "")),
            "sop_instance": str(header.SOPInstanceUID) if "SOPInstanceUID" in header else None,
            "rows": int(header.get("Rows", 0) or 0), "columns": int(header.get("Columns", 0) or 0),
            "instance": int(header.get("InstanceNumber", 0) or 0)}


def _lesion_row(root: Path, index: dict[SeriesKey, list[DicomEntry]], description: DescriptionCsv,
                line: int, fields: dict[str, str], *, check_masks: bool, missing: str = "error",
                absent: list[str] | None = None, cache: FileCache | None = None) -> dict:
    where = (description.path, line)
    located = {}
    for column in (IMAGE_COLUMN, MASK_COLUMN, CROP_COLUMN):
        located[column] = _locate(root, index, where, column, fields[column], required=missing == "error")
        if located[column][1] is None and absent is not None:
            absent.append(f"{description.path}:{line}: {column}: {_relative(fields[column])}")
    image = located[IMAGE_COLUMN][1]
    _check_not_own_roi(where, fields, located)
    (mask_series, mask_named), (crop_series, crop_named) = located[MASK_COLUMN], located[CROP_COLUMN]
    image_id = _split_path(fields[IMAGE_COLUMN], where, IMAGE_COLUMN)[0]
    lesion_id = f"{image_id}_{fields['abnormality id']}"
    if image is None:  # a partial download: without the image, only two files tell mask from crop
        candidates = list(dict.fromkeys(mask_series + crop_series))
        mask = max(candidates, key=lambda entry: entry.area) if len(candidates) > 1 else None
        crop = min(candidates, key=lambda entry: entry.area) if len(candidates) > 1 else None
        geometry, problem = _geometry(mask, mask, check_masks=False, cache=cache)
        problem = "full image not found; " + (problem or "box from the ROI mask, its size not checked")
    else:
        mask, crop = (_mask_and_crop(image, mask_series + crop_series, mask_named, crop_named)
                      if mask_series or crop_series else (None, None))
        geometry, problem = _geometry(image, mask, check_masks=check_masks, cache=cache)
    shape_column, margin_column = KIND_COLUMNS[description.kind]
    is_mass = description.kind == "mass"
    abnormality = _vocabulary(fields, "abnormality type", {kind: kind for kind in KINDS}, where)
    if abnormality != description.kind:  # its descriptors would be read from the other kind's columns
        raise DataError(where[0], f"abnormality type {fields['abnormality type']!r} contradicts the CSV: "
                                  f"{description.path.name} describes {description.kind} lesions (with the "
                                  f"columns {list(KIND_COLUMNS[description.kind])})", line=where[1])
    return {
        "image_id": image_id,
        "patient_id": fields["patient_id"],
        "lesion_id": lesion_id,
        "path": str(image.path) if image is not None else str(root / _relative(fields[IMAGE_COLUMN])),
        "source": "cbis_ddsm",
        "laterality": _vocabulary(fields, "left or right breast", LATERALITY, where),
        "view": _vocabulary(fields, "image view", {view: view for view in VIEWS}, where),
        "abnormality": abnormality,
        "pathology": _vocabulary(fields, "pathology", PATHOLOGY, where),
        **geometry,
        "mask_path": "" if mask is None else str(mask.path),
        "split": description.split,
        "density": _integer(fields, "breast density", where),
        "subtlety": _integer(fields, "subtlety", where),
        "assessment": _integer(fields, "assessment", where),
        "shape": fields[shape_column] if is_mass else "",
        "margins": fields[margin_column] if is_mass else "",
        "calc_type": "" if is_mass else fields[shape_column],
        "calc_distribution": "" if is_mass else fields[margin_column],
        "pathology_raw": fields["pathology"],
        "crop_path": "" if crop is None else str(crop.path),
        "paths_swapped": mask is not None and mask_named is not None and mask != mask_named,
        "image_found": image is not None,
        "problem": problem,
        "csv_file": description.path.name,
        "csv_line": line,
    }


def _check_not_own_roi(where: tuple[Path, int], fields: dict[str, str],
                       located: dict[str, tuple[list[DicomEntry], DicomEntry | None]]) -> None:
    """Refuse a row whose image path names its ROI mask or crop (the same text, or a file of the same
    series): the image would be its own mask (a box of the whole image, no problem recorded) or the
    mask would be trained as the image. In the release the three lie in different series."""
    image = located[IMAGE_COLUMN][1]
    for column in (MASK_COLUMN, CROP_COLUMN):
        series, _ = located[column]
        same_text = _relative(fields[IMAGE_COLUMN]) == _relative(fields[column])
        if same_text or (image is not None and image in series):
            named = _relative(fields[IMAGE_COLUMN]) if same_text else str(image.path)
            raise DataError(where[0], f"{IMAGE_COLUMN!r} and {column!r} name the same file (or series): "
                                      f"{named}; the full image cannot be its own ROI mask or crop",
                            line=where[1])


def _check_same_image(images: dict[str, dict], row: dict, where: tuple[Path, int]) -> None:
    """Refuse a row that gives an image another patient, side or view than an earlier row of it did
    (several lesions of one image are several rows; one of them would be wrong, and a patient id
    decides the split)."""
    seen = images.setdefault(row["image_id"], {"patient_id": row["patient_id"], "laterality": row["laterality"],
                                               "view": row["view"], "where": where})
    for column in ("patient_id", "laterality", "view"):
        if row[column] != seen[column]:
            raise DataError(where[0], f"image {row['image_id']} has {column} {row[column]!r} here but "
                                      f"{seen[column]!r} on {seen['where'][0].name}:{seen['where'][1]}; "
                                      f"the rows of one image must agree", line=where[1])


def _locate(root: Path, index: dict[SeriesKey, list[DicomEntry]], where: tuple[Path, int],
            column: str, text: str, *, required: bool = True) -> tuple[list[DicomEntry], DicomEntry | None]:
    """The files of the series a CSV path names, and the one file it names in it.

    A series not under the root raises when `required`, else gives `([], None)`.
    """
    subject, study, series, name = _split_path(text, where, column)
    entries = index.get((subject, study, series), [])
    if not entries and not required:
        return [], None
    if not entries:
        raise DataError(where[0], f"{column} {text!r} not found: no .dcm file under {root} has "
                                  f"PatientID={subject}, StudyInstanceUID={study}, "
                                  f"SeriesInstanceUID={series}", line=where[1])
    by_name = [entry for entry in entries if entry.path.name == name]
    if by_name:
        return entries, by_name[0]
    stem = Path(name).stem
    position = int(stem) if stem.isdigit() else 0
    return entries, entries[position] if position < len(entries) else entries[0]


def _mask_and_crop(image: DicomEntry, candidates: list[DicomEntry], mask_named: DicomEntry,
                   crop_named: DicomEntry) -> tuple[DicomEntry | None, DicomEntry | None]:
    """Tell the ROI mask (full image size, the larger) from the crop (small) by header size."""
    unique = list(dict.fromkeys(candidates))
    if len(unique) == 1:
        only = unique[0]
        return (only, None) if 2 * only.area >= image.area else (None, only)
    mask = max(unique, key=lambda entry: (entry.area, entry == mask_named))
    others = [entry for entry in unique if entry != mask]
    crop = crop_named if crop_named in others else min(others, key=lambda entry: entry.area)
    return mask, crop


def _geometry(image: DicomEntry | None, mask: DicomEntry | None, *,
              check_masks: bool, cache: FileCache | None = None) -> tuple[dict[str, float], str]:
    """Box from the mask's non-zero pixels, or no box and the reason (with a `cache`, a mask that kept
    its size and mtime_ns is not decoded again)."""
    if mask is None:
        return {}, "no ROI mask found (the series holds only a cropped image, or none was found)"
    if check_masks and (mask.rows, mask.columns) != (image.rows, image.columns):
        return {}, (f"ROI mask {mask.path} is {mask.size_text} pixels but its full image is "
                    f"{image.size_text}; geometry left unknown")
    geometry = (cache or FileCache(None)).get("mask_box", mask.path, lambda: _mask_box(mask.path))
    if geometry is None:
        return {}, f"ROI mask {mask.path} is empty; geometry left unknown"
    return geometry, ""


def _mask_box(path: Path) -> dict[str, float] | None:
    """The box (records.mask_geometry) of a mask file's non-zero pixels; None for an empty mask."""
    geometry = mask_geometry(read_dicom(path, apply_voi=False) > 0)
    return None if geometry is None else {key: float(value) for key, value in geometry.items()}


def _relative(text: str) -> str:
    """A CSV path as a relative path (stripped, forward slashes), for rows whose file is missing."""
    return "/".join(part for part in text.strip().replace("\\", "/").split("/") if part)


def _split_path(text: str, where: tuple[Path, int], column: str) -> tuple[str, str, str, str]:
    """(subject, study UID, series UID, file) of a CSV path; `.` and `..` are refused, as the path of a
    missing file is kept under the root (`missing="keep"`) and the subject becomes the image id."""
    parts = [part for part in text.replace("\\", "/").split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise DataError(where[0], f"{column} must be a path inside the dataset folder, without '.' or '..' "
                                  f"parts. Received: {text!r}", line=where[1])
    if len(parts) < 4:
        raise DataError(where[0], f"{column} must read <subject>/<study UID>/<series UID>/<file>.dcm. "
                                  f"Received: {text!r}", line=where[1])
    return parts[-4], parts[-3], parts[-2], parts[-1]


def _subject_of(path: Path, root: Path, patient: str) -> str:
    """The subject folder name: the header's PatientID, else the folder named like one."""
    if patient:
        return patient
    for part in path.relative_to(root).parts:
        if _SUBJECT.match(part):
            return part
    raise DataError(path, "DICOM header has no PatientID and no folder above it is named like "
                          "a CBIS-DDSM subject (e.g. Mass-Training_P_00001_LEFT_CC)")


def _vocabulary(fields: dict[str, str], column: str, mapping: dict[str, str],
                where: tuple[Path, int]) -> str:
    value = fields[column]
    target = {key.upper(): term for key, term in mapping.items()}.get(value.upper())
    if target is None:
        raise DataError(where[0], f"column {column!r} must be one of {list(mapping)}. "
                                  f"Received: {value!r}", line=where[1])
    return target


def _integer(fields: dict[str, str], column: str, where: tuple[Path, int]) -> int | None:
    value = fields[column]
    if value == "":
        return None
    try:
        number = float(value)
        if not number.is_integer():  # also inf and nan, which int() refuses with another error
            raise ValueError(value)
        return int(number)
    except ValueError:
        raise DataError(where[0], f"column {column!r} must be an integer. Received: {value!r}",
                        line=where[1]) from None


def _check_abnormality(abnormality: str | Sequence[str]) -> tuple[str, ...]:
    kinds = (abnormality,) if isinstance(abnormality, str) else tuple(abnormality)
    if not kinds or any(kind not in KINDS for kind in kinds):
        raise ValueError(f"abnormality must be a non-empty selection of {list(KINDS)}. "
                         f"Received: abnormality={abnormality!r}")
    return tuple(kind for kind in KINDS if kind in kinds)


def _header_key(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


def _cell(values: list[str], position: int) -> str:
    return values[position].strip() if position < len(values) else ""


__all__ = ["HOW_TO_GET", "LAYOUT", "DicomEntry", "find_descriptions", "index_dicoms", "read",
           "read_description"]
