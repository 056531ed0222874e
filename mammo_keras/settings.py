"""The one place where mammo_keras reads environment variables.

MAMMO_DATA   folder holding one sub-folder per dataset (mias/ or mini-mias/, cbis-ddsm/, inbreast/,
             bcdr/, vindr-mammo/, cmmd/, rsna-screening/: each reader's FOLDERS, `data.dataset_root`).
MAMMO_CACHE  folder for generated data (the phantom dataset); default ~/.cache/mammo_keras.
$VAR in config values (e.g. `weights: ${MAMMO_VGG16_WEIGHTS}`, a local weights file) are expanded
here too (`expand_variables`).
"""
from __future__ import annotations

import os
import re
from pathlib import Path


def data_root() -> Path | None:
    """The MAMMO_DATA folder, or None when it is not set."""
    value = os.environ.get("MAMMO_DATA")
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """Where generated data (the phantom dataset) is kept: $MAMMO_CACHE or ~/.cache/mammo_keras."""
    value = os.environ.get("MAMMO_CACHE")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "mammo_keras"


def expand_variables(text: str) -> tuple[str, list[str]]:
    """`$VAR` / `${VAR}` in a config value expanded from the environment, and the names left unset."""
    value = os.path.expandvars(text)
    return value, re.findall(r"\$\{?(\w+)", value) if "$" in value else []
