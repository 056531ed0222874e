"""Read any mammogram file into a 2-D float32 array, with errors that name the file.

PGM (8/16-bit P5, the MIAS distribution), PNG, TIFF and JPEG go through Pillow;
DICOM through `mammo_keras.data.dicom`. Values keep the file's own scale (0..255
for 8-bit, 0..65535 for 16-bit, DICOM after its VOI LUT); callers normalise.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mammo_keras.errors import DataError

DICOM_SUFFIXES = {".dcm", ".dicom", ""}
RASTER_SUFFIXES = {".pgm", ".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"}


def is_dicom(path: str | Path) -> bool:
    """True when the file carries the DICOM preamble magic ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def read_image(path: str | Path) -> np.ndarray:
    """The image as a 2-D float32 array (colour files are converted to grey).

    Raises:
        DataError: missing, truncated, undecodable or empty files, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file not found")
    if is_dicom(path) or path.suffix.lower() in {".dcm", ".dicom"}:
        from mammo_keras.data.dicom import read_dicom

        return read_dicom(path)
    try:
        with Image.open(path) as image:
            image.load()
            array = _to_grey_array(image)
    except UnidentifiedImageError:
        raise DataError(path, "not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(path, f"image data is truncated or corrupt ({error})") from None
    if array.size == 0:
        raise DataError(path, "image has no pixels")
    return array


def full_scale(path: str | Path) -> float:
    """The largest value a raster file's pixel format can hold (255 or 65535)."""
    try:
        with Image.open(path) as image:
            mode = image.mode
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(path, f"not a readable image ({error})") from None
    return 255.0 if mode in ("L", "RGB", "RGBA", "P", "LA", "CMYK", "YCbCr") else 65535.0


def read_normalised(path: str | Path) -> np.ndarray:
    """The image scaled to [0, 1] by its format's value range, so 8- and 16-bit files compare."""
    path = Path(path)
    if is_dicom(path) or path.suffix.lower() in {".dcm", ".dicom"}:
        from mammo_keras.data.dicom import read_dicom

        if not path.is_file():
            raise DataError(path, "image file not found")
        return read_dicom(path, normalise=True)
    array = read_image(path) / full_scale(path)
    return np.clip(array, 0.0, 1.0, out=array)


def _to_grey_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return np.asarray(image, dtype=np.float32)
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32)
