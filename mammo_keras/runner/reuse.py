"""A results folder is resumed only under the protocol that made it.

`mammo-keras reproduce` reuses every finished part (fold, hold-out test) and split file it finds
under `--results`, so that a killed run restarts where it stopped. They are reused by their files
alone, so a run whose protocol changed in between (`--set n_splits=3`, other epochs, another seed,
a changed config) would mix parts of two protocols in one table. Each dataset folder and each row
folder therefore records the protocol it was made under (`protocol.json`: the split settings, and
the row's plan), and `check_reusable` refuses a run whose plan differs from a record, naming the
folder and what differs, before anything is trained. Folders of runs made before these records
are held against the results folder's previous plan.json.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

RECORD = "protocol.json"
PLAN_LEVEL = ("kind", "split", "epoch_scale", "deterministic")
"""The plan keys every row's parts and the split files depend on."""
SPLIT_PER_ROW = ("train_fractions",)
"""Split keys that describe rows (a learning curve's shares of each fold's patients), not the folds."""
ROW_IGNORED = ("label", "paper_row")
"""Row keys that describe the row without changing what it trains or predicts."""


def _normalised(value):
    from mammo_keras.plan import _jsonable

    return json.loads(json.dumps(_jsonable(value)))


def dataset_protocol(plan: dict) -> dict:
    """What a dataset folder's split files and parts depend on: the split settings, the epochs' scale,
    op determinism and the test-time augmentation of the saved predictions (and the plan's format)."""
    entry = {key: plan.get(key) for key in PLAN_LEVEL}
    if isinstance(entry["split"], dict):  # the learning curve's shares are rows' (each row's plan has its own)
        entry["split"] = {key: value for key, value in entry["split"].items() if key not in SPLIT_PER_ROW}
    entry["tta"] = (plan.get("evaluation") or {}).get("tta")
    entry["plan_version"] = plan.get("plan_version")
    return _normalised(entry)


AUTO_NAME = re.compile(r"^(conv2d|batch_normalization|activation|max_pooling2d|average_pooling2d|"
                       r"global_average_pooling2d|global_max_pooling2d|concatenate|dense|dropout|add|flatten|"
                       r"input_layer|zero_padding2d|re_lu|lambda|rescaling|normalization|functional|sequential)_\d+$")
"""Keras' automatic layer names (`conv2d_93`): numbered per process, so the same model built twice in one
session (a notebook, the tests) has other numbers; compared by their stem."""


def _without_auto_numbers(value):
    if isinstance(value, dict):
        return {_without_auto_numbers(key): _without_auto_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_auto_numbers(item) for item in value]
    if isinstance(value, str):
        return AUTO_NAME.sub(r"\1", value)
    return value


def row_protocol(row: dict, plan_version: int | None = None) -> dict:
    """What a row's parts depend on: its plan (model, options, weights, data chain, stages, selection),
    Keras' automatic layer numbers left out."""
    entry = {key: value for key, value in row.items() if key not in ROW_IGNORED}
    entry["plan_version"] = plan_version
    return _without_auto_numbers(_normalised(entry))


def _same_where_both_say(old, new) -> bool:
    """Equal in every key both hold (recursively): plans of two formats, a key one of them lacks
    being a description added or dropped, not a protocol change."""
    if isinstance(old, dict) and isinstance(new, dict):
        return all(_same_where_both_say(old[key], new[key]) for key in set(old) & set(new))
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(_same_where_both_say(a, b) for a, b in zip(old, new))
    return old == new


def _has_results(folder: Path) -> bool:
    return folder.is_dir() and any(child.name != RECORD for child in folder.iterdir())


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} cannot be read ({error}); it records the protocol of the results beside it. "
                         "Remove the folder to start it over") from None


def _difference(old: dict, new: dict) -> list[str]:
    """The keys whose values differ; across plan formats (`plan_version`), only in what both plans say."""
    if old.get("plan_version") != new.get("plan_version"):
        return [key for key in sorted((set(old) & set(new)) - {"plan_version"})
                if not _same_where_both_say(old[key], new[key])]
    return [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def check_reusable(out: str | Path, plan: dict) -> None:
    """Refuse to run `plan` into `out` where a dataset or row folder holds results of another protocol.

    Raises:
        ValueError: naming each such folder with the plan keys that differ, and what to do.
    """
    out = Path(out)
    previous = _read(out / "plan.json") if (out / "plan.json").is_file() else None
    old_rows = {row.get("label"): row for row in (previous or {}).get("rows") or []}
    level, stale = dataset_protocol(plan), []
    for dataset in plan.get("datasets") or []:
        folder = out / str(dataset)
        if not _has_results(folder):
            continue
        if (folder / RECORD).is_file():
            recorded = _read(folder / RECORD)
        elif previous is not None:
            recorded = dataset_protocol(previous)
        else:
            recorded = level  # made before any record: nothing to hold it against
        differ = _difference(recorded, level)
        if differ:
            stale.append((folder, differ))
            continue
        for row in plan.get("rows") or []:
            row_folder = folder / row["label"]
            if not _has_results(row_folder):
                continue
            if (row_folder / RECORD).is_file():
                recorded = _read(row_folder / RECORD)
            elif row["label"] in old_rows:
                recorded = row_protocol(old_rows[row["label"]], previous.get("plan_version"))
            else:
                continue
            differ = _difference(recorded, row_protocol(row, plan.get("plan_version")))
            if differ:
                stale.append((row_folder, differ))
    if stale:
        lines = "; ".join(f"{folder}: {', '.join(differ)} differ" for folder, differ in stale[:8])
        more = f" (and {len(stale) - 8} more folders)" if len(stale) > 8 else ""
        raise ValueError(
            f"{out} holds results made under another protocol than this run's plan ({lines}{more}); their "
            "split files and finished parts would be reused under the new plan. Use another --results folder, "
            f"or remove {'that folder' if len(stale) == 1 else 'those folders'} to train again")


def record_dataset(folder: str | Path, plan: dict) -> None:
    """Write the dataset folder's protocol record (before its split files are drawn)."""
    from mammo_keras.fileio import atomic_write_json

    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(folder) / RECORD, dataset_protocol(plan))


def record_row(folder: str | Path, row: dict, plan_version: int | None) -> None:
    """Write the row folder's protocol record (before its parts are trained)."""
    from mammo_keras.fileio import atomic_write_json

    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(folder) / RECORD, row_protocol(row, plan_version))
