"""The one place where mammo_keras reads environment variables.

MAMMO_DATA   folder holding one sub-folder per dataset (mias/, cbis-ddsm/, inbreast/, bcdr/,
             vindr-mammo/, cmmd/, rsna-screening/).
MAMMO_CACHE  folder for generated data (the phantom dataset); default ~/.cache/mammo_keras.
"""
from __future__ import annotations

import os
from pathlib import Path

DATASET_FOLDERS = {
    "mias": "mias",
    "cbis_ddsm": "cbis-ddsm",
    "inbreast": "inbreast",
    "bcdr": "bcdr",
    "cocc": "cocc",
    "vindr_mammo": "vindr-mammo",
    "cmmd": "cmmd",
    "rsna_screening": "rsna-screening",
}


def data_root() -> Path | None:
    """The MAMMO_DATA folder, or None when it is not set."""
    value = os.environ.get("MAMMO_DATA")
    return Path(value).expanduser() if value else None


def dataset_root(dataset: str, explicit: str | Path | None = None) -> Path | None:
    """Where to look for `dataset`: the explicit flag wins, then $MAMMO_DATA/<folder>."""
    if explicit is not None:
        return Path(explicit).expanduser()
    root = data_root()
    if root is None:
        return None
    return root / DATASET_FOLDERS.get(dataset, dataset)


def cache_dir() -> Path:
    """Where generated data (the phantom dataset) is kept: $MAMMO_CACHE or ~/.cache/mammo_keras."""
    value = os.environ.get("MAMMO_CACHE")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "mammo_keras"
