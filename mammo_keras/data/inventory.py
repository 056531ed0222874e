"""What a dataset's label files list, against the image files its folder holds.

`mammo-keras data info` prints these facts after the counts of `records.summary`: a partial
download (CSVs present, some DICOMs not) is reported with how many files are found and missing,
and the first few missing paths, instead of stopping at the first one. Readers that can keep the
rows of missing files (`missing="keep"`) mark them in an `image_found` column; for the others the
file system is asked.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

EXAMPLES = 5  # missing paths shown


def file_inventory(table: pd.DataFrame, *, root: str | Path | None = None,
                   examples: int = EXAMPLES) -> dict[str, object]:
    """Images, patients and lesions the table lists, and how many of its image files exist.

    Args:
        table: a record table (`records.validate` holds for it).
        root: the dataset folder; missing paths are shown relative to it.
        examples: how many missing paths to list.

    Returns:
        images_listed, patients_listed, lesions_by_type_and_pathology ({abnormality:
        {pathology: count}}), image_files_found, image_files_missing, missing_examples.
    """
    images = table.drop_duplicates("image_id")
    if "image_found" in images.columns:
        found = images["image_found"].astype(bool).to_numpy()
    else:
        found = images["path"].map(lambda path: bool(path) and Path(path).is_file()).to_numpy(dtype=bool)
    lesions = table[table["abnormality"] != "normal"]
    by_type: dict[str, dict[str, int]] = {}
    for (abnormality, pathology), count in lesions.groupby(["abnormality", "pathology"]).size().items():
        by_type.setdefault(str(abnormality), {})[str(pathology or "unlabelled")] = int(count)
    missing = images.loc[~found, "path"].head(examples).tolist()
    return {
        "images_listed": len(images),
        "patients_listed": int(table["patient_id"].nunique()),
        "lesions_by_type_and_pathology": by_type,
        "image_files_found": int(found.sum()),
        "image_files_missing": int((~found).sum()),
        "missing_examples": [_shown(path, root) for path in missing],
    }


def _shown(path: str, root: str | Path | None) -> str:
    if not path or root is None:
        return path
    try:
        return os.path.relpath(path, root)
    except ValueError:  # another drive (Windows)
        return path


__all__ = ["file_inventory"]
