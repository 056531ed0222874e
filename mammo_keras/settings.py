"""The one place where mammo_keras reads environment variables.

MAMMO_DATA   folder holding one sub-folder per dataset (mias/ or mini-mias/, cbis-ddsm/, inbreast/,
             bcdr/, vindr-mammo/, cmmd/, rsna-screening/: each reader's FOLDERS, `data.dataset_root`).
MAMMO_CACHE  folder for generated data (the phantom dataset); default ~/.cache/mammo_keras.
MAMMO_PROGRESS  1 / 0: progress bars for training epochs on / off; unset: on in a terminal or a
             Jupyter kernel, off in logs and pipes (`progress_bars`).
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


def progress_bars() -> bool:
    """Whether training draws tqdm progress bars (tqdm.auto: the notebook widget in Jupyter).

    $MAMMO_PROGRESS=1 or 0 decides; unset, bars are drawn when stderr is a terminal or the code runs
    in a Jupyter kernel, and not into a log file or a pipe (a bar per epoch would bury the log).
    """
    import sys

    value = os.environ.get("MAMMO_PROGRESS", "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    if value:
        raise ValueError(f"MAMMO_PROGRESS takes 1 or 0. Received: MAMMO_PROGRESS={value!r}")
    return in_jupyter_kernel() or bool(getattr(sys.stderr, "isatty", lambda: False)())


def in_jupyter_kernel() -> bool:
    """Whether this code runs inside a Jupyter kernel: IPython's shell there has a `kernel`
    (importing ipykernel, as nbclient does to find its kernel spec, is not running in one)."""
    import sys

    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    return getattr(shell, "kernel", None) is not None


def expand_variables(text: str) -> tuple[str, list[str]]:
    """`$VAR` / `${VAR}` in a config value expanded from the environment, and the names left unset."""
    value = os.path.expandvars(text)
    return value, re.findall(r"\$\{?(\w+)", value) if "$" in value else []
