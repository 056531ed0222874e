"""Chained runs may not test on women an earlier model learned from.

A row that starts from a model another run saved (a `{results: <paper>/<table>, row: <label>}`
option: Shen's `patch_weights`, Table 4's fine-tuned `weights`) is checked before it trains:

    check_references(job, references(row.options), results_dir)

Its test patients may be in neither the training nor the validation part of the split that model
was trained on, and its validation patients not in the training part (`data.splits.upstream_leaks`).
Who the model learned from is read from the referenced row's own saved assignment, never from the
table's: a hold-out or transfer row's split.csv (its train and val parts), a cross-validated row's
folds.csv (a `fold_<k>/` model learned from every patient outside fold k; any other file of the row,
from all of them). A row that passes keeps what it started from in upstream_patients.csv, so a row
starting from *it* is checked against the whole chain (Table 4 -> model averaging -> Table 1).

A dataset's saved split is not redrawn under finished work either (`check_split_kept`): rows reused
as "done earlier" were trained on the saved one, and chained tables read it.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from mammo_keras.data.splits import LeakageError, load_assignments, moved_patients, upstream_leaks
from mammo_keras.fileio import atomic_write_text

UPSTREAM_FILE = "upstream_patients.csv"  # patient_id, part, source: who a row's starting model learned from
SHOWN = 5  # patients named in a message


def _first(items: list[str], separator: str) -> str:
    """The first SHOWN items joined, with how many more there are."""
    return separator.join(items[:SHOWN]) + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def references(options: dict) -> dict[str, dict]:
    """The row's options that name another run's saved file (`runner.rows.resolve_results`)."""
    return {key: value for key, value in options.items() if isinstance(value, dict) and "results" in value}


def reference_folder(reference: dict, results_dir: str | Path, dataset: str) -> Path:
    """The folder of the row a reference names: <results>/<paper>/<table>/<dataset>/<row>."""
    return Path(results_dir) / reference["results"] / reference.get("dataset", dataset) / reference["row"]


def trained_patients(reference: dict, results_dir: str | Path, dataset: str) -> pd.DataFrame:
    """patient_id, part ("train" or "val") and source (the file that says so) of every patient the
    model a reference names learned from, with those its own starting model learned from."""
    from mammo_keras.runner.rows import results_path

    folder = reference_folder(reference, results_dir, dataset)
    split_file, folds_file = folder / "split.csv", folder / "folds.csv"
    if split_file.is_file():  # hold-out (and official-split) rows, transfer rows
        split = load_assignments(split_file)
        used = split[split["split"].isin(("train", "val"))]
        parts = pd.DataFrame({"patient_id": used["patient_id"].astype(str), "part": used["split"].astype(str),
                              "source": str(split_file)})
    elif folds_file.is_file():  # cross-validation: a fold's model learned from every other fold
        folds = load_assignments(folds_file)
        fold = _fold_of(results_path(reference, results_dir, dataset), folder)
        used = folds if fold is None else folds[folds["fold"] != fold]
        parts = pd.DataFrame({"patient_id": used["patient_id"].astype(str), "part": "train",
                              "source": f"{folds_file}" + ("" if fold is None else f" (folds other than {fold})")})
    else:
        raise LeakageError(folder, "this row's model is a starting point of another row, but the row has no "
                                   "split.csv or folds.csv, so the patients its model learned from are unknown and "
                                   "the other row's test patients cannot be checked against them. Run the "
                                   f"referenced table again (`mammo-keras reproduce {reference['results']}`, which "
                                   "saves its split) in a new --results folder")
    upstream = folder / UPSTREAM_FILE
    if upstream.is_file():
        parts = pd.concat([parts, pd.read_csv(upstream, dtype=str, keep_default_na=False)], ignore_index=True)
    return parts.drop_duplicates(["patient_id", "part", "source"]).reset_index(drop=True)


def _fold_of(path: Path, folder: Path) -> int | None:
    """The fold of a cross-validated row's file (fold_<k>/model/...), or None for a file of the whole row."""
    try:
        first = path.relative_to(folder).parts[0]
    except (ValueError, IndexError):
        return None
    match = re.fullmatch(r"fold_(\d+)", first)
    return int(match.group(1)) if match else None


def evaluated_patients(job) -> tuple[pd.DataFrame, str]:
    """patient_id, part ("val" or "test") of every patient the row validates or tests on, and where
    that is decided (for messages)."""
    from mammo_keras.training.cv import transfer_split

    config = job.config
    if config.kind == "detection":
        parts = [job.data.split[part]["items"][["patient_id"]].assign(part=part) for part in ("val", "test")]
        return pd.concat(parts, ignore_index=True), str(job.out / "splits.csv")
    if config.kind == "transfer":
        split = transfer_split(job.data.index, job.test_inputs.index, val_fraction=config.val_fraction,
                               seed=config.seed)
        return (split.loc[split["split"] != "train", ["patient_id", "split"]].rename(columns={"split": "part"}),
                f"{job.folder / 'split.csv'} (validation drawn from {job.dataset}, test: {config.test_dataset})")
    if config.kind == "cv" and config.split != "official":  # every patient is tested, in her fold
        return (job.data.index[["patient_id"]].assign(part="test"),
                f"{job.folder / 'folds.csv'} (a cross-validation tests every patient of {job.dataset})")
    if job.split_source is None:
        return pd.DataFrame({"patient_id": [], "part": []}), ""
    split = job.split_source
    used = split[split["split"].isin(("val", "test"))]
    return used[["patient_id", "split"]].rename(columns={"split": "part"}), str(job.out / "split.csv")


def check_references(job, refs: dict[str, dict], results_dir: str | Path) -> None:
    """Refuse (LeakageError, a ValueError) a row whose validation or test patients the model it starts
    from learned from; otherwise record that model's patients beside the row (UPSTREAM_FILE)."""
    if not refs:
        return
    trained = pd.concat([trained_patients(reference, results_dir, job.dataset) for reference in refs.values()],
                        ignore_index=True)
    evaluated, decided = evaluated_patients(job)
    leaks = upstream_leaks(evaluated, trained)
    if len(leaks):
        sources = sorted(set(trained.loc[trained["patient_id"].isin(leaks["patient_id"]), "source"]))
        options = ", ".join(f"`{key}` = {reference['results']} row {reference['row']}"
                            for key, reference in refs.items())
        shown = _first([f"{row.patient_id} ({row.part} here, {row.trained_part} there)"
                        for row in leaks.itertuples()], "; ")
        splits = ", ".join(sources)
        kept = job.config.split_from
        advice = (f"This table keeps the patient split of {kept}, which is not the split the starting model was "
                  "trained on: it was redrawn after that model was trained, or the runs differ in data or "
                  "settings (seed, fractions, max_items, data files). Run the chain again, with the same data and "
                  "settings, in a new --results folder" if kept else
                  "Keep one patient split along the chain: give this config `split_from: "
                  f"{next(iter(refs.values()))['results']}` (the run it starts from), with the same data and "
                  "settings (seed, fractions, max_items, data files)")
        raise LeakageError(job.folder, f"row {job.row.label!r} on {job.dataset} starts from a saved model ({options}) "
                                       f"that learned from {len(leaks)} of the patients this row validates or "
                                       f"tests on: {shown}. Its scores would be on women its starting model "
                                       f"has seen. The starting model's split: {splits}; this row's: {decided}. "
                                       f"{advice}")
    job.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(job.folder / UPSTREAM_FILE, trained.drop_duplicates().to_csv(index=False))


def kept_work(folder: Path) -> list[str]:
    """The rows under a dataset's results folder that finished (a predictions.csv) or have training state
    to resume from (a backup): work that was made with the folder's saved split."""
    marks = [*folder.glob("*/**/predictions.csv"), *folder.glob("*/**/backup/backup.npz")]
    return sorted({mark.relative_to(folder).parts[0] for mark in marks})


def check_split_kept(path: Path, drawn: pd.DataFrame) -> None:
    """Refuse to replace a dataset's saved split (`path`) by one that moves patients between parts while
    rows beside it were made with the saved one; with no such rows, replacing it is harmless."""
    if not path.is_file():
        return
    moved = moved_patients(load_assignments(path), drawn)
    work = kept_work(path.parent) if moved else []
    if not work:
        return
    shown = _first([f"{patient} ({before} -> {after})" for patient, (before, after) in moved.items()], "; ")
    rows = _first(work, ", ")
    raise LeakageError(path, f"the patient split drawn now puts {len(moved)} patient{'s' if len(moved) > 1 else ''} "
                             "in another part than this "
                             f"saved split: {shown}; rows made with the saved split are kept beside it "
                             f"({rows}) and would be reused as done, their models trained on women the new split "
                             "tests on, and tables chained to this one (`split_from`, `results:` references) "
                             "would test on them too. Something that decides the split changed (seed, fractions, "
                             "max_items, the data files, the split it keeps). Use a new --results folder for "
                             f"this run, or remove {path.parent} to start this dataset's rows over; to keep the "
                             "finished rows, run with the settings that made them")
