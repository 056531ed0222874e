"""Facts read from files (DICOM headers, ROI mask boxes), kept in a JSON file between invocations.

A reader that reads every header and decodes every ROI mask of a large download (CBIS-DDSM: 10,239
DICOM files, 3,568 full-size masks) does it again on each `data prepare`; with a cache the second
invocation reads only the files that changed. Each entry is keyed by the file's absolute path and
holds its size and mtime_ns: a file whose size or mtime_ns differs is read again. The cache file is
written atomically, and only when an entry was added or changed; an unreadable cache file is an
empty cache.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from mammo_keras.fileio import atomic_write_json

VERSION = 1


class FileCache:
    """Values computed from files, valid while each file keeps its size and mtime_ns.

        cache = FileCache(out / "reader_cache.json")        # None: nothing cached
        header = cache.get("header", path, lambda: read(path))
        cache.save()

    `kind` separates what is kept of one file (its header, its mask's box). Values must be JSON
    (dicts, lists, strings, numbers, None). `hits` and `misses` count the lookups.
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, dict[str, dict]] = {}
        self.hits = self.misses = 0
        self._changed = False
        if self.path is not None and self.path.is_file():
            try:
                saved = json.loads(self.path.read_text(encoding="utf-8"))
                if saved.get("version") == VERSION and isinstance(saved.get("entries"), dict):
                    self.entries = saved["entries"]
            except (OSError, ValueError, AttributeError):
                self.entries = {}

    def get(self, kind: str, path: str | Path, compute: Callable[[], object]) -> object:
        """The value kept for `path`, or `compute()` (kept) when there is none or the file changed."""
        if self.path is None:
            return compute()
        key = os.path.abspath(path)
        try:
            stat = os.stat(key)
        except OSError:  # a missing file: compute raises what the reader says about it
            return compute()
        entry = self.entries.get(kind, {}).get(key)
        if entry is not None and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
            self.hits += 1
            return entry["value"]
        self.misses += 1
        value = compute()
        self.entries.setdefault(kind, {})[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                                  "value": value}
        self._changed = True
        return value

    def save(self) -> None:
        """Write the cache file (atomically) if anything was added or changed."""
        if self.path is not None and self._changed:
            atomic_write_json(self.path, {"version": VERSION, "entries": self.entries})
            self._changed = False
