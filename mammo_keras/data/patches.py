"""Patch sampling around lesions: Shen 2017 S1/S10 sets and Coccomini baseline pairs.

Coordinates follow `mammo_keras.data.records`: x is the column, y the row, boxes are
half-open `(x0, y0, x1, y1)`. Shen samples from images down-sized to 1152x896
(rows x columns, aspect ratio not kept); scale the record geometry with
`resize_factors` + `scale_geometry` before sampling. Scaling treats coordinates as
continuous (pixel edges): x' = x * scale_x, so a box keeps covering the same tissue.

Decisions where the papers are silent (protocols_shen_coccomini_hamed.md A.7.3, B.8.1):
    centre        "centred on the ROI" = the centre of the ROI bounding box.
    overlap ratio the fraction of the ROI bounding box, clipped to a patch-size window
                  centred on the ROI, that the patch covers (see `overlap_ratio`). A ROI
                  larger than the patch can therefore still reach ratio 1.
    S10 positives centres drawn uniformly in that clipped ROI window, kept when the ratio
                  is >= min_overlap (the released code draws centres in the ROI box too).
    background    any patch position with no overlap with any lesion box of the image
                  and at least `min_tissue` breast tissue (`tissue_mask`); the released
                  code allowed overlap up to 0.35. The same rule draws background patches
                  from normal images (`sample_background_patches` with no boxes), which
                  Shen's CBIS-DDSM sets do not have (mini-MIAS: the prepare option
                  `normal_images`).
    borders       patches never leave the image: the centre is clipped, so a patch near
                  the border is shifted inwards rather than padded.
    ROI checks    a box reaching more than 1 pixel outside the image is a DataError
                  (rounding from scaling may push an edge by less than that).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mammo_keras.errors import DataError

SHEN_IMAGE_SIZE = (1152, 896)
# Shen 2017 Sec. 2.1: "benign-calcification, malignant-calcification, benign-mass,
# malignant-mass and background"; background takes 0 as in the released code.
SHEN_CLASSES = ("background", "benign_calcification", "malignant_calcification",
                "benign_mass", "malignant_mass")
SHEN_LABELS = {("calcification", "benign"): 1, ("calcification", "malignant"): 2,
               ("mass", "benign"): 3, ("mass", "malignant"): 4}
BORDER_TOLERANCE = 1.0

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Patch:
    """A square crop: pixels, class label, box (x0, y0, x1, y1) and its lesion ("" for background)."""

    array: np.ndarray
    label: int
    box: Box
    lesion_id: str


def shen_label(abnormality: str, pathology: str) -> int:
    """Shen's 5-class patch label of a lesion (0 is background).

    Reference: Shen et al. 2017, Sec. 2.1 and 3.1.1 (five patch classes).
    """
    key = (abnormality, pathology)
    if key not in SHEN_LABELS:
        raise ValueError("Shen patch classes cover benign/malignant masses and calcifications. "
                         f"Valid (abnormality, pathology): {sorted(SHEN_LABELS)}. Received: {key}")
    return SHEN_LABELS[key]


def resize_factors(original_shape: tuple[int, int],
                   target_shape: tuple[int, int] = SHEN_IMAGE_SIZE) -> tuple[float, float]:
    """(scale_x, scale_y) that map geometry of `original_shape` (rows, columns) onto `target_shape`."""
    return target_shape[1] / original_shape[1], target_shape[0] / original_shape[0]


def scale_geometry(table: pd.DataFrame, *, scale_x: float, scale_y: float) -> pd.DataFrame:
    """A copy of a record table with boxes, circles and contours scaled to a resized image.

    The radius is scaled by sqrt(scale_x * scale_y), which keeps the circle's area.
    """
    scaled = table.copy()
    for column in ("x0", "x1", "cx"):
        scaled[column] = table[column] * scale_x
    for column in ("y0", "y1", "cy"):
        scaled[column] = table[column] * scale_y
    scaled["radius"] = table["radius"] * math.sqrt(scale_x * scale_y)
    scaled["contour"] = [None if contour is None or not isinstance(contour, (list, tuple)) else
                         [(x * scale_x, y * scale_y) for x, y in contour]
                         for contour in table["contour"]]
    return scaled


def tissue_mask(image: np.ndarray, *, level: float = 0.05) -> np.ndarray:
    """Breast tissue (True) vs dark background: pixels above min + level * (p99.5 - min)."""
    low = float(image.min())
    high = float(np.percentile(image, 99.5))
    return image > low + level * (high - low)


def overlap_ratio(patch_box: Box, roi_box: tuple[float, float, float, float],
                  patch_size: int) -> float:
    """Fraction of the ROI covered by a patch, the ROI clipped to a patch-size window.

    The ROI box is first clipped, along each axis where it is longer than
    `patch_size`, to the `patch_size` window centred on the ROI centre; the ratio is
    the area of that clipped ROI inside the patch divided by its own area.

    Reference: Shen et al. 2017, Sec. 3.1.1 ("minimum overlapping ratio of 0.9"; the
    measure itself is not defined there, this is our decision).
    """
    window = _clipped_roi(roi_box, patch_size)
    width = min(patch_box[2], window[2]) - max(patch_box[0], window[0])
    height = min(patch_box[3], window[3]) - max(patch_box[1], window[1])
    area = (window[2] - window[0]) * (window[3] - window[1])
    return max(width, 0.0) * max(height, 0.0) / area


def sample_shen_patches(image: np.ndarray, lesions: pd.DataFrame | Iterable[Mapping], *,
                        patch_size: int = 224, per_roi: int = 1, min_overlap: float = 0.9,
                        min_tissue: float = 0.75, rng: np.random.Generator,
                        origin: str = "<image>") -> list[Patch]:
    """Shen's S1 (per_roi=1) or S10 (per_roi=10) patches from one down-sized image.

    Per ROI: S1 takes one patch centred on the ROI box; S10 takes `per_roi` patches
    with `overlap_ratio >= min_overlap`. Each ROI also adds the same number of random
    background patches (label 0) from the same image. Images without lesions give no
    patches; when no background position exists a warning names the image.

    Args:
        image: 2-D array, already resized (Shen: 1152x896) with its geometry scaled.
        lesions: record rows of this image (lesion_id, abnormality, pathology, x0..y1);
            normal rows and rows without a box are skipped.
        origin: the image file, named in errors.

    Reference: Shen et al. 2017, Sec. 3.1.1 (S1 and S10 patch sets).
    """
    if per_roi < 1:
        raise ValueError(f"per_roi must be at least 1. Received: per_roi={per_roi}")
    rows = _lesion_rows(lesions)
    _check_patch_fits(image.shape, patch_size)
    boxes = [_roi_box(row, image.shape, origin) for row in rows]
    patches = []
    for row, box in zip(rows, boxes):
        label = shen_label(row["abnormality"], row["pathology"])
        if per_roi == 1:
            centres = [((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)]
        else:
            centres = _centres_around(box, image.shape, patch_size, per_roi, min_overlap, rng)
        for centre in centres:
            patch_box = centred_box(centre, patch_size, image.shape)
            patches.append(Patch(_crop(image, patch_box), label, patch_box, str(row["lesion_id"])))
    patches += sample_background_patches(image, boxes, count=per_roi * len(rows), patch_size=patch_size,
                                         min_tissue=min_tissue, rng=rng, origin=origin)
    return patches


def sample_background_patches(image: np.ndarray, lesion_boxes: Iterable[tuple[float, ...]], *, count: int,
                              patch_size: int = 224, min_tissue: float = 0.75, rng: np.random.Generator,
                              origin: str = "<image>") -> list[Patch]:
    """`count` random background patches (label 0) of one image: in the breast, off every lesion.

    Positions are drawn uniformly among all valid top-left corners (`background_positions`: no
    overlap with any of `lesion_boxes`, at least `min_tissue` breast tissue), with replacement only
    when fewer positions than `count` exist. A normal image passes no boxes. When no position
    exists a warning names the image and no patch is returned.

    Reference: Shen et al. 2017, Sec. 3.1.1 (background patches of the S1/S10 sets).
    """
    if count < 1:
        return []
    _check_patch_fits(image.shape, patch_size)
    positions = background_positions(image, lesion_boxes, patch_size=patch_size, min_tissue=min_tissue)
    if len(positions) == 0:
        warnings.warn(f"{origin}: no background patch of {patch_size}px fits outside the "
                      f"lesions with {min_tissue:.0%} tissue; none sampled", stacklevel=3)
        return []
    chosen = rng.choice(len(positions), size=count, replace=len(positions) < count)
    patches = []
    for x0, y0 in positions[chosen]:
        patch_box = (int(x0), int(y0), int(x0) + patch_size, int(y0) + patch_size)
        patches.append(Patch(_crop(image, patch_box), 0, patch_box, ""))
    return patches


def centred_box(centre: tuple[float, float], patch_size: int, image_shape: tuple[int, ...]) -> Box:
    """The patch box centred on (x, y), shifted inwards where it would leave the image.

    The top-left corner is round-half-up of centre - patch_size / 2, so a patch
    of even size is exactly centred on an integer or half-integer centre.
    """
    height, width = image_shape[:2]
    x0 = int(np.clip(math.floor(centre[0] - patch_size / 2 + 0.5), 0, width - patch_size))
    y0 = int(np.clip(math.floor(centre[1] - patch_size / 2 + 0.5), 0, height - patch_size))
    return x0, y0, x0 + patch_size, y0 + patch_size


def background_positions(image: np.ndarray, lesion_boxes: Iterable[tuple[float, ...]], *,
                         patch_size: int, min_tissue: float = 0.75,
                         tissue: np.ndarray | None = None) -> np.ndarray:
    """Top-left (x, y) of every patch with no lesion overlap and enough breast tissue.

    Computed exactly over all positions with an integral image, so "impossible" is
    an empty array rather than a sampling loop that gives up.
    """
    tissue = tissue_mask(image) if tissue is None else tissue
    height, width = image.shape[:2]
    integral = np.pad(tissue.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    p = patch_size
    counts = (integral[p:, p:] - integral[:-p, p:] - integral[p:, :-p] + integral[:-p, :-p])
    valid = counts >= min_tissue * p * p
    for x0, y0, x1, y1 in lesion_boxes:
        # A top-left (x, y) overlaps [x0, x1) iff x < x1 and x + p > x0.
        left, top = max(math.floor(x0) - p + 1, 0), max(math.floor(y0) - p + 1, 0)
        valid[top:max(math.ceil(y1), 0), left:max(math.ceil(x1), 0)] = False
    ys, xs = np.nonzero(valid)
    return np.stack([xs, ys], axis=1)


def baseline_box(image_shape: tuple[int, ...], box: tuple[float, float, float, float], *,
                 tissue: np.ndarray, min_tissue: float = 0.75,
                 rng: np.random.Generator | None = None) -> Box | None:
    """An adjacent box of the lesion box's size (left, right, top or bottom, touching, no overlap).

    It must lie fully inside the image with at least `min_tissue` breast tissue.
    Without `rng` the candidate with the most tissue wins (ties: left, right, top,
    bottom); with `rng` one valid candidate is drawn at random. None when none fits.
    """
    x0, y0, x1, y1 = _integer_box(box)
    width, height = x1 - x0, y1 - y0
    candidates = [(x0 - width, y0, x0, y1), (x1, y0, x1 + width, y1),
                  (x0, y0 - height, x1, y0), (x0, y1, x1, y1 + height)]
    rows, cols = image_shape[:2]
    scored = []
    for cand in candidates:
        if cand[0] < 0 or cand[1] < 0 or cand[2] > cols or cand[3] > rows:
            continue
        fraction = float(tissue[cand[1]:cand[3], cand[0]:cand[2]].mean())
        if fraction >= min_tissue:
            scored.append((fraction, cand))
    if not scored:
        return None
    if rng is not None:
        return scored[int(rng.integers(len(scored)))][1]
    return max(scored, key=lambda item: item[0])[1]


def baseline_pair(image: np.ndarray, box: tuple[float, float, float, float], *, size: int = 150,
                  min_tissue: float = 0.75, rng: np.random.Generator | None = None,
                  origin: str = "<image>") -> tuple[np.ndarray, np.ndarray] | None:
    """Coccomini's (abnormality, baseline) pair, both resized to size x size nearest-neighbour.

    The abnormality patch is the lesion box crop; the baseline is `baseline_box`.
    Returns None when no baseline fits (the course data drops such lesions).

    Reference: Coccomini et al. 2021, Ch. 6 (baseline patches); course data
    description in protocols_shen_coccomini_hamed.md B.1.
    """
    checked = _roi_box({"lesion_id": "", "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3]},
                       image.shape, origin)
    lesion = _integer_box(checked)
    found = baseline_box(image.shape, lesion, tissue=tissue_mask(image), min_tissue=min_tissue,
                         rng=rng)
    if found is None:
        return None
    return resize_nearest(_crop(image, lesion), size), resize_nearest(_crop(image, found), size)


def resize_nearest(array: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize with OpenCV INTER_NEAREST indexing: src = floor(dst * src_n / dst_n)."""
    rows, cols = (size, size) if isinstance(size, int) else size
    row_index = np.floor(np.arange(rows) * (array.shape[0] / rows)).astype(int)
    col_index = np.floor(np.arange(cols) * (array.shape[1] / cols)).astype(int)
    return array[np.minimum(row_index, array.shape[0] - 1)][:, np.minimum(col_index, array.shape[1] - 1)]


def _centres_around(box, image_shape, patch_size, count, min_overlap, rng, max_draws=1000):
    """`count` centres in the clipped ROI window whose patches reach `min_overlap`."""
    window = _clipped_roi(box, patch_size)
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    centres = []
    for _ in range(max_draws):
        candidate = (rng.uniform(window[0], window[2]), rng.uniform(window[1], window[3]))
        patch_box = centred_box(candidate, patch_size, image_shape)
        if overlap_ratio(patch_box, box, patch_size) >= min_overlap:
            centres.append(candidate)
            if len(centres) == count:
                return centres
    # The ROI centre always reaches ratio 1, so it fills in after unlucky draws.
    return centres + [centre] * (count - len(centres))


def _clipped_roi(box, patch_size):
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = patch_size / 2
    return max(x0, cx - half), max(y0, cy - half), min(x1, cx + half), min(y1, cy + half)


def _lesion_rows(lesions) -> list[dict]:
    if isinstance(lesions, pd.DataFrame):
        rows = lesions.to_dict("records")
    else:
        rows = [dict(row) for row in lesions]
    return [row for row in rows if row.get("abnormality") != "normal"
            and all(pd.notna(row.get(key)) for key in ("x0", "y0", "x1", "y1"))]


def _roi_box(row: Mapping, image_shape, origin: str) -> tuple[float, float, float, float]:
    """The ROI box clipped to the image; DataError when it reaches clearly outside."""
    height, width = image_shape[:2]
    x0, y0, x1, y1 = (float(row[key]) for key in ("x0", "y0", "x1", "y1"))
    tol = BORDER_TOLERANCE
    clipped = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
    outside = x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol
    if outside or clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise DataError(origin, f"lesion {row.get('lesion_id', '')!r} box ({x0}, {y0}, {x1}, {y1}) "
                                f"is empty or lies outside the {width}x{height} image (columns x "
                                f"rows); was its geometry scaled to the resized image?")
    return clipped


def _check_patch_fits(image_shape, patch_size: int) -> None:
    if patch_size < 1 or patch_size > min(image_shape[:2]):
        raise ValueError(f"patch_size must be between 1 and the image's shorter side "
                         f"{min(image_shape[:2])}. Received: patch_size={patch_size}")


def _integer_box(box) -> Box:
    x0, y0, x1, y1 = box
    return math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)


def _crop(image: np.ndarray, box: Box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1].copy()
