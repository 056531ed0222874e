"""Write tiny but real DICOM files with pydicom, for reader tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage,
                         generate_uid)


def write_dicom(path: str | Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2",
                bits_stored: int = 16, rle: bool = False, slope: float | None = None,
                intercept: float | None = None, window: tuple[float, float] | None = None,
                sop_uid: str | None = None, series_uid: str | None = None,
                study_uid: str | None = None, patient_id: str = "P_00001",
                laterality: str = "L", view: str = "CC", with_pixels: bool = True,
                extra: dict | None = None) -> Path:
    """Write `pixels` (2-D unsigned ints) as a DICOM file and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.PatientID = patient_id
    ds.Modality = "MG"
    ds.ImageLaterality = laterality
    ds.ViewPosition = view
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16 if bits_stored > 8 else 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or 0
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    if with_pixels:
        dtype = np.uint16 if ds.BitsAllocated == 16 else np.uint8
        ds.PixelData = np.ascontiguousarray(pixels.astype(dtype)).tobytes()
        if rle:
            ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)
    return path


def read_back(path: str | Path) -> pydicom.Dataset:
    return pydicom.dcmread(path)


def modality_lut(data, *, bits: int = 16, first: int = 0):
    """A Modality LUT Sequence (one item) mapping stored value `first + k` to `data[k]`."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.LUTDescriptor = [len(data), first, bits]
    item.add_new(0x00283006, "US", [int(v) for v in data])  # LUTData; US so it writes as numbers
    item.ModalityLUTType = "US"
    return Sequence([item])


def malformed_frames(path: str | Path, value: bytes = b"1A") -> Path:
    """Rewrite a file written with NumberOfFrames "11" so that the two-byte value reads `value`
    (pydicom refuses to write an invalid IS itself)."""
    path = Path(path)
    data = path.read_bytes()
    tag = b"\x28\x00\x08\x00IS\x02\x0011"  # (0028,0008) IS, length 2, explicit VR little endian
    if data.count(tag) != 1 or len(value) != 2:
        raise ValueError(f"{path}: expected one NumberOfFrames '11' element and a 2-byte value")
    path.write_bytes(data.replace(tag, tag[:-2] + value))
    return path
