"""A trivial mass detector: boxes on the brightest blobs, the floor a trained detector must clear.

Masses are denser than the fat around them, so they show as bright blobs. Per image:

    1. smooth with a Gaussian (`skimage.filters.gaussian`, `sigma` pixels);
    2. keep the breast: the largest connected Otsu-foreground region, holes filled (`breast_mask`),
       so film labels and markers outside it are never detected;
    3. local maxima of the smoothed image inside it (`skimage.feature.peak_local_max`), at most
       `max_detections`, at least `min_distance` apart;
    4. a box per maximum: a fixed `box_size` square centred on it, or (box_size=None) the extent of
       the connected region around it that is brighter than halfway between the peak and the
       breast's median (its half-maximum region), at most `max_box_size` on a side;
    5. score = the smoothed intensity at the maximum.

Detections come out as `evaluation.detection` scores them: per image `(boxes (n, 4) as
x0, y0, x1, y1 in pixels, scores (n,))`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.measure import label as label_regions


def breast_mask(image: np.ndarray) -> np.ndarray:
    """The largest connected region above the image's Otsu threshold, holes filled (all True if flat)."""
    image = np.asarray(image, dtype=np.float64)
    if not image.max() > image.min():
        return np.ones(image.shape, dtype=bool)
    regions = label_regions(image > threshold_otsu(image))
    sizes = np.bincount(regions.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(regions == int(np.argmax(sizes)))


def _square(centre_row: int, centre_col: int, side: int, shape: tuple[int, int]) -> tuple[float, ...]:
    """A side x side box centred on (row, col), shifted inside the image."""
    rows, cols = shape
    side_r, side_c = min(side, rows), min(side, cols)
    y0 = int(np.clip(centre_row - side_r // 2, 0, rows - side_r))
    x0 = int(np.clip(centre_col - side_c // 2, 0, cols - side_c))
    return float(x0), float(y0), float(x0 + side_c), float(y0 + side_r)


def _half_maximum_box(smoothed: np.ndarray, row: int, col: int, level: float, max_side: int) -> tuple[float, ...]:
    """Bounding box of the region >= level connected to (row, col), inside a max_side window on it."""
    rows, cols = smoothed.shape
    half = max_side // 2
    top, left = max(row - half, 0), max(col - half, 0)
    window = smoothed[top:min(row + half + 1, rows), left:min(col + half + 1, cols)]
    regions = label_regions(window >= level)
    region = regions == regions[row - top, col - left]
    ys, xs = np.nonzero(region)
    return float(left + xs.min()), float(top + ys.min()), float(left + xs.max() + 1), float(top + ys.max() + 1)


def brightest_blobs(image: np.ndarray, *, sigma: float = 4.0, max_detections: int = 10,
                    min_distance: int | None = None, box_size: int | None = None, max_box_size: int | None = None,
                    mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Boxes on the brightest blobs of one grey image (see the module docstring).

    Args:
        image: (H, W) grey image.
        sigma: Gaussian smoothing in pixels (about the radius of the smallest blob to find).
        max_detections: most boxes returned, brightest first.
        min_distance: smallest distance between two maxima (default 2 * sigma).
        box_size: side of a fixed square box; None sizes each box by its half-maximum region.
        max_box_size: largest side of a half-maximum box (default a quarter of the shorter side).
        mask: where maxima may lie (default `breast_mask(image)`).

    Returns:
        (boxes (n, 4) x0, y0, x1, y1, scores (n,)), scores descending.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W). Received: image.shape={image.shape}")
    if not sigma > 0:
        raise ValueError(f"`sigma` must be > 0. Received: sigma={sigma!r}")
    if not isinstance(max_detections, int) or isinstance(max_detections, bool) or max_detections < 1:
        raise ValueError(f"`max_detections` must be a positive integer. Received: max_detections={max_detections!r}")
    if box_size is not None and not (isinstance(box_size, int) and box_size >= 1):
        raise ValueError(f"`box_size` must be a positive integer or None. Received: box_size={box_size!r}")
    mask = breast_mask(image) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != image.shape:
        raise ValueError(f"mask must have the image's shape {image.shape}. Received: mask.shape={mask.shape}")
    smoothed = gaussian(image, sigma=sigma, preserve_range=True)
    distance = max(1, int(round(2 * sigma))) if min_distance is None else int(min_distance)
    peaks = peak_local_max(smoothed, min_distance=distance, num_peaks=max_detections,
                           labels=mask.astype(np.int32), exclude_border=False)
    if len(peaks) == 0:
        return np.zeros((0, 4)), np.zeros(0)
    scores = smoothed[peaks[:, 0], peaks[:, 1]]
    order = np.argsort(-scores, kind="stable")
    peaks, scores = peaks[order], scores[order]
    if box_size is not None:
        boxes = [_square(r, c, box_size, image.shape) for r, c in peaks]
    else:
        background = float(np.median(smoothed[mask]))
        side = max_box_size or max(3, min(image.shape) // 4)
        # A maximum darker than the breast's median gets the region at least as bright as itself.
        boxes = [_half_maximum_box(smoothed, r, c, min((s + background) / 2, s), side)
                 for (r, c), s in zip(peaks, scores)]
    return np.asarray(boxes, dtype=np.float64), np.asarray(scores, dtype=np.float64)


def detect(images: Sequence[np.ndarray] | np.ndarray, **options) -> list[tuple[np.ndarray, np.ndarray]]:
    """`brightest_blobs` on every image: the detections list `evaluation.detection` scores."""
    return [brightest_blobs(image, **options) for image in images]
