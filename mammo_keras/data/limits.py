"""The pixel budget every decoder checks before it decodes (a small file can decode to gigabytes).

Its own module because both `imageio` (rasters) and `dicom` check it, and `imageio` dispatches
to `dicom`: the check must sit below both.
"""
from __future__ import annotations

from pathlib import Path

from mammo_keras.errors import DataError

DEFAULT_MAX_PIXELS = 40_000_000  # full-field digital mammograms are at most about 40 megapixels


def check_pixel_count(path: str | Path, height: int, width: int, frames: int = 1, *,
                      max_pixels: int | None) -> None:
    """Raise DataError when an image of `height` x `width` (x `frames`) exceeds `max_pixels`."""
    count = int(height) * int(width) * max(int(frames), 1)
    if max_pixels is not None and count > max_pixels:
        frames_text = f" x {frames} frames" if frames > 1 else ""
        raise DataError(path, f"images may have at most {max_pixels:,} pixels ({max_pixels / 1e6:g} megapixels, "
                              f"--max-pixels), checked before decoding. Received: {width}x{height}{frames_text} "
                              f"= {count:,} pixels")
