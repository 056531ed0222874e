"""Reader for the Coccomini/Pisa course CBIS-DDSM patch arrays.

Files per split (`train`, `public_test`, optional `private_test`):
`<split>_tensor.npy` (N x 150 x 150, or N x 150 x 150 x 1, uint16) and
`<split>_labels.npy` (N,). Labels: 0 baseline patch (healthy tissue next to the
lesion), 1 mass benign, 2 mass malignant, 3 calcification benign, 4 calcification
malignant. Abnormality patches sit at odd indices, each preceded (even index) by
its own baseline patch.

The arrays carry no patient ids, so each baseline/abnormality pair is its own
"patient": splits of these arrays cannot be grouped by woman (the course data
gives a fixed public test split instead).

Reference: Coccomini, Gholami, Zara 2021 (coccomini2021_cbis_patches), Ch. 3;
protocols_shen_coccomini_hamed.md B.1.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_keras.data.records import box_geometry, make_table
from mammo_keras.errors import DataError, DatasetNotFoundError

SPLITS = ("train", "public_test", "private_test")
BASELINE = 0
LABELS = {1: ("mass", "benign"), 2: ("mass", "malignant"),
          3: ("calcification", "benign"), 4: ("calcification", "malignant")}

NAME = "cocc"  # the dataset registry entry (mammo_keras.data); CLI name and $MAMMO_DATA folders below
FOLDERS = ('cocc',)  # sub-folders of a data root (--data DIR / $MAMMO_DATA) tried in order
ALIASES = ('cocc_npy', 'coccomini')
LICENCE = (  # the terms the data come with (model cards, README)
    "course arrays, not published (derived from CBIS-DDSM, CC BY 3.0; the course staff's terms apply)")
LAYOUT = """\
  <root>/train_tensor.npy         N x 150 x 150 uint16 (pairs: baseline at even, abnormality at odd)
  <root>/train_labels.npy         N labels: 0 baseline, 1/2 mass benign/malignant, 3/4 calc benign/malignant
  <root>/public_test_tensor.npy   <root>/public_test_labels.npy
  <root>/private_test_tensor.npy  <root>/private_test_labels.npy   (optional)"""
HOW_TO_GET = """\
  The arrays were handed out with the Computational Intelligence and Deep Learning course
  (University of Pisa, MSc AI & Data Engineering, A.Y. 2020/2021); they are not published.
  Ask the course staff, or rebuild them from CBIS-DDSM (https://www.cancerimagingarchive.net/
  collection/cbis-ddsm/): crop each ROI from its mask, take an adjacent non-overlapping
  baseline patch, resize both to 150 x 150 (nearest neighbour). Pass the folder as --root
  (or put it under $MAMMO_DATA/cocc)."""


@dataclass(frozen=True)
class PatchPairs:
    """Abnormality patches with their baseline patches; `labels` are in 1..4."""

    baseline: np.ndarray
    abnormal: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def split_files(root: str | Path, split: str = "train") -> tuple[Path, Path]:
    """(tensor file, labels file) of a split; raises when either is missing."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}. Received: split={split!r}")
    root = Path(root)
    tensor, labels = root / f"{split}_tensor.npy", root / f"{split}_labels.npy"
    for path in (tensor, labels):
        if not path.is_file():
            raise DatasetNotFoundError(f"cocc: {path} not found.\nExpected layout:\n{LAYOUT}\n"
                                       f"How to get it:\n{HOW_TO_GET}")
    return tensor, labels


def read_labels(root: str | Path, split: str = "train") -> np.ndarray:
    """The validated label array of a split (even indices 0, odd indices 1..4).

    Raises:
        DataError: not 1-D, odd length, or a broken pairing, naming the file and index.
    """
    labels_path = split_files(root, split)[1]
    labels = np.load(labels_path)
    _check_labels(labels, labels_path)
    return labels.astype(np.int64)


def load_pairs(root: str | Path, split: str = "train") -> PatchPairs:
    """Load a split as (baseline, abnormal, label) pairs of 150 x 150 patches.

    Raises:
        DataError: the tensor and labels disagree in length, a tensor is not N x H x W
            (x 1), or the pairing is broken, naming the file and index.
    """
    tensor_path, labels_path = split_files(root, split)
    labels = read_labels(root, split)
    tensor = np.load(tensor_path)
    tensor = _check_tensor(tensor, tensor_path, len(labels))
    return PatchPairs(baseline=tensor[0::2], abnormal=tensor[1::2], labels=labels[1::2])


def mass_vs_calcification(labels: np.ndarray) -> np.ndarray:
    """Binary targets for the mass/calcification task: calcification = 1.

    Reference: protocols_shen_coccomini_hamed.md B.8 item 14 (positive class).
    """
    labels = _abnormality_labels(labels)
    return (labels >= 3).astype(np.int64)


def benign_vs_malignant(labels: np.ndarray) -> np.ndarray:
    """Binary targets for the benign/malignant task: malignant = 1.

    Reference: protocols_shen_coccomini_hamed.md B.8 item 14 (positive class).
    """
    labels = _abnormality_labels(labels)
    return (labels % 2 == 0).astype(np.int64)


def read(root: str | Path, *, split: str = "train") -> pd.DataFrame:
    """Record table of a split: one row per abnormality patch (the whole patch is the lesion).

    `path` is the tensor file and `array_index` the row of the abnormality patch in it
    (`baseline_index` its baseline). `patient_id` is the pair id: the arrays have no
    patient ids, so patient-level grouping is not possible with this data.
    """
    tensor_path, _ = split_files(root, split)
    labels = read_labels(root, split)
    tensor = np.load(tensor_path, mmap_mode="r")
    _check_tensor(tensor, tensor_path, len(labels))
    height, width = tensor.shape[1:3]
    rows = []
    for pair, label in enumerate(labels[1::2]):
        abnormality, pathology = LABELS[int(label)]
        image_id = f"cocc_{split}_{pair:05d}"
        rows.append({"image_id": image_id, "patient_id": image_id, "lesion_id": f"{image_id}_lesion",
                     "path": str(tensor_path.resolve()), "source": "cocc", "abnormality": abnormality,
                     "pathology": pathology, **box_geometry(0, 0, width, height),
                     "array_index": 2 * pair + 1, "baseline_index": 2 * pair,
                     "label": int(label), "split": split})
    return make_table(rows, origin=str(tensor_path))


def _check_labels(labels: np.ndarray, path: Path) -> None:
    if labels.ndim != 1:
        raise DataError(path, f"labels must be a 1-D array. Received: shape {labels.shape}")
    if len(labels) % 2:
        raise DataError(path, f"labels come in (baseline, abnormality) pairs, so their number is even. "
                              f"Received: {len(labels)} labels")
    baseline = np.flatnonzero(labels[0::2] != BASELINE)
    if baseline.size:
        index = int(2 * baseline[0])
        raise DataError(path, f"index {index}: even indices hold baseline patches (label 0). "
                              f"Received: label {labels[index].item()!r}")
    abnormal = np.flatnonzero(~np.isin(labels[1::2], list(LABELS)))
    if abnormal.size:
        index = int(2 * abnormal[0] + 1)
        raise DataError(path, f"index {index}: odd indices hold abnormality patches (labels "
                              f"{sorted(LABELS)}). Received: label {labels[index].item()!r}")


def _check_tensor(tensor: np.ndarray, path: Path, count: int) -> np.ndarray:
    if tensor.ndim == 4 and tensor.shape[-1] == 1:
        tensor = tensor[..., 0]
    if tensor.ndim != 3:
        raise DataError(path, f"patch tensor must be N x H x W or N x H x W x 1. "
                              f"Received: shape {tensor.shape}")
    if tensor.shape[0] != count:
        raise DataError(path, f"tensor has {tensor.shape[0]} patches but the labels file has "
                              f"{count} labels; they must match one to one")
    return tensor


def _abnormality_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    bad = ~np.isin(labels, list(LABELS))
    if bad.any():
        raise ValueError(f"task labels are defined for abnormality labels {sorted(LABELS)} only "
                         f"(baseline patches, label 0, have no task label). "
                         f"Received: {labels[bad][0].item()!r} at index {int(np.flatnonzero(bad)[0])}")
    return labels.astype(np.int64)
