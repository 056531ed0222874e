"""The common record table every dataset reader returns.

One row per lesion (an image with two lesions has two rows; a normal image has one
row with `abnormality == "normal"`). Geometry is in pixel coordinates of the image
file as read: x is the column, y is the row, origin top-left, boxes half-open
`[x0, x1) x [y0, y1)`. Unknown geometry is NaN, never a guess.

Columns (all readers fill every one; extra dataset-specific columns may follow):

    image_id     unique id of the image file
    patient_id   the woman; splits group on it
    lesion_id    unique per lesion row ("" for normal rows)
    path         absolute path of the image file
    source       reader name: mias, cbis_ddsm, inbreast, bcdr, cocc, vindr_mammo, cmmd,
                 rsna_screening, phantom
    laterality   "L", "R" or "" when unknown
    view         "CC", "MLO" or "" when unknown
    abnormality  mass, calcification, distortion, asymmetry, normal, or other (a finding
                 of another or unknown kind; kept for its image label)
    pathology    benign, malignant, normal (or "" when the dataset has no label)
    x0 y0 x1 y1  lesion bounding box (float, NaN when unknown)
    cx cy radius lesion circle (MIAS) or the box's centre and half-diagonal
    contour      list of (x, y) points, or None
    mask_path    lesion mask file ("" when there is none)
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from mammo_keras.errors import DataError
from mammo_keras.vocabulary import ABNORMALITIES  # noqa: F401 - the lesion types configs check against

COLUMNS: tuple[str, ...] = (
    "image_id", "patient_id", "lesion_id", "path", "source", "laterality", "view",
    "abnormality", "pathology", "x0", "y0", "x1", "y1", "cx", "cy", "radius",
    "contour", "mask_path",
)
GEOMETRY = ("x0", "y0", "x1", "y1", "cx", "cy", "radius")
PATHOLOGIES = ("benign", "malignant", "normal", "")
LATERALITIES = ("L", "R", "")
VIEWS = ("CC", "MLO", "")
_SEVERITY = {"": -1, "normal": 0, "benign": 1, "malignant": 2}


def circle_geometry(cx: float, cy: float, radius: float) -> dict[str, float]:
    """Box and circle columns for a lesion given as a circle (MIAS)."""
    return {
        "x0": cx - radius, "y0": cy - radius, "x1": cx + radius, "y1": cy + radius,
        "cx": float(cx), "cy": float(cy), "radius": float(radius),
    }


def box_geometry(x0: float, y0: float, x1: float, y1: float) -> dict[str, float]:
    """Box and circle columns for a lesion given as a box; the circle encloses the box."""
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    return {
        "x0": float(x0), "y0": float(y0), "x1": float(x1), "y1": float(y1),
        "cx": cx, "cy": cy, "radius": math.hypot(x1 - x0, y1 - y0) / 2.0,
    }


def contour_geometry(points: Sequence[tuple[float, float]]) -> dict:
    """Box, circle and contour columns for a lesion outlined by (x, y) points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        raise ValueError("A contour needs at least one point. Received: 0 points")
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0) + 1.0
    geometry = box_geometry(x0, y0, x1, y1)
    geometry["contour"] = [(float(x), float(y)) for x, y in pts]
    return geometry


def mask_geometry(mask: np.ndarray) -> dict[str, float] | None:
    """Box of the non-zero pixels of a lesion mask, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    return box_geometry(cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)


def make_table(rows: Iterable[dict], *, origin: str = "<records>") -> pd.DataFrame:
    """Build and validate a record table from dicts; missing columns get defaults."""
    frame = pd.DataFrame(list(rows))
    defaults: dict[str, object] = {c: "" for c in COLUMNS}
    defaults.update({c: np.nan for c in GEOMETRY})
    defaults["contour"] = None
    for column, default in defaults.items():
        if column not in frame.columns:
            frame[column] = [default] * len(frame) if column == "contour" else default
    frame["contour"] = [c if isinstance(c, list) else None for c in frame["contour"]]
    extra = [c for c in frame.columns if c not in COLUMNS]
    frame = frame[list(COLUMNS) + extra]
    for column in GEOMETRY:
        frame[column] = frame[column].astype(np.float64)
    for column in ("image_id", "patient_id", "lesion_id", "path", "source", "laterality",
                   "view", "abnormality", "pathology", "mask_path"):
        frame[column] = frame[column].fillna("").astype(str)
    frame["patient_id"], merged = normalise_patient_ids(frame["patient_id"])
    validate(frame, origin=origin)
    frame = frame.reset_index(drop=True)
    if merged:
        frame.attrs["problems"] = list(frame.attrs.get("problems", [])) + merged
    return frame


def normalise_patient_ids(ids: pd.Series) -> tuple[pd.Series, list[str]]:
    """Patient ids without surrounding spaces, and one spelling for ids that differ only by case.

    "P_001", " P_001" and "p_001" are one woman typed three ways; counting them as three would
    let her images land on both sides of a split. The most common spelling (the first seen on a
    tie) is kept. Returns the ids and one problem text per merged group, for `attrs["problems"]`.
    """
    stripped = ids.str.strip()
    keys = stripped.str.casefold()
    canonical, problems = {}, []
    for key, group in stripped.groupby(keys, sort=True):
        counts = group.value_counts(sort=False)
        canonical[key] = max(counts.index, key=lambda spelling: counts[spelling])  # first seen wins ties
        spellings = sorted(set(ids[group.index]))
        if len(spellings) > 1:
            problems.append(f"patient ids {spellings} differ only by case or surrounding spaces: "
                            f"merged as {canonical[key]!r}")
    return keys.map(canonical).astype(str), problems


def validate(table: pd.DataFrame, *, origin: str = "<records>") -> None:
    """Raise DataError when the table breaks the schema.

    Checks: every column present, controlled vocabularies, one patient per image,
    unique lesion ids, boxes with positive size, and normal rows without a lesion.
    """
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise DataError(origin, f"record table lacks columns {missing}")
    for column, allowed in (("abnormality", ABNORMALITIES), ("pathology", PATHOLOGIES),
                            ("laterality", LATERALITIES), ("view", VIEWS)):
        bad = sorted(set(table[column]) - set(allowed))
        if bad:
            raise DataError(origin, f"column {column!r} must be one of {list(allowed)}. "
                                    f"Received: {bad}")
    if (table["image_id"] == "").any():
        raise DataError(origin, "every row needs an image_id")
    if (table["patient_id"] == "").any():
        raise DataError(origin, "every row needs a patient_id")
    patients_per_image = table.groupby("image_id")["patient_id"].nunique()
    if (patients_per_image > 1).any():
        image = patients_per_image[patients_per_image > 1].index[0]
        raise DataError(origin, f"image {image!r} is assigned to more than one patient")
    lesions = table.loc[table["lesion_id"] != "", "lesion_id"]
    if lesions.duplicated().any():
        raise DataError(origin, f"duplicate lesion_id {lesions[lesions.duplicated()].iloc[0]!r}")
    boxed = table[["x0", "y0", "x1", "y1"]].notna().all(axis=1)
    flat = boxed & ((table["x1"] <= table["x0"]) | (table["y1"] <= table["y0"]))
    if flat.any():
        row = table[flat].iloc[0]
        raise DataError(origin, f"lesion {row['lesion_id']!r} of image {row['image_id']!r} "
                                f"has an empty box ({row['x0']}, {row['y0']}, {row['x1']}, {row['y1']})")
    normal = table["abnormality"] == "normal"
    if (normal & (table["pathology"] != "normal")).any():
        raise DataError(origin, "rows with abnormality 'normal' must have pathology 'normal'")


def has_geometry(table: pd.DataFrame) -> pd.Series:
    """Rows whose lesion has a known bounding box."""
    return table[["x0", "y0", "x1", "y1"]].notna().all(axis=1)


def lesions(table: pd.DataFrame, *, abnormality: str | None = None,
            with_geometry: bool = True) -> pd.DataFrame:
    """Lesion rows (not normal), optionally of one abnormality type and with a known box."""
    keep = table["abnormality"] != "normal"
    if abnormality is not None:
        keep &= table["abnormality"] == abnormality
    if with_geometry:
        keep &= has_geometry(table)
    return table[keep].reset_index(drop=True)


def image_labels(table: pd.DataFrame) -> pd.DataFrame:
    """One row per image; an image with a benign and a malignant lesion is malignant."""
    severity = table["pathology"].map(_SEVERITY)
    worst = table.assign(_severity=severity).sort_values("_severity", kind="stable")
    images = worst.groupby("image_id", sort=False).tail(1).drop(columns="_severity")
    counts = table.groupby("image_id").size().rename("n_rows")
    images = images.join(counts, on="image_id")
    return images.sort_values("image_id").reset_index(drop=True)


def summary(table: pd.DataFrame) -> dict[str, object]:
    """Counts a person checks first: images, patients, rows, classes, views, lesion types."""
    images = image_labels(table)
    return {
        "rows": len(table),
        "images": len(images),
        "patients": int(table["patient_id"].nunique()),
        "images_by_pathology": images["pathology"].value_counts().sort_index().to_dict(),
        "lesions_by_abnormality": lesions(table, with_geometry=False)["abnormality"]
        .value_counts().sort_index().to_dict(),
        "lesions_with_geometry": int((has_geometry(table) & (table["abnormality"] != "normal")).sum()),
        "images_by_view": images["view"].replace("", "unknown").value_counts().sort_index().to_dict(),
        "images_by_laterality": images["laterality"].replace("", "unknown").value_counts()
        .sort_index().to_dict(),
    }
