"""A config's datasets as the arrays its rows train on: read, prepared (cached, resumable), resized and scaled.

images.npy is memory-mapped and never loaded whole: the rows a config keeps, its intensity scale and
a fold's fitted mean are recorded on `data.rows.ItemRows` and applied to each batch as it is read.

The steps from a file to a prepared item are the prepare task's (`data.prepare`), and from a
prepared item to the array a row trains on the config's input recipe (`data.recipes.InputRecipe`),
the same object `predict` uses on a new image.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_keras import data
from mammo_keras.config import ExperimentConfig
from mammo_keras.data.prepare import load_prepared, prepare
from mammo_keras.data.recipes import IMAGE_MEAN_COLUMN, InputRecipe
from mammo_keras.data.rows import ItemRows, is_lazy
from mammo_keras.data.splits import OFFICIAL_COLUMN
from mammo_keras.errors import DataError, DatasetNotFoundError

MERGED = "merged"


@dataclasses.dataclass
class DatasetInputs:
    """Prepared arrays of one dataset row, or why they are missing.

    `images` are `ItemRows` of the prepared images.npy (read, part chosen and resized per batch in
    training, never loaded whole); a merged dataset's are the parts' items joined in memory.
    """

    name: str
    images: np.ndarray | ItemRows | None = None
    index: pd.DataFrame | None = None
    fingerprint: str = ""
    synthetic: bool = False
    absent: str = ""
    root: Path | None = None
    # another task's items of this dataset, for rows that pretrain on them (`pretrain.unlabelled`)
    unlabelled: dict[str, DatasetInputs] = dataclasses.field(default_factory=dict)


def dataset_root(name: str, data_dir: str | Path | None) -> Path | None:
    """Where the runner reads `name`: under --data DIR or $MAMMO_DATA (`data.dataset_root`); the phantom is
    generated in the cache unless a data folder is named."""
    if name == "phantom" and data_dir is None:
        return None
    return data.dataset_root(name, data_dir)


def limit_patients(index: pd.DataFrame, max_items: int | None, seed: int) -> np.ndarray:
    """Row positions of whole patients, drawn at random, up to about `max_items` rows."""
    if max_items is None or len(index) <= max_items:
        return np.arange(len(index))
    patients = index["patient_id"].drop_duplicates().sample(frac=1.0, random_state=seed)
    chosen, count = [], 0
    for patient in patients:
        if count >= max_items:
            break
        chosen.append(patient)
        count += int((index["patient_id"] == patient).sum())
    return np.flatnonzero(index["patient_id"].isin(chosen).to_numpy())


def load_inputs(config: ExperimentConfig, dataset: str, data_dir: str | Path | None, work: Path,
                progress: Callable[[str], None], *, options: dict | None = None,
                tag: str = "", abnormality: str | None = "config") -> DatasetInputs:
    """Read and prepare one dataset for the config's task; absent data is reported, not raised.

    Args:
        options: reader options (e.g. the phantom's seed, INbreast's subset); `tag` names their
            prepared folder and prefixes the ids (a second reading of one source), else the folder
            name carries a hash of the options.
        abnormality: keep only this lesion type (and normals); "config" means `config.abnormality`.
    """
    name = data.canonical_name(dataset)
    root = dataset_root(name, data_dir)
    try:
        table = data.read_dataset(name, root, cache=work / "prepared" / f"{name}_reader_cache.json", **(options or {}))
    except DatasetNotFoundError:
        where = root if root is not None else "nowhere: pass --data DIR or set MAMMO_DATA"
        progress(f"{name}: dataset absent (looked in {where}); the paper's numbers are shown alone")
        return DatasetInputs(name, absent=f"absent (looked in {where})")
    subset = table.attrs.get("subset")
    if subset:
        found, paper = subset["found"], subset["paper"]
        progress(f"{name}: subset {subset['name']}: {found['images']} images of {found['patients']} patients "
                 f"(the paper: {paper['images']} of {paper['patients']}; {subset['rule']})"
                 + (f"; {subset['note']}" if subset["note"] else ""))
    abnormality = config.abnormality if abnormality == "config" else abnormality
    if abnormality:
        keep = (table["abnormality"] == abnormality) | (table["abnormality"] == "normal")
        table = table[keep].reset_index(drop=True)
    recipe = InputRecipe.of(config)
    folder = work / "prepared" / f"{name}_{config.task}{tag or options_tag(options)}{options_tag(config.task_options)}"
    report = prepare(name, table, folder, config.task, root=root, options=config.task_options, progress=False,
                     workers=config.prepare_worker_count)
    _, index = load_prepared(folder, mmap=True)  # checks images.npy against index.csv
    if config.label_map:
        index = index.assign(label=index["label"].map(lambda v: config.label_map[int(v)]))
    index = with_official_split(index, table, name)
    rows = limit_patients(index, config.max_items, config.seed)
    images, index = recipe.training_arrays(folder / "images.npy", rows), index.iloc[rows].reset_index(drop=True)
    synthetic = name == "phantom"
    progress(f"{name}: {len(index)} items ({index['label'].value_counts().sort_index().to_dict()}) "
             f"from {index['patient_id'].nunique()} patients{' [SYNTHETIC phantom data]' if synthetic else ''}")
    if tag:  # items of a second reading of one source (another phantom seed) get their own ids
        index = index.assign(**{column: name + tag + ":" + index[column].astype(str)
                                for column in ("patient_id", "item_id", "image_id") if column in index})
    return DatasetInputs(name, images, index, report.data_fingerprint, synthetic, root=root)


def unlabelled_key(source: dict) -> str:
    """The name of a `pretrain.unlabelled` source: its task and options."""
    return f"{source['task']}{options_tag(source.get('task_options'))}"


def load_unlabelled(config: ExperimentConfig, dataset: str, data_dir, work: Path, progress,
                    source: dict, options: dict | None = None) -> DatasetInputs:
    """Another task's items of `dataset` for self-supervised pretraining (`pretrain.unlabelled`): the
    same reader (so the same patient ids), the config's input size and channels, no label map, every
    patient (`cv.train_and_test` keeps those outside a part's validation and test parts)."""
    variant = dataclasses.replace(config, task=source["task"], task_options=dict(source.get("task_options") or {}),
                                  label_map={}, item_part=None, abnormality=None, max_items=None)
    progress(f"{dataset}: unlabelled `{source['task']}` items for pretraining")
    return load_inputs(variant, dataset, data_dir, work, progress, options=options, abnormality=None)


def with_official_split(index: pd.DataFrame, table: pd.DataFrame, name: str) -> pd.DataFrame:
    """The prepared index with the dataset's own train/test side of each item's image (`official_split`),
    when the reader records one (a `split` column: CBIS-DDSM's description CSVs, VinDr-Mammo); the
    config's `split: official` tests on it."""
    if "split" not in table.columns:
        return index
    sides = table.assign(image_id=table["image_id"].astype(str)).groupby("image_id")["split"].unique()
    two = sides[sides.map(len) > 1]
    if len(two):
        raise DataError(name, f"image {two.index[0]!r} is on both sides of the official split "
                              f"({sorted(two.iloc[0])}); the reader's split must be one per image")
    side = index["image_id"].astype(str).map(sides.map(lambda values: str(values[0])))
    return index.assign(**{OFFICIAL_COLUMN: side.fillna("").to_numpy()})


def options_tag(options: dict | None) -> str:
    """The prepared folder's suffix for reader options (another reading of the source is other items)."""
    if not options:
        return ""
    return "_" + hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:8]


def merge_inputs(parts: list[DatasetInputs]) -> DatasetInputs:
    """The merged dataset (Chougrad's MD): the union of the other rows' items."""
    missing = [p.name for p in parts if p.absent]
    if missing or not parts:
        return DatasetInputs(MERGED, absent=f"needs every dataset (missing: {', '.join(missing) or 'all'})")
    index = pd.concat([p.index.assign(patient_id=p.name + ":" + p.index["patient_id"].astype(str),
                                      item_id=p.name + ":" + p.index["item_id"].astype(str))
                       for p in parts], ignore_index=True)
    return DatasetInputs(MERGED, np.concatenate([np.asarray(p.images, np.float32) for p in parts]), index,
                         "+".join(p.fingerprint[:12] for p in parts), any(p.synthetic for p in parts))


def check_found(config: ExperimentConfig, inputs: dict[str, DatasetInputs], data_dir: str | Path | None) -> None:
    """A --data DIR that holds none of the config's datasets is an error, not a table of absent rows."""
    if data_dir is None or any(not found.absent for found in inputs.values()):
        return
    wanted = {name: data.reader_module(name).FOLDERS for name in config.datasets if name != MERGED}
    looked = "; ".join(f"{name}: {', '.join(folders)}" for name, folders in wanted.items())
    raise DatasetNotFoundError(f"{data_dir}: none of this config's datasets is there (looked for the folders "
                               f"{looked}). Name the folder that holds them, or leave --data out to see the "
                               f"paper's numbers alone")


def scaled(inputs: DatasetInputs, scale: float) -> DatasetInputs:
    """A row's arrays: the dataset's resized items times the row's intensity scale (and the source
    images' mean grey values with them); lazy rows are scaled when each batch is read."""
    if scale == 1.0:
        return inputs
    index = inputs.index
    if IMAGE_MEAN_COLUMN in index:
        index = index.assign(**{IMAGE_MEAN_COLUMN: index[IMAGE_MEAN_COLUMN].astype(float) * scale})
    images = inputs.images.scaled(scale) if is_lazy(inputs.images) else inputs.images * np.float32(scale)
    return dataclasses.replace(inputs, images=images, index=index,
                               unlabelled={key: scaled(value, scale) for key, value in inputs.unlabelled.items()})
