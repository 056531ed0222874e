"""Whole-image detection items from any reader's record table: one row per image, its boxes.

Which lesions count: the survey's detection systems find *masses*. The readers already map
each dataset's classes to `abnormality`; for mini-MIAS that is CIRC (circumscribed), SPIC
(spiculated) and MISC (ill-defined) masses, while ARCH (architectural distortion), ASYM and CALC
are not masses. An image enters the detection set when every one of its rows is a mass with a
known box (a positive image) or it is normal (a negative image). Images with another finding,
or a mass without coordinates (mini-MIAS mdb059), are left out: their true boxes are unknown, so
detections on them could be scored neither as hits nor as false positives.

Boxes: each reader fills `x0 y0 x1 y1` (CBIS-DDSM: ROI-mask extent; INbreast: XML contour extent;
BCDR: outline extent; MIAS: the circle's bounding square with row = 1024 - Y; phantom: the
rendered outline). Images are downsampled to the model's input; boxes scale with them.

Reference: Hamed et al. 2020, Sec. 2 (datasets) and Table 3 (detection systems).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mammo_keras.data.imageio import read_normalised
from mammo_keras.data.records import has_geometry
from mammo_keras.data.roi import resize

# ImageNet channel statistics used by keras-hub's ResNet image converter (torchvision's values).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
NORMALISATIONS = ("imagenet", "0_255")


def detection_items(table: pd.DataFrame, *, abnormality: str = "mass") -> pd.DataFrame:
    """One row per usable image: image_id, patient_id, path, source, label (1: has a lesion), boxes.

    `boxes` is a list of (x0, y0, x1, y1) tuples in the pixels of the image file.
    """
    rows = []
    for image_id, group in table.groupby("image_id", sort=True):
        normal = (group["abnormality"] == "normal").all()
        lesion = (group["abnormality"] == abnormality) & has_geometry(group)
        if not normal and not lesion.all():
            continue
        first = group.iloc[0]
        boxes = [] if normal else [tuple(float(v) for v in r) for r in group[["x0", "y0", "x1", "y1"]].to_numpy()]
        rows.append({"image_id": image_id, "patient_id": first["patient_id"], "path": first["path"],
                     "source": first["source"], "label": int(bool(boxes)), "n_lesions": len(boxes),
                     "pathology": first["pathology"] if normal else
                     ("malignant" if (group["pathology"] == "malignant").any() else "benign"),
                     "boxes": boxes})
    return pd.DataFrame(rows, columns=["image_id", "patient_id", "path", "source", "label",
                                       "n_lesions", "pathology", "boxes"])


def subsample_negatives(items: pd.DataFrame, ratio: float | None, *, seed: int) -> pd.DataFrame:
    """Keep at most `ratio` normal images per positive image (None keeps all), chosen by seed."""
    if ratio is None:
        return items
    negatives = items.index[items["label"] == 0]
    keep = min(len(negatives), int(round(ratio * int((items["label"] == 1).sum()))))
    chosen = np.random.default_rng(seed).choice(negatives, size=keep, replace=False) if keep else []
    return items[(items["label"] == 1) | items.index.isin(chosen)].reset_index(drop=True)


def load_images(items: pd.DataFrame, size: tuple[int, int]) -> tuple[np.ndarray, list[np.ndarray], list[float]]:
    """Images resized to `size` (rows, cols) in [0, 1], their boxes scaled alike, and the scale factors.

    Returns:
        (images (n, rows, cols) float32, boxes per image as (m, 4) arrays clipped to the image,
        the original width / new width of each image).
    """
    images, boxes, scales = [], [], []
    for row in items.itertuples(index=False):
        pixels = read_normalised(row.path).astype(np.float32)
        sy, sx = size[0] / pixels.shape[0], size[1] / pixels.shape[1]
        images.append(resize(pixels, size))
        image_boxes = np.asarray(row.boxes, dtype=np.float32).reshape(-1, 4) * np.float32([sx, sy, sx, sy])
        image_boxes[:, [0, 2]] = np.clip(image_boxes[:, [0, 2]], 0, size[1])
        image_boxes[:, [1, 3]] = np.clip(image_boxes[:, [1, 3]], 0, size[0])
        boxes.append(image_boxes)
        scales.append(1.0 / sx)
    return np.stack(images).astype(np.float32), boxes, scales


def fingerprint(items: pd.DataFrame) -> str:
    """sha256 of the image ids and boxes used: tells two runs on the same data apart from others."""
    text = "\n".join(f"{r.image_id}:{r.patient_id}:{r.boxes}" for r in items.itertuples(index=False))
    return hashlib.sha256(text.encode()).hexdigest()


def normalise(images: np.ndarray, mode: str) -> np.ndarray:
    """Grey [0, 1] images -> 3-channel model inputs ('imagenet': mean/std per channel; '0_255')."""
    if mode not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}. Received: mode={mode!r}")
    rgb = np.repeat(images[..., None], 3, axis=-1)
    if mode == "imagenet":
        return ((rgb - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)
    return (rgb * 255.0).astype(np.float32)


def hflip(images: np.ndarray, boxes: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Left-right mirrored images and boxes (a left breast becomes a right one)."""
    width = images.shape[2]
    flipped = [np.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], axis=1) if len(b) else b
               for b in boxes]
    return images[:, :, ::-1].copy(), flipped


def padded_targets(boxes: Sequence[np.ndarray], *, label_key: str = "labels") -> dict[str, np.ndarray]:
    """Ragged per-image boxes -> dense {"boxes": (n, m, 4), label_key: (n, m)} padded with -1."""
    width = max(1, max((len(b) for b in boxes), default=1))
    dense = np.full((len(boxes), width, 4), -1.0, dtype=np.float32)
    labels = np.full((len(boxes), width), -1.0, dtype=np.float32)
    for index, image_boxes in enumerate(boxes):
        dense[index, :len(image_boxes)] = image_boxes
        labels[index, :len(image_boxes)] = 0.0  # one class: mass
    return {"boxes": dense, label_key: labels}
