"""Synthetic full-size CBIS-DDSM cases in the TCIA download layout, for the prepare benchmark.

Each case is one full mammogram (16-bit MONOCHROME2, RLE Lossless, 4500 x 3000 by default: a
breast-shaped bright region with a mass and noise on a black background), its ROI mask (8-bit,
RLE, the full image's size) and its cropped ROI (16-bit), in the NBIA Data Retriever's
"Descriptive" folders, with the mass training description CSV beside them; the CSV names files
by DICOM UIDs, which the reader resolves through the headers (as for the real download).
Encoding RLE is slow (seconds per image), so one template of each file is encoded and every
case is a copy with its own patient id and UIDs (the compressed pixel data copied as is).
"""
from __future__ import annotations

import copy
import csv
from pathlib import Path

import numpy as np

UID_ROOT = "1.3.6.1.4.1.9590.100.1.2."
HEADER = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
          "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
          "image file path", "cropped image file path", "ROI mask file path"]


def _dataset(pixels: np.ndarray, bits: int):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("template", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SamplesPerPixel, ds.PhotometricInterpretation = "MG", 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16 if bits > 8 else 8
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint16 if bits > 8 else np.uint8)).tobytes()
    ds.compress(RLELossless)
    return ds


def templates(shape: tuple[int, int] = (4500, 3000), seed: int = 0) -> dict:
    """The three encoded template datasets (full image, mask, crop) and the lesion box (x0, y0, x1, y1)."""
    rng = np.random.default_rng(seed)
    height, width = shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    breast = (xx / width) ** 2 + ((yy - height / 2) / (height / 2)) ** 2 < 0.8
    cy, cx, radius = height * 0.48, width * 0.3, min(shape) * 0.05
    mass = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius * radius))
    image = np.where(breast, 1800.0 + 900.0 * mass + rng.normal(0, 60, shape), 0.0)
    image = np.clip(image, 0, 4095).astype(np.uint16)
    box = (int(cx - 2 * radius), int(cy - 2 * radius), int(cx + 2 * radius), int(cy + 2 * radius))
    mask = np.zeros(shape, np.uint8)
    mask[box[1]:box[3], box[0]:box[2]] = 255
    crop = image[box[1]:box[3], box[0]:box[2]]
    return {"image": _dataset(image, 12), "mask": _dataset(mask, 8), "crop": _dataset(crop, 12), "box": box}


def write_cases(root: str | Path, n: int, made: dict) -> Path:
    """Write `n` cases (one mass each) under `root` in the TCIA layout; returns `root`."""
    root = Path(root)
    rows, counter = [], iter(range(1000, 10 ** 9))
    for case in range(n):
        subject = f"Mass-Training_P_{case + 1:05d}_{'LEFT' if case % 2 else 'RIGHT'}_{'CC' if case % 3 else 'MLO'}"
        lesion = f"{subject}_1"
        paths = {}
        for kind, who, label in (("image", subject, "full mammogram images"), ("crop", lesion, "cropped images"),
                                 ("mask", lesion, "ROI mask images")):
            study, series = f"{UID_ROOT}{next(counter)}", f"{UID_ROOT}{next(counter)}"
            ds = copy.copy(made[kind])
            ds.file_meta = copy.copy(made[kind].file_meta)
            ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = who, study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{UID_ROOT}{next(counter)}"
            path = (root / "CBIS-DDSM" / who / f"07-20-2016-DDSM-{study[-5:]}" / f"1.000000-{label}-{series[-5:]}"
                    / "1-1.dcm")
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            paths[kind] = f"{who}/{study}/{series}/000000.dcm"
        patient = "_".join(subject.split("_")[1:3])
        side, view = subject.split("_")[3:5]
        rows.append([patient, 3, side, view, 1, "mass", "IRREGULAR", "SPICULATED", 4,
                     "MALIGNANT" if case % 2 else "BENIGN", 5, paths["image"], paths["crop"], paths["mask"]])
    with open(root / "mass_case_description_train_set.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([HEADER, *rows])
    return root
