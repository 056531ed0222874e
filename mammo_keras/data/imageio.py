"""Read any mammogram file into a 2-D float32 array, with errors that name the file.

PGM (8/16-bit P5, the MIAS distribution), PNG, TIFF and JPEG go through Pillow;
DICOM through `mammo_keras.data.dicom`. Values keep the file's own scale (0..255
for 8-bit, 0..65535 for 16-bit, DICOM after its VOI LUT); callers normalise. One image per
file: multi-page TIFF, animated GIF/PNG are refused, as multi-frame DICOM is.

`max_pixels` caps the image size, checked from the header before any pixel is decoded
(Pillow's lazy open; the DICOM header read without its pixel data): a small file that
decodes to gigabytes (a decompression bomb) is refused with a DataError, not decoded.
Files over Pillow's own bomb limit are refused the same way whatever the cap.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mammo_keras.data.limits import DEFAULT_MAX_PIXELS, check_pixel_count  # noqa: F401 - re-exported
from mammo_keras.errors import DataError

DICOM_SUFFIXES = {".dcm", ".dicom", ""}
RASTER_SUFFIXES = {".pgm", ".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"}
# What Pillow raises on a corrupt file besides OSError (struct/zlib errors, bad tables, short reads).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
                  struct.error, zlib.error)


def _bomb(path: str | Path, error: Exception, max_pixels: int | None) -> DataError:
    """Pillow refused to open the file: over its decompression-bomb limit (a small file that
    decodes to gigabytes)."""
    rule = ("images may have at most {:,} pixels (--max-pixels), checked before decoding; this one is "
            "over Pillow's decompression-bomb limit too".format(max_pixels) if max_pixels is not None else
            "images over Pillow's decompression-bomb limit are refused before decoding")
    return DataError(path, f"{rule}. Received: {error}")


def header_size(path: str | Path) -> tuple[int, int, int]:
    """(height, width, frames) from the file's header, without decoding any pixels.

    Raises:
        DataError: a missing or unreadable file, or one over Pillow's decompression-bomb limit.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file not found")
    if is_dicom(path) or path.suffix.lower() in {".dcm", ".dicom"}:
        from mammo_keras.data.dicom import header_size as dicom_size

        return dicom_size(path)
    try:
        with Image.open(path) as image:  # lazy: reads the header only
            width, height = image.size
            frames = _frames(image)
    except Image.DecompressionBombError as error:
        raise _bomb(path, error, None) from None
    except UnidentifiedImageError:
        raise DataError(path, "not a readable image (unknown or corrupt format)") from None
    except _DECODE_ERRORS as error:
        raise DataError(path, f"image header is truncated or corrupt ({error})") from None
    return height, width, frames


def is_dicom(path: str | Path) -> bool:
    """True when the file carries the DICOM preamble magic ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def read_image(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """The image as a 2-D float32 array (colour files are converted to grey).

    Args:
        max_pixels: refuse images with more pixels, judged from the header before decoding.

    Raises:
        DataError: missing, truncated, undecodable, empty or over-cap files, multi-page or animated
            files (as multi-frame DICOM) and NaN or infinite pixels, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file not found")
    if is_dicom(path) or path.suffix.lower() in {".dcm", ".dicom"}:
        from mammo_keras.data.dicom import read_dicom

        return read_dicom(path, max_pixels=max_pixels)
    try:
        with Image.open(path) as image:
            check_pixel_count(path, image.size[1], image.size[0], max_pixels=max_pixels)
            frames = _frames(image)
            if frames > 1:  # as multi-frame DICOM: which page is the mammogram is not ours to guess
                raise DataError(path, f"multi-page or animated images are not supported. Received: {frames} frames")
            image.load()
            array = _to_grey_array(image)
    except Image.DecompressionBombError as error:
        raise _bomb(path, error, max_pixels) from None
    except UnidentifiedImageError:
        raise DataError(path, "not a readable image (unknown or corrupt format)") from None
    except DataError:
        raise
    except _DECODE_ERRORS as error:
        raise DataError(path, f"image data is truncated or corrupt ({error})") from None
    if array.size == 0:
        raise DataError(path, "image has no pixels")
    if not np.isfinite(array).all():  # only float (mode F) files can hold them
        raise DataError(path, "pixels must be finite numbers. Received: NaN or infinite pixels")
    return array


INTEGER_16_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def full_scale(path: str | Path) -> float:
    """The largest value a raster file's pixels can hold as `read_image` reads them.

    65535 for 16-bit (and 32-bit integer) greyscale; 1.0 for float files, which must already lie
    in [0, 1] (there is no format range to scale them by: `read_normalised` refuses others); 255 for
    every other mode, which `read_image` converts to 8-bit grey (1-bit, palette, colour).
    """
    mode = _mode(path)
    if mode in INTEGER_16_MODES:
        return 65535.0
    return 1.0 if mode == "F" else 255.0


def _mode(path: str | Path) -> str:
    """The Pillow mode of a raster file, from its header."""
    try:
        with Image.open(path) as image:
            return image.mode
    except Image.DecompressionBombError as error:
        raise _bomb(path, error, None) from None
    except _DECODE_ERRORS as error:  # UnidentifiedImageError is an OSError
        raise DataError(path, f"not a readable image ({error})") from None


def _frames(image: Image.Image) -> int:
    """The number of pages or frames of an open image (1 for single-image formats)."""
    return int(getattr(image, "n_frames", 1) or 1)


def read_normalised(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """The image scaled to [0, 1] by its format's value range, so 8- and 16-bit files compare.

    Float files are taken as they are and must lie in [0, 1] (`full_scale`); others raise a DataError.

    Args:
        max_pixels: refuse images with more pixels, judged from the header before decoding.
    """
    path = Path(path)
    if is_dicom(path) or path.suffix.lower() in {".dcm", ".dicom"}:
        from mammo_keras.data.dicom import read_dicom

        if not path.is_file():
            raise DataError(path, "image file not found")
        return read_dicom(path, normalise=True, max_pixels=max_pixels)
    array = read_image(path, max_pixels=max_pixels)
    if not array.flags.writeable:
        array = array.copy()
    scale = full_scale(path)
    if scale == 1.0 and (array.min() < 0 or array.max() > 1):
        raise DataError(path, "float pixels must lie in [0, 1] (a float image has no format range to "
                              f"scale by). Received: range [{array.min():g}, {array.max():g}]")
    array /= np.float32(scale)  # in place: a 40-megapixel image is 160 MB as float32
    return np.clip(array, 0.0, 1.0, out=array)


def _to_grey_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return np.asarray(image, dtype=np.float32)
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32)
