"""Atomic file writes and checksums: a killed run never leaves a half-written output.

Each writer writes a temporary file in the destination folder, flushes it to disk
and renames it over the destination (`os.replace` is atomic on one file system).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, payload: object) -> Path:
    """Write JSON (sorted keys, indented) atomically."""
    return atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    """Save one array in .npy format atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def atomic_npy_memmap(path: str | Path, shape: tuple[int, ...], dtype=np.float32):
    """A writable memory map of a new .npy file of `shape`, renamed over `path` when the block ends.

    The array is written in place, part by part, so it is never held in memory whole. It lives in a
    hidden temporary file in the destination folder until the block ends without an error; then it
    is flushed, synced to disk and renamed over `path` (atomic, as the other writers here). On an
    error the temporary file is removed and `path` is left as it was.

        with atomic_npy_memmap(out / "images.npy", (n, 224, 224)) as images:
            images[0] = first
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        array = np.lib.format.open_memmap(temp, mode="w+", dtype=dtype, shape=tuple(shape))
        yield array
        array.flush()
        del array
        with open(temp, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
