"""Dataset readers, all returning the record table of `mammo_keras.data.records`.

    from mammo_keras import data
    table = data.read_dataset("mias", "/path/to/all-mias")
    data.names()                       # the registered datasets, as the CLI lists them

Each reader module declares its `NAME`, the `FOLDERS` a data root (--data DIR, $MAMMO_DATA) may
hold it under, its `ALIASES`, `LAYOUT` (the folder layout it expects), `HOW_TO_GET` and
`LICENCE` (the terms the data come with) and `read(root, **options)`; this package registers them once (`mammo_keras.registry.Registry`), and
the CLI's choices, the folder lookup and the docs come from there.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import pandas as pd

from mammo_keras import settings
from mammo_keras.errors import DatasetNotFoundError
from mammo_keras.registry import Registry

READER_MODULES = ("mias", "cbis_ddsm", "inbreast", "bcdr", "cocc_npy", "vindr_mammo", "cmmd", "rsna_screening",
                  "phantom")
READERS: Registry = Registry("dataset", listing="`mammo-keras data info --help`")
for _module in READER_MODULES:
    _reader = importlib.import_module(f"mammo_keras.data.{_module}")
    READERS.register(_reader.NAME, _reader, aliases=tuple(a for a in _reader.ALIASES + _reader.FOLDERS
                                                         if a != _reader.NAME))
del _module, _reader


def canonical_name(name: str) -> str:
    """The registered name of a dataset, from its name, a folder spelling (`cbis-ddsm`) or an alias."""
    if name in READERS:
        return READERS.canonical(name)
    return READERS.canonical(str(name).lower())


def names() -> list[str]:
    """Every registered dataset, in registration order (the CLI's choices)."""
    return list(READERS)


def reader_module(name: str):
    """The module that reads dataset `name`."""
    return READERS.get(canonical_name(name))


def licence(name: str) -> str:
    """The terms dataset `name` comes with (its reader's LICENCE), for model cards and the README."""
    return reader_module(name).LICENCE


def dataset_root(name: str, data_dir: str | Path | None = None, *, explicit: str | Path | None = None) -> Path | None:
    """Where dataset `name` lives: an explicit folder (--root), else the first of its FOLDERS found under
    `data_dir` (--data) or $MAMMO_DATA. When none exists, the first folder name (reported as looked in);
    None when no root is given at all (and for the phantom without one: it is generated)."""
    if explicit is not None:
        return Path(explicit).expanduser()
    base = Path(data_dir).expanduser() if data_dir is not None else settings.data_root()
    if base is None:
        return None
    folders = reader_module(name).FOLDERS
    for folder in folders:
        if (base / folder).exists():
            return base / folder
    return base / folders[0]


def find_dataset(name: str, *data_dirs: str | Path | None) -> Path | None:
    """The folder of dataset `name` under the first of `data_dirs` (then $MAMMO_DATA) that holds one
    of its FOLDERS, or None: for notebooks and scripts that use real data when it is there.

        root = data.find_dataset("mias", "../shared/data")   # mini-MIAS if present, else None
    """
    for base in (*data_dirs, settings.data_root()):
        if base is None:
            continue
        root = dataset_root(name, base)
        if root is not None and root.is_dir():
            return root
    return None


def check_data_dir(data_dir: str | Path | None) -> None:
    """A --data DIR that is no folder, or holds no dataset folder any reader knows, is an error at every
    profile and for every command that takes it, before any work (the tiny profile reads only the
    phantom, and `reproduce --plan` reads no data, but a wrong --data is a mistake all the same)."""
    if data_dir is None:
        return
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"{root}: --data must be a folder holding the dataset folders; there is no such folder")
    known = {folder: name for name in names() if name != "phantom" for folder in reader_module(name).FOLDERS}
    if not any((root / folder).is_dir() for folder in known):
        raise DatasetNotFoundError(f"{root}: --data holds none of the dataset folders "
                                   f"({', '.join(sorted(known))}); name the folder that holds them")


def read_dataset(name: str, root: str | Path | None = None, *, cache: str | Path | None = None,
                 **options) -> pd.DataFrame:
    """Read dataset `name` from `root` into a validated record table.

    `cache`: a JSON file keeping what the reader read from the files (DICOM header fields, mask
    boxes), by each file's size and mtime, for readers that take one (CBIS-DDSM); ignored by the others.

    Raises:
        DatasetNotFoundError: the folder is missing; the message shows the expected layout.
    """
    import inspect

    module = reader_module(name)
    if cache is not None and "cache" in inspect.signature(module.read).parameters:
        options["cache"] = cache
    if canonical_name(name) == "phantom":
        return module.read(root, **options)
    if root is None or not Path(root).exists():
        where = (f"looked in {root}" if root is not None
                 else "no folder given: pass --root DIR or set MAMMO_DATA")
        raise DatasetNotFoundError(
            f"{canonical_name(name)}: dataset folder not found ({where}).\n"
            f"Expected layout:\n{module.LAYOUT}\nHow to get it:\n{module.HOW_TO_GET}")
    return module.read(Path(root), **options)


__all__ = ["READERS", "canonical_name", "check_data_dir", "dataset_root", "find_dataset", "licence", "names", "read_dataset", "reader_module"]
