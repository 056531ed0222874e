"""DICOM to float array in one place.

Order of operations (DICOM PS3.3 C.11): stored values -> Modality LUT (rescale
slope/intercept) -> VOI LUT or window centre/width when the file carries one ->
MONOCHROME1 inverted so that dense tissue is always bright.

Transfer syntaxes: uncompressed and RLE Lossless decode with pydicom alone.
JPEG baseline/extended need Pillow (installed); JPEG Lossless, JPEG-LS and
JPEG 2000 need the optional plugins `pylibjpeg pylibjpeg-libjpeg
pylibjpeg-openjpeg` (or `python-gdcm`); without them the error says so. JPEG 2000 (many
RSNA 2023 files) needs only `pylibjpeg pylibjpeg-openjpeg`, the `jpeg2000` extra.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from mammo_keras.data.limits import check_pixel_count
from mammo_keras.errors import DataError

try:  # pydicom >= 3
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
except ImportError:  # pragma: no cover - pydicom 2.x
    from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

PLUGIN_HINT = ("install the optional decoders with "
               "`pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg` (or python-gdcm)")
JPEG2000_HINT = ("JPEG 2000 needs an optional decoder: `pip install pylibjpeg pylibjpeg-openjpeg` "
                 "(or `pip install mammo_keras[jpeg2000]`)")
# JPEG 2000 and High-Throughput JPEG 2000 transfer syntaxes (DICOM PS3.5 A.4.4, A.4.11).
JPEG2000_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
                               "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"})


def decoder_hint(syntax) -> str:
    """What to install to decode pixel data of transfer syntax `syntax`."""
    return JPEG2000_HINT if str(syntax) in JPEG2000_SYNTAXES else PLUGIN_HINT


def read_header(path: str | Path) -> pydicom.Dataset:
    """The DICOM header without pixel data (fast: used to resolve UIDs)."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError) as error:
        raise DataError(path, f"not a readable DICOM file ({error})") from None


def number_of_frames(dataset: pydicom.Dataset, path: str | Path) -> int:
    """NumberOfFrames (1 when absent), or a DataError naming the file for a malformed value ('1A')."""
    with warnings.catch_warnings():  # pydicom warns about an invalid IS value before failing on it
        warnings.simplefilter("ignore")
        element = dataset.get("NumberOfFrames", None)
        try:
            return int(element or 1)
        except (TypeError, ValueError):
            raise DataError(path, "NumberOfFrames must be a whole number. "
                                  f"Received: NumberOfFrames={str(element)!r}") from None


def header_size(path: str | Path) -> tuple[int, int, int]:
    """(Rows, Columns, NumberOfFrames) from the header alone, without reading the pixel data."""
    header = read_header(path)
    return int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0), number_of_frames(header, path)


def value_range(dataset: pydicom.Dataset, *, voi_applied: bool) -> tuple[float, float]:
    """The lowest and highest value the pixels can take after the LUTs (not the image's own).

    With a Modality LUT Sequence, the values the LUT maps the stored range to (a LUT taking
    8-bit values to 0..1020 gives 0..1020); windowed after such a LUT, 0 .. 2**bits - 1 of its
    descriptor, as pydicom's `apply_windowing` outputs. RescaleSlope/Intercept count only when both
    are given, as pydicom's `apply_modality_lut` rescales only then (the standard requires the pair):
    a file with one of them is read unrescaled, and its range must be the stored one.
    """
    if voi_applied and "VOILUTSequence" in dataset:
        bits = int(dataset.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2 ** bits - 1)
    bits = int(dataset.get("BitsStored", 16))
    low, high = ((0, 2 ** bits - 1) if int(dataset.get("PixelRepresentation", 0)) == 0
                 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
    if dataset.get("ModalityLUTSequence"):
        if voi_applied:
            return 0.0, float(2 ** int(dataset.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
        mapped = apply_modality_lut(np.arange(low, high + 1), dataset)
        return float(np.min(mapped)), float(np.max(mapped))
    slope, intercept = 1.0, 0.0
    if "RescaleSlope" in dataset and "RescaleIntercept" in dataset:
        slope, intercept = float(dataset.RescaleSlope), float(dataset.RescaleIntercept)
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return float(ends[0]), float(ends[1])


def _tag_number(dataset: pydicom.Dataset, keyword: str, path: str | Path) -> float | None:
    """The first value of a numeric (DS) tag as a finite float; None when absent or empty."""
    value = dataset.get(keyword, None)
    if value is None or value == "":
        return None
    first = value[0] if isinstance(value, (list, tuple, MultiValue)) else value
    try:
        number = float(first)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number):
        raise DataError(path, f"{keyword} must be a finite number. Received: {keyword}={str(value)!r}")
    return number


def check_lut_tags(dataset: pydicom.Dataset, path: str | Path, *, voi: bool) -> None:
    """Refuse rescale and window tags that would fail inside pydicom (with an error naming no
    file) or give NaN or constant pixels: RescaleSlope/Intercept and WindowCenter/Width finite numbers,
    a RescaleSlope other than 0, and WindowWidth at least 1 as the standard requires (checked where the
    window is applied)."""
    with warnings.catch_warnings():  # pydicom warns about an invalid DS value; the error says it
        warnings.simplefilter("ignore")
        slope = _tag_number(dataset, "RescaleSlope", path)
        _tag_number(dataset, "RescaleIntercept", path)
        if slope == 0 and "RescaleIntercept" in dataset:  # applied (both given): every pixel the intercept
            raise DataError(path, "RescaleSlope must not be 0 (every pixel would map to RescaleIntercept). "
                                  "Received: RescaleSlope=0")
        if not voi or "VOILUTSequence" in dataset:
            return
        _tag_number(dataset, "WindowCenter", path)
        width = _tag_number(dataset, "WindowWidth", path)
        if width is None or width < 1:
            raise DataError(path, "WindowWidth must be at least 1 where WindowCenter is given. "
                                  f"Received: WindowWidth={str(dataset.get('WindowWidth', ''))!r}")


def read_dicom(path: str | Path, *, apply_voi: bool = True, normalise: bool = False,
               max_pixels: int | None = None) -> np.ndarray:
    """Pixels of a single-frame greyscale DICOM as float32, bright = dense.

    Args:
        path: the .dcm file.
        apply_voi: apply the file's VOI LUT / window (as a viewer shows it).
        normalise: scale to [0, 1] by the format's value range (see `value_range`).
        max_pixels: refuse files whose Rows x Columns x NumberOfFrames is larger, read from
            the header alone before the pixel data is read or decoded.

    Raises:
        DataError: not DICOM, no pixel data, colour or multi-frame images, over the pixel
            cap, a compressed transfer syntax that no installed decoder handles, rescale or
            window tags that are not numbers (or a WindowWidth under 1), or pixels that are
            not finite after them.
    """
    if max_pixels is not None:

        check_pixel_count(path, *header_size(path), max_pixels=max_pixels)
    try:
        dataset = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as error:
        raise DataError(path, f"not a readable DICOM file ({error})") from None
    if "PixelData" not in dataset:
        raise DataError(path, "DICOM file has no pixel data (PixelData element missing, "
                              "or the file is truncated before it)")
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DataError(path, "only greyscale DICOM (MONOCHROME1/2) is supported. "
                              f"Received: PhotometricInterpretation={photometric}")
    frames = number_of_frames(dataset, path)
    if frames > 1:
        raise DataError(path, "multi-frame DICOM (e.g. tomosynthesis) is not supported. "
                              f"Received: NumberOfFrames={frames}")
    syntax = dataset.file_meta.get("TransferSyntaxUID", None) if hasattr(dataset, "file_meta") else None
    try:
        pixels = dataset.pixel_array
    except (NotImplementedError, RuntimeError) as error:
        name = getattr(syntax, "name", str(syntax))
        detail = " ".join(str(error).split())  # pydicom lists the missing plugins on several lines
        raise DataError(path, f"cannot decode transfer syntax {name}: {decoder_hint(syntax)} ({detail})") from None
    except (ValueError, AttributeError, EOFError) as error:
        raise DataError(path, f"pixel data is truncated or corrupt ({error})") from None
    voi_applied = apply_voi and ("VOILUTSequence" in dataset or "WindowCenter" in dataset)
    check_lut_tags(dataset, path, voi=voi_applied)
    try:  # what the tag checks cannot foresee (a malformed LUT Sequence) still names the file
        array = apply_modality_lut(pixels, dataset)
        if voi_applied:
            array = apply_voi_lut(array, dataset, index=0)
        array = np.asarray(array, dtype=np.float32)
        low, high = value_range(dataset, voi_applied=voi_applied)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
        raise DataError(path, f"cannot apply the file's Modality or VOI LUT ({error})") from None
    if not np.isfinite(array).all():
        raise DataError(path, "pixels are not finite (NaN or infinity) after the Modality/VOI LUT")
    if photometric == "MONOCHROME1":  # invert within the format's range, not the image's own
        array = np.float32(low + high) - array
    if normalise:
        array = np.clip((array - np.float32(low)) / np.float32(max(high - low, 1e-12)), 0.0, 1.0)
    return array


def write_dicom(path: str | Path, image: np.ndarray, *, bits_stored: int = 16, patient_id: str = "ANONYMOUS",
                laterality: str = "", view: str = "") -> Path:
    """Write a greyscale image as an uncompressed MONOCHROME2 mammography (MG) DICOM, atomically.

    For examples and tests: a PNG turned into the file a scanner's archive would hold, which
    `read_dicom` (and `data prepare`, `predict`) read back. A float image in [0, 1] is quantised
    to `bits_stored` bits (read back with `normalise=True` within half a grey level); unsigned
    integers are stored as they are. The file carries generated UIDs and no patient data.

    Raises:
        ValueError: not a 2-D image, floats outside [0, 1] or not finite, or integers that do
            not fit `bits_stored` bits.
    """
    import io

    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    from mammo_keras.fileio import atomic_write_bytes

    image = np.asarray(image)
    if image.ndim != 2 or min(image.shape) < 1:
        raise ValueError(f"write_dicom takes a 2-D greyscale image. Received: shape={image.shape}")
    if not 1 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be 1..16. Received: bits_stored={bits_stored}")
    top = 2 ** bits_stored - 1
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ValueError("a float image must be finite and within [0, 1]. "
                             f"Received: range [{np.nanmin(image)}, {np.nanmax(image)}]")
        stored = np.round(image.astype(np.float64) * top)
    elif np.issubdtype(image.dtype, np.unsignedinteger) or np.issubdtype(image.dtype, np.bool_):
        stored = image.astype(np.int64)
        if stored.max(initial=0) > top:
            raise ValueError(f"values must fit {bits_stored} bits (at most {top}). Received: max {stored.max()}")
    else:
        raise ValueError(f"write_dicom takes floats in [0, 1] or unsigned integers. Received: dtype={image.dtype}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.PatientID, dataset.Modality = patient_id, "MG"
    dataset.ImageLaterality, dataset.ViewPosition = laterality, view
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.Rows, dataset.Columns = image.shape
    dataset.BitsAllocated = 16 if bits_stored > 8 else 8
    dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = bits_stored, bits_stored - 1, 0
    dtype = np.uint16 if dataset.BitsAllocated == 16 else np.uint8
    dataset.PixelData = np.ascontiguousarray(stored.astype(dtype)).tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return atomic_write_bytes(path, buffer.getvalue())
