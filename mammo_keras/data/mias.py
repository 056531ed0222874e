"""mini-MIAS reader: `Info.txt` plus `mdbNNN.pgm` (public archive) or `mdbNNN.png`.

Info.txt facts this parser relies on (checked against the distributed file):
CRLF line endings; free text before and after the table; table rows
`REFNUM BG CLASS SEVERITY X Y RADIUS`; NORM rows stop after CLASS; some abnormal
rows have no coordinates (`mdb059 F CIRC B`, `mdb216 D CALC M *NOTE 3*`); an
image with several lesions has several rows (never a NORM row besides them, and
one tissue per image); X/Y have their origin at the bottom-left, so the image row
is 1024 - Y (X in 0..1023 and Y in 1..1024 lie inside the image); every image is
1024 x 1024 pixels, the size the coordinates refer to; the largest radius is 197. Images mdb(2k-1) and mdb(2k) are the
two breasts of one woman (Info.txt note 1: even numbers left, odd right).

Reference: Suckling et al. 1994, "The Mammographic Image Analysis Society Digital
Mammogram Database", Excerpta Medica ICS 1069, 375-378.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from mammo_keras.data.imageio import header_size
from mammo_keras.data.records import circle_geometry, make_table
from mammo_keras.errors import DataError

IMAGE_SIZE = 1024
SUFFIXES = (".pgm", ".png")
CLASS_TO_ABNORMALITY = {
    "CALC": "calcification", "CIRC": "mass", "SPIC": "mass", "MISC": "mass",
    "ARCH": "distortion", "ASYM": "asymmetry", "NORM": "normal",
}
TISSUE = {"F": "fatty", "G": "fatty-glandular", "D": "dense-glandular"}
SEVERITY = {"B": "benign", "M": "malignant"}
MAX_RADIUS = IMAGE_SIZE / 2  # a lesion's circle no wider than the image (the largest in Info.txt: 197)
_ROW = re.compile(r"^mdb", re.IGNORECASE)  # any line that starts like a table row is parsed as one, not skipped
_REFNUM = re.compile(r"mdb\d{3}")  # the image file's name: mdb001.pgm

NAME = "mias"  # the dataset registry entry (mammo_keras.data); CLI name and $MAMMO_DATA folders below
FOLDERS = ('mias', 'mini-mias', 'all-mias')  # sub-folders of a data root (--data DIR / $MAMMO_DATA) tried in order
ALIASES = ('mini-mias', 'mini_mias')
LICENCE = (  # the terms the data come with (model cards, README)
    'research use only; cite Suckling et al. 1994, "The Mammographic Image Analysis Society Digital '
    'Mammogram Database", Excerpta Medica ICS 1069, 375-378')
LAYOUT = """\
  <root>/Info.txt          the label file of the archive (CRLF, table after the header text)
  <root>/mdb001.pgm ... mdb322.pgm   (or .png conversions of them)"""
HOW_TO_GET = """\
  mini-MIAS is public (research use; cite Suckling et al. 1994):
    mammo-keras data download mias --out DIR      (fetches all-mias.tar.gz from PEIPA)
  or by hand: download http://peipa.essex.ac.uk/pix/mias/all-mias.tar.gz, unpack it into DIR,
  then pass --root DIR (or set MAMMO_DATA so that $MAMMO_DATA/mias is DIR)."""


def parse_info(path: str | Path) -> pd.DataFrame:
    """Parse Info.txt into one row per label line (refnum, tissue, class, severity, x, y, radius, line).

    Every line starting with `mdb` (any case) is a table row; rows of one image must agree with
    each other, as a skipped or contradictory row would silently change an image's label.

    Raises:
        DataError: a table line that does not follow the format, or that repeats or contradicts an
            earlier row of its image (a NORM row besides a lesion, another tissue), naming file and line.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError as error:
        raise DataError(path, f"cannot read label file ({error})") from None
    rows = []
    earlier: dict[str, list[tuple[int, list[str], dict]]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not _ROW.match(line):
            continue
        row = _parse_row(line, path, number)
        _check_agrees(row, line.split(), earlier.setdefault(row["refnum"], []), path)
        rows.append(row)
    if not rows:
        raise DataError(path, "no label rows found (expected lines like 'mdb001 G CIRC B 535 425 197')")
    return pd.DataFrame(rows)


def _check_agrees(row: dict, fields: list[str], same_image: list[tuple[int, list[str], dict]], path: Path) -> None:
    """Refuse a row that repeats or contradicts an earlier row of its image; then remember it."""
    number = row["line"]
    for first, first_fields, first_row in same_image:
        if fields == first_fields:
            raise DataError(path, f"{row['refnum']} is listed twice: this row repeats line {first} "
                                  f"({' '.join(fields)!r}); each lesion has one row", line=number)
        if row["tissue"] != first_row["tissue"]:
            raise DataError(path, f"{row['refnum']} has background tissue {row['tissue']!r} here but "
                                  f"{first_row['tissue']!r} on line {first}; an image has one tissue", line=number)
        if "NORM" in (row["mias_class"], first_row["mias_class"]):
            raise DataError(path, f"{row['refnum']} is both normal and abnormal: {' '.join(fields)!r} here and "
                                  f"{' '.join(first_fields)!r} on line {first}; a NORM row is an image's only "
                                  f"row", line=number)
    same_image.append((number, fields, row))


def _parse_row(line: str, path: Path, number: int) -> dict:
    fields = line.split()
    refnum, tissue, klass = (fields + ["", ""])[:3]
    if not _REFNUM.fullmatch(refnum):
        raise DataError(path, f"the reference number is 'mdb' and three digits, the image's file name "
                              f"(mdb001). Received: {refnum!r} in {line!r}", line=number)
    if tissue not in TISSUE:
        raise DataError(path, f"background tissue must be one of {sorted(TISSUE)}. "
                              f"Received: {tissue!r} in {line!r}", line=number)
    if klass not in CLASS_TO_ABNORMALITY:
        raise DataError(path, f"abnormality class must be one of {sorted(CLASS_TO_ABNORMALITY)}. "
                              f"Received: {klass!r} in {line!r}", line=number)
    row = {"refnum": refnum, "tissue": tissue, "mias_class": klass, "severity": "",
           "x": None, "y": None, "radius": None, "line": number}
    if klass == "NORM":
        if len(fields) != 3:
            raise DataError(path, f"a NORM row has exactly 3 fields. Received: {line!r}", line=number)
        return row
    if len(fields) < 4 or fields[3] not in SEVERITY:
        raise DataError(path, f"abnormal rows need severity B or M. Received: {line!r}", line=number)
    row["severity"] = fields[3]
    rest = fields[4:]
    if not rest or rest[0].startswith("*"):  # no coordinates ("*NOTE 3*": widely distributed calcs)
        return row
    if len(rest) != 3:
        raise DataError(path, f"coordinates are 'X Y RADIUS'. Received: {line!r}", line=number)
    try:
        x, y, radius = (float(value) for value in rest)
    except ValueError:
        raise DataError(path, f"X, Y and RADIUS must be numbers. Received: {line!r}", line=number) from None
    if not (0 <= x < IMAGE_SIZE and 0 < y <= IMAGE_SIZE):  # column X and row 1024 - Y in 0..1023
        raise DataError(path, f"lesion centre must lie in the {IMAGE_SIZE}x{IMAGE_SIZE} image: 0 <= X < "
                              f"{IMAGE_SIZE} and 0 < Y <= {IMAGE_SIZE} (Y counts from the bottom; row = "
                              f"{IMAGE_SIZE} - Y). Received: {line!r}", line=number)
    if not 0 < radius <= MAX_RADIUS:
        raise DataError(path, f"the radius must be positive and at most {MAX_RADIUS:g} pixels (a circle no "
                              f"wider than the {IMAGE_SIZE}-pixel image). Received: {line!r}", line=number)
    row.update(x=x, y=y, radius=radius)
    return row


def patient_of(refnum: str) -> str:
    """mdb(2k-1) and mdb(2k) share a patient: mdb001/mdb002 -> 'mias_p001'."""
    number = int(refnum[3:])
    return f"mias_p{(number + 1) // 2:03d}"


def laterality_of(refnum: str) -> str:
    """Info.txt note 1: even filename numbers are left breasts, odd numbers right."""
    return "L" if int(refnum[3:]) % 2 == 0 else "R"


def find_image(root: Path, refnum: str) -> Path | None:
    """The image file for `refnum` (`.pgm` preferred, then `.png`), or None."""
    for suffix in SUFFIXES:
        candidate = root / f"{refnum}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def check_image_size(image: Path) -> None:
    """Refuse an image that is not 1024 x 1024: Info.txt's coordinates (and row = 1024 - Y) are of that size.

    Read from the header only. A header that cannot be read is left to whoever reads the pixels
    (`data prepare` reports the file, or skips it with --skip-bad).

    Raises:
        DataError: naming the image and its size.
    """
    try:
        height, width, _ = header_size(image)
    except DataError:
        return
    if (height, width) != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(image, f"mini-MIAS images are {IMAGE_SIZE}x{IMAGE_SIZE} pixels, the size Info.txt's "
                               f"lesion coordinates refer to; this one is {width}x{height} (width x height). "
                               f"Use the files as distributed, not resized or cropped")


def read(root: str | Path, *, require_images: bool = True) -> pd.DataFrame:
    """Read mini-MIAS into the record table (one row per Info.txt label line).

    Args:
        root: folder with Info.txt and the mdbNNN images.
        require_images: raise when a labelled image file is missing.

    Returns:
        The record table; geometry in image pixels with row = 1024 - Y. Extra
        columns: tissue, mias_class (CIRC/SPIC/...), info_line.

    Raises:
        DataError: a bad Info.txt row, a missing image (with require_images), or an image that is
            not 1024 x 1024 (`check_image_size`).
    """
    root = Path(root)
    info = root / "Info.txt"
    if not info.is_file():
        raise DataError(info, f"Info.txt not found. Expected layout:\n{LAYOUT}")
    labels = parse_info(info)
    records = []
    lesion_counter: dict[str, int] = {}
    checked: set[str] = set()
    for row in labels.itertuples(index=False):
        image = find_image(root, row.refnum)
        if image is None and require_images:
            raise DataError(info, f"image file {row.refnum}.pgm/.png not found in {root}", line=row.line)
        if image is not None and row.refnum not in checked:
            check_image_size(image)
            checked.add(row.refnum)
        record = {
            "image_id": row.refnum, "patient_id": patient_of(row.refnum), "source": "mias",
            "path": str(image.resolve()) if image else "", "laterality": laterality_of(row.refnum),
            "view": "MLO",  # MIAS is a medio-lateral oblique collection
            "abnormality": CLASS_TO_ABNORMALITY[row.mias_class],
            "pathology": SEVERITY.get(row.severity, "normal"),
            "tissue": TISSUE[row.tissue], "mias_class": row.mias_class, "info_line": row.line,
        }
        if row.mias_class != "NORM":
            lesion_counter[row.refnum] = lesion_counter.get(row.refnum, 0) + 1
            record["lesion_id"] = f"{row.refnum}_{lesion_counter[row.refnum]}"
        if row.x is not None:
            record.update(circle_geometry(row.x, IMAGE_SIZE - row.y, row.radius))
        records.append(record)
    return make_table(records, origin=str(info))
