"""Hostile image files for the fault tests: decompression bombs and over-cap images, made in memory."""
from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def bomb_png(width: int = 30000, height: int = 30000, rows: int | None = None) -> bytes:
    """A valid 1-bit all-black PNG of `width` x `height` (30000 x 30000: 109 KB that decode to
    900 million pixels, over Pillow's decompression-bomb limit); `rows` keeps only the first rows
    of pixel data (a file of a few hundred bytes with the same header)."""
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    count = height if rows is None else rows
    parts = [compressor.compress(row * 256) for _ in range(count // 256)]
    parts += [compressor.compress(row * (count % 256)), compressor.flush()]
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts))
            + _chunk(b"IEND", b""))


@functools.cache
def large_png(width: int, height: int) -> bytes:
    """A 16-bit PNG of constant pixels: a few KB that decode to width x height x 2 bytes (under
    Pillow's bomb limit, so only a pixel cap refuses it)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width), 1000, np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()
