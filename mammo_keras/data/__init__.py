"""Dataset readers, all returning the record table of `mammo_keras.data.records`.

    from mammo_keras import data
    table = data.read_dataset("mias", "/path/to/all-mias")
"""
from __future__ import annotations

import importlib
from pathlib import Path

import pandas as pd

from mammo_keras.errors import DatasetNotFoundError

# name -> module under mammo_keras.data; each module has `read(root, **options)`,
# `LAYOUT` (the folder layout it expects) and `HOW_TO_GET` (where to obtain it).
READERS = {
    "mias": "mias",
    "cbis_ddsm": "cbis_ddsm",
    "inbreast": "inbreast",
    "bcdr": "bcdr",
    "cocc": "cocc_npy",
    "vindr_mammo": "vindr_mammo",
    "cmmd": "cmmd",
    "rsna_screening": "rsna_screening",
    "phantom": "phantom",
}
ALIASES = {"cbis-ddsm": "cbis_ddsm", "ddsm": "cbis_ddsm", "mini-mias": "mias",
           "vindr-mammo": "vindr_mammo", "vindr": "vindr_mammo", "rsna-screening": "rsna_screening",
           "rsna": "rsna_screening", "rsna-breast-cancer-detection": "rsna_screening"}


def canonical_name(name: str) -> str:
    """The reader name for `name` (accepts the folder spellings such as `cbis-ddsm`)."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in READERS:
        raise ValueError(f"Unknown dataset. Valid names: {sorted(READERS)}. Received: name={name!r}")
    return key


def reader_module(name: str):
    """The module that reads dataset `name`."""
    return importlib.import_module(f"mammo_keras.data.{READERS[canonical_name(name)]}")


def read_dataset(name: str, root: str | Path | None = None, **options) -> pd.DataFrame:
    """Read dataset `name` from `root` into a validated record table.

    Raises:
        DatasetNotFoundError: the folder is missing; the message shows the expected layout.
    """
    module = reader_module(name)
    if canonical_name(name) == "phantom":
        return module.read(root, **options)
    if root is None or not Path(root).exists():
        where = (f"looked in {root}" if root is not None
                 else "no folder given: pass --root DIR or set MAMMO_DATA")
        raise DatasetNotFoundError(
            f"{canonical_name(name)}: dataset folder not found ({where}).\n"
            f"Expected layout:\n{module.LAYOUT}\nHow to get it:\n{module.HOW_TO_GET}")
    return module.read(Path(root), **options)


__all__ = ["READERS", "canonical_name", "read_dataset", "reader_module"]
