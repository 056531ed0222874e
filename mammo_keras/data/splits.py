"""Patient-level stratified K-fold and train/val/test splits, with leakage checks.

Every split groups on `patient_id` through scikit-learn's `StratifiedGroupKFold`, so all
images (both breasts, every view, every lesion row) of one woman land in the same fold, while
the folds keep the class proportions of `label` as far as whole patients allow. A patient in
two folds is an error (`LeakageError`), never a warning. Assignments are saved beside the
results so a run can be re-checked and repeated.

A dataset's own train/test assignment (CBIS-DDSM's description CSVs, VinDr-Mammo's `split`
column) is the other choice (`official_split`): its test part is the test, validation is drawn
from its training patients. It is checked the same way: CBIS-DDSM's mass files and its calc files
each keep a patient on one side, but merged they do not (about 31 patient ids are on both sides),
and such a split raises `LeakageError` naming the patients instead of testing on women seen in
training.

Reference: Chougrad et al. 2018 §3, Table 2 (stratified 5-fold CV); Shen et al. 2017 §3.1.1
(patient-level stratified 85/15 split, then 10% of training patients for validation, i.e.
fractions=(0.765, 0.085, 0.15)); Lee et al. 2017, Scientific Data 4:170177 (CBIS-DDSM's
official train/test split).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from mammo_keras.config import check_train_fraction
from mammo_keras.errors import DataError
from mammo_keras.fileio import atomic_write_text

SPLIT_NAMES = ("train", "val", "test")
ASSIGNMENT_COLUMNS = ("fold", "split")
ID_COLUMNS = ("image_id", "patient_id", "lesion_id")
MAX_SPLIT_FOLDS = 20
GROUP_KEY = "patient_id"  # the column every split groups on (the plan's `split.group` is read from here)
OFFICIAL_COLUMN = "official_split"  # the dataset's own "train" / "test" per row (readers' `split` column)
OFFICIAL_SIDES = ("train", "test")


class LeakageError(DataError):
    """One patient's rows fall into more than one fold or split."""


def _check_table(table: pd.DataFrame, label: str) -> None:
    missing = [c for c in (GROUP_KEY, label) if c not in table.columns]
    if missing:
        raise ValueError(f"A split needs the columns 'patient_id' and the label column. "
                         f"Received: table without {missing}")
    no_patient = table[GROUP_KEY].isna() | (table[GROUP_KEY].astype(str) == "")
    if no_patient.any():
        raise ValueError("Every row needs a patient_id to split by patient. "
                         f"Received: {int(no_patient.sum())} rows without one")


def _stratified_group_folds(table: pd.DataFrame, n_splits: int, seed: int, label: str) -> np.ndarray:
    """Fold number per row from StratifiedGroupKFold(groups=patient_id)."""
    if not isinstance(n_splits, (int, np.integer)) or n_splits < 2:
        raise ValueError(f"n_splits must be an integer >= 2. Received: n_splits={n_splits!r}")
    n_patients = table[GROUP_KEY].nunique()
    if n_patients < n_splits:
        raise ValueError(f"Splitting by patient into {n_splits} folds needs at least {n_splits} "
                         f"patients. Received: {n_patients} patients")
    folds = np.full(len(table), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    labels = table[label].astype(str).to_numpy()
    groups = table[GROUP_KEY].astype(str).to_numpy()
    with warnings.catch_warnings():
        # scikit-learn warns whenever a class has fewer members than folds (a 15% validation part is 3 of 20
        # folds): the folds are still made, and the callers check that each part holds both classes.
        warnings.filterwarnings("ignore", message="The least populated class in y has only", category=UserWarning)
        for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(table)), labels, groups)):
            folds[held_out] = fold
    return folds


def _check_two_classes(table: pd.DataFrame, column: str, label: str) -> None:
    classes = table.groupby(column)[label].nunique()
    one_class = classes[classes < 2]
    if len(one_class):
        name = one_class.index[0]
        name = name.item() if isinstance(name, np.generic) else name
        only = table.loc[table[column] == name, label].iloc[0]
        raise ValueError(f"Every {column} must hold at least two classes of {label!r} (a one-class "
                         f"{column} cannot be scored by AUC); use fewer folds or more patients. Received: "
                         f"{column} {name!r} holds only {label}={only!r} "
                         f"({int((table[column] == name).sum())} rows)")


def patient_kfold(table: pd.DataFrame, n_splits: int = 5, *, seed: int,
                  label: str = "pathology") -> pd.DataFrame:
    """Assign every row a `fold` in 0..n_splits-1, by patient, stratified on `label`.

    Returns:
        A copy of `table` with an int `fold` column.

    Raises:
        ValueError: fewer patients than folds, or a fold with a single class.
    """
    _check_table(table, label)
    assigned = table.assign(fold=_stratified_group_folds(table, n_splits, seed, label))
    _check_two_classes(assigned, "fold", label)
    check_no_leakage(assigned, by="fold")
    return assigned


def folds_per_split(fractions: Sequence[float], max_folds: int) -> tuple[int, list[int]]:
    """The fold count k <= max_folds and folds per split whose k-ths best match `fractions`."""
    best = None
    for k in range(2, max_folds + 1):
        raw = [f * k for f in fractions]
        counts = [math.floor(r) for r in raw]
        for i in sorted(range(3), key=lambda i: raw[i] - counts[i], reverse=True)[:k - sum(counts)]:
            counts[i] += 1
        for i, fraction in enumerate(fractions):
            if fraction > 0 and counts[i] == 0:
                donor = max(range(3), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] += 1
        if min(c for c, f in zip(counts, fractions) if f > 0) < 1:
            continue
        error = max(abs(c / k - f) for c, f in zip(counts, fractions))
        if best is None or error < best[0] - 1e-9:
            best = (error, k, counts)
    if best is None:
        raise ValueError(f"Cannot split {len(fractions)} non-zero fractions over at most {max_folds} "
                         f"patients. Received: fractions={tuple(fractions)}")
    return best[1], best[2]


def train_val_test(table: pd.DataFrame, *, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int,
                   label: str = "pathology") -> pd.DataFrame:
    """Assign every row a `split` ("train", "val", "test"), by patient, stratified on `label`.

    The fractions are approximated by whole folds of one StratifiedGroupKFold: the fold count
    k (2..20, at most the number of patients) whose multiples of 1/k come closest to the
    fractions is chosen, and the folds are dealt to test, val and train. (0.8, 0.1, 0.1) is
    exact with k = 10; (0.7, 0.15, 0.15) with k = 20. Fold sizes then vary with patient sizes,
    so the row fractions are met to within about one patient per fold. A zero val or test
    fraction leaves that split empty.

    Returns:
        A copy of `table` with a str `split` column.
    """
    _check_table(table, label)
    fractions = tuple(float(f) for f in fractions)
    if (len(fractions) != 3 or any(not math.isfinite(f) or f < 0 for f in fractions)
            or fractions[0] <= 0 or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6)):
        raise ValueError("fractions must be three numbers (train, val, test) >= 0 with train > 0, "
                         f"summing to 1. Received: fractions={fractions}")
    n_patients = table["patient_id"].nunique()
    k, (n_train, n_val, n_test) = folds_per_split(fractions, min(MAX_SPLIT_FOLDS, n_patients))
    folds = _stratified_group_folds(table, k, seed, label)
    names = np.array(["test"] * n_test + ["val"] * n_val + ["train"] * n_train)
    assigned = table.assign(split=names[folds])
    _check_two_classes(assigned, "split", label)
    check_no_leakage(assigned, by="split")
    return assigned


def reuse_split(table: pd.DataFrame, source: pd.DataFrame, *, fractions: Sequence[float], seed: int,
                label: str = "pathology") -> tuple[pd.DataFrame, int]:
    """Assign `split` by patient from an earlier run's assignments (`source`: patient_id, split).

    A chained table (Shen's whole-image networks after the patch classifier of Table 1) must keep
    every patient in the part the earlier run put them in, or whole-image test patients would
    sit in the patch classifier's training part. Patients the earlier run did not see get a
    fresh patient-level split of their own (`train_val_test` with `fractions`), which cannot
    leak: no earlier model was trained on them.

    Returns:
        A copy of `table` with a `split` column, and the number of patients new to the split.
    """
    _check_table(table, label)
    by_patient = (source.assign(patient_id=source["patient_id"].astype(str))
                  .drop_duplicates("patient_id").set_index("patient_id")["split"])
    patients = table["patient_id"].astype(str)
    split = patients.map(by_patient)
    new = split.isna().to_numpy()
    assigned = table.assign(split=split.to_numpy())
    n_new = int(patients[new].nunique())
    if n_new:
        try:
            fresh = train_val_test(table[new], fractions=fractions, seed=seed, label=label)["split"]
        except ValueError:  # too few new patients for a stratified split: they only train
            fresh = pd.Series("train", index=table.index[new])
        assigned.loc[new, "split"] = fresh.to_numpy()
    check_no_leakage(assigned, by="split")
    return assigned, n_new


def moved_patients(saved: pd.DataFrame, drawn: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Patients that a new draw (`drawn`: patient_id, split) puts in another part than a saved split:
    {patient: (saved part, drawn part)}. Patients in only one of the two are not moved."""
    def by_patient(table: pd.DataFrame) -> pd.Series:
        return table.assign(patient_id=table["patient_id"].astype(str)).drop_duplicates("patient_id") \
            .set_index("patient_id")["split"].astype(str)

    before, after = by_patient(saved), by_patient(drawn)
    shared = before.index.intersection(after.index)
    changed = shared[(before[shared] != after[shared]).to_numpy()]
    return {patient: (before[patient], after[patient]) for patient in sorted(changed)}


TRAINED_PARTS = ("train", "val")  # the parts a saved model learned from (val: its epoch selection)


def upstream_leaks(evaluated: pd.DataFrame, trained: pd.DataFrame) -> pd.DataFrame:
    """The patients a row validates or tests on that the model it starts from learned from.

    `evaluated`: patient_id, part ("val" or "test") of the row; `trained`: patient_id, part ("train"
    or "val") of the split the starting model was trained on. A test patient may be in neither of
    that model's parts (its weights were fitted or selected on her); a validation patient may not be
    in its training part, but may be in its validation part: a chain that keeps one split (Shen's
    whole-image tables on the patch classifier's) validates on the same women throughout, and they
    are never scored as test.

    Returns:
        patient_id, part (here) and trained_part (there) of every such patient, sorted by patient.
    """
    def strictest(table: pd.DataFrame, order: dict) -> pd.DataFrame:  # one row per patient, its strictest part
        return (table.assign(patient_id=table["patient_id"].astype(str), order=table["part"].map(order).fillna(9))
                .sort_values(["patient_id", "order"], kind="stable").drop_duplicates("patient_id"))

    there = strictest(trained, {"train": 0, "val": 1}).set_index("patient_id")["part"]
    here = strictest(evaluated[["patient_id", "part"]], {"test": 0, "val": 1})[["patient_id", "part"]]
    found = here.assign(trained_part=here["patient_id"].map(there))
    bad = ((found["part"] == "test") & found["trained_part"].isin(TRAINED_PARTS)) | \
          ((found["part"] != "test") & (found["trained_part"] == "train"))
    return found[bad].sort_values("patient_id").reset_index(drop=True)


def official_split(table: pd.DataFrame, *, val_fraction: float, seed: int, label: str = "pathology",
                   column: str = OFFICIAL_COLUMN, origin: str | None = None) -> pd.DataFrame:
    """Assign `split` from the dataset's own train/test column: its test rows are the test part, and
    `val_fraction` of its training patients (stratified on `label`) are the validation part.

    Too few training patients of a class for a stratified validation draw leaves the validation
    part empty (as the inner split of cross-validation does). `origin` (the dataset's name) begins
    every error message.

    Returns:
        A copy of `table` with a str `split` column.

    Raises:
        DataError: the column is missing, empty on some row, or holds values other than train/test,
            or one side is empty.
        LeakageError: a patient has rows on both sides of the official split (CBIS-DDSM's mass and
            calc files merged), naming the patients and their images on each side.
    """
    _check_table(table, label)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1). Received: val_fraction={val_fraction!r}")
    if column not in table.columns:
        raise DataError(origin, f"the official train/test split needs the dataset's own assignment (a {column!r} "
                              "column, from a reader that records one: cbis_ddsm, vindr_mammo); this dataset has "
                              "none. Use the patient-level split (`split: patient`)")
    sides = table[column].astype(str).str.strip().str.lower().replace({"nan": "", "none": ""})
    bad = ~sides.isin(OFFICIAL_SIDES)
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        missing = int((sides[bad] == "").sum())
        raise DataError(origin, f"the official split must be 'train' or 'test' on every row; {int(bad.sum())} rows "
                              f"are not ({missing} have none: a dataset without an official split, or a merge "
                              "with one). Use the patient-level split (`split: patient`). Received: "
                              f"{column}={table[column].iloc[first]!r} for patient "
                              f"{table['patient_id'].iloc[first]!r}")
    empty = [side for side in OFFICIAL_SIDES if not (sides == side).any()]
    if empty:
        raise DataError(origin, f"the official split has no {empty[0]!r} rows; it needs both a training and a "
                              "test part (e.g. both the train and the test description CSVs of CBIS-DDSM)")
    check_official_sides(table.assign(**{column: sides.to_numpy()}), column=column, origin=origin)
    assigned = table.assign(split=np.where(sides == "test", "test", "train"))
    train = np.flatnonzero((sides == "train").to_numpy())
    if val_fraction > 0:
        try:
            inner = train_val_test(table.iloc[train], fractions=(1.0 - val_fraction, val_fraction, 0.0),
                                   seed=seed, label=label)["split"].to_numpy()
        except ValueError:  # too few patients of a class for a stratified validation part
            inner = np.full(len(train), "train")
        assigned.iloc[train, assigned.columns.get_loc("split")] = inner
    check_no_leakage(assigned, by="split")
    return assigned


def official_leaks(table: pd.DataFrame, *, column: str = "split") -> dict[str, dict[str, list[str]]]:
    """Patients with rows on both sides of a dataset's own train/test split: {patient: {side: image ids}}."""
    if column not in table.columns or "patient_id" not in table.columns:
        return {}
    sides = table[column].astype(str).str.strip().str.lower()
    known = table[sides.isin(OFFICIAL_SIDES)].assign(**{column: sides[sides.isin(OFFICIAL_SIDES)]})
    per_patient = known.groupby(known["patient_id"].astype(str))[column].nunique()
    leaked = sorted(per_patient[per_patient > 1].index)
    ids = "image_id" if "image_id" in known.columns else column
    return {patient: {side: sorted(set(known.loc[(known["patient_id"].astype(str) == patient)
                                                 & (known[column] == side), ids].astype(str)))
                      for side in OFFICIAL_SIDES}
            for patient in leaked}


def official_summary(table: pd.DataFrame, *, column: str = "split") -> dict:
    """Images and patients per side of a reader's own train/test split, and the patients on both sides
    (`data info`); {} for a dataset without one."""
    if column not in table.columns or table.empty:
        return {}
    sides = table[column].astype(str)
    return {"images": {k: int(v) for k, v in table.groupby(sides)["image_id"].nunique().items()},
            "patients": {k: int(v) for k, v in table.groupby(sides)["patient_id"].nunique().items()},
            "patients_on_both_sides": sorted(official_leaks(table, column=column))}


def check_official_sides(table: pd.DataFrame, *, column: str = OFFICIAL_COLUMN, origin: str | None = None) -> None:
    """Raise LeakageError when a patient has rows on both sides of the official train/test split."""
    leaks = official_leaks(table, column=column)
    if not leaks:
        return
    shown = "; ".join(f"{patient} (train: {', '.join(sides['train'][:2])}; test: {', '.join(sides['test'][:2])})"
                      for patient, sides in list(leaks.items())[:10])
    more = f" and {len(leaks) - 10} more" if len(leaks) > 10 else ""
    raise LeakageError(origin, f"{len(leaks)} patients are on both sides of the official train/test split, so "
                             f"testing on it would test on women seen in training: {shown}{more}. CBIS-DDSM's "
                             "mass files and its calc files each keep a patient on one side, but merged they "
                             "do not (about 31 patients). Use one abnormality (`abnormality: mass` or "
                             "`calcification`) with the official split, or the patient-level split "
                             "(`split: patient`)")


def balance_parts(assigned: pd.DataFrame, *, parts: Sequence[str] = ("val", "test"), seed: int,
                  label: str = "pathology") -> pd.DataFrame:
    """Move whole patients from `parts` to "train" until each part has as many rows of each class.

    Jain & Levy: "The validation and testing sets were each constrained to have an equal number of
    benign and malignant images". Patients are moved in a seeded random order, each only when
    it brings the part's two class counts closer; the classes' surplus goes to training.
    """
    result = assigned.copy()
    rng = np.random.default_rng(seed)
    classes = sorted(result[label].unique())
    if len(classes) != 2:
        raise ValueError(f"balanced parts need two classes. Received: classes={classes}")
    for part in parts:
        in_part = result["split"] == part
        patients = result.loc[in_part, "patient_id"].astype(str).unique()
        for patient in rng.permutation(patients):
            counts = result.loc[result["split"] == part, label].value_counts()
            gap = int(counts.get(classes[1], 0)) - int(counts.get(classes[0], 0))
            if gap == 0:
                break
            rows = (result["split"] == part) & (result["patient_id"].astype(str) == patient)
            own = result.loc[rows, label].value_counts()
            change = int(own.get(classes[1], 0)) - int(own.get(classes[0], 0))
            if abs(gap - change) < abs(gap):
                result.loc[rows, "split"] = "train"
    check_no_leakage(result, by="split")
    return result


def check_no_leakage(assignments: pd.DataFrame, by: str = "fold", *,
                     origin: str | Path | None = None) -> None:
    """Raise LeakageError when a patient has rows in two folds (or splits), or a row has none.

    Args:
        assignments: table with `patient_id` and the `by` column.
        by: "fold" or "split".
        origin: file the assignments came from, named in the error.
    """
    if by not in ASSIGNMENT_COLUMNS:
        raise ValueError(f"by must be one of {list(ASSIGNMENT_COLUMNS)}. Received: by={by!r}")
    missing = [c for c in (GROUP_KEY, by) if c not in assignments.columns]
    if missing:
        raise DataError(origin, f"assignments lack the columns {missing}")
    unassigned = assignments[by].isna() | (assignments[by].astype(str) == "")
    if unassigned.any():
        raise DataError(origin, f"every row needs a {by}; {int(unassigned.sum())} rows have none "
                                f"(first: row {int(np.flatnonzero(unassigned.to_numpy())[0])})")
    per_patient = assignments.groupby(assignments[GROUP_KEY].astype(str))[by].unique()
    leaked = per_patient[per_patient.map(len) > 1]
    if len(leaked):
        shown = "; ".join(f"patient {patient!r} in {by}s {sorted(values.tolist())}"
                          for patient, values in list(leaked.items())[:10])
        more = f" and {len(leaked) - 10} more" if len(leaked) > 10 else ""
        raise LeakageError(origin, f"{len(leaked)} patients appear in more than one {by} "
                                   f"(each patient must sit in exactly one): {shown}{more}")


def save_assignments(assignments: pd.DataFrame, path: str | Path) -> Path:
    """Write the id columns and fold/split columns to CSV atomically; leaking input raises."""
    columns = [c for c in ID_COLUMNS + ASSIGNMENT_COLUMNS if c in assignments.columns]
    present = [c for c in ASSIGNMENT_COLUMNS if c in assignments.columns]
    if "patient_id" not in columns or not present:
        raise ValueError("Assignments need a 'patient_id' column and a 'fold' or 'split' column. "
                         f"Received: columns {list(assignments.columns)}")
    for by in present:
        check_no_leakage(assignments, by=by)
    return atomic_write_text(path, assignments[columns].to_csv(index=False))


def load_assignments(path: str | Path) -> pd.DataFrame:
    """Read assignments saved by `save_assignments` and check them again for leakage."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "fold assignment file not found")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    present = [c for c in ASSIGNMENT_COLUMNS if c in frame.columns]
    if "patient_id" not in frame.columns or not present:
        raise DataError(path, "expected a 'patient_id' column and a 'fold' or 'split' column; "
                              f"found {list(frame.columns)}")
    if "fold" in frame.columns:
        bad = ~frame["fold"].str.fullmatch(r"\d+")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(path, f"fold must be a non-negative integer; found {frame['fold'].iloc[row]!r}",
                            line=row + 2)
        frame["fold"] = frame["fold"].astype(np.int64)
    if "split" in frame.columns:
        bad = ~frame["split"].isin(SPLIT_NAMES)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(path, f"split must be one of {list(SPLIT_NAMES)}; found "
                                  f"{frame['split'].iloc[row]!r}", line=row + 2)
    for by in present:
        check_no_leakage(frame, by=by, origin=path)
    return frame


__all__ = ["LeakageError", "OFFICIAL_COLUMN", "SPLIT_NAMES", "balance_parts", "check_no_leakage",
           "check_official_sides", "load_assignments", "moved_patients", "official_leaks", "official_split",
           "official_summary", "patient_kfold", "reuse_split", "save_assignments", "train_val_test", "upstream_leaks"]



def patient_order(table: pd.DataFrame, *, seed: int, label: str = "label") -> list[str]:
    """The table's patients in the order a learning curve takes them: every prefix is stratified.

    Patients are grouped by the set of labels their rows hold (a woman with only background
    patches, one with lesions too); each group is shuffled with `seed`, and the groups are
    interleaved evenly (the r-th of n patients of a group sits at (r + 0.5) / n), so the first
    m patients hold about m / N of every group. Patients are ordered by id before shuffling, so
    the order depends on the patients and their labels, not on the rows' order.
    """
    _check_table(table, label)
    kinds = (table.assign(patient_id=table["patient_id"].astype(str))
             .groupby("patient_id")[label].agg(lambda v: ",".join(sorted(map(str, set(v))))))
    rng = np.random.default_rng(seed)
    keyed = []
    for kind in sorted(set(kinds)):
        patients = rng.permutation(np.asarray(sorted(kinds.index[kinds == kind])))
        keyed += [((rank + 0.5) / len(patients), rng.random(), str(p)) for rank, p in enumerate(patients)]
    return [patient for *_, patient in sorted(keyed)]


def fraction_of_patients(table: pd.DataFrame, fraction: float, *, seed: int, label: str = "label") -> np.ndarray:
    """Boolean mask of the rows whose patient is among the first `fraction` of `patient_order`.

    round(fraction x N) patients (at least one), plus, for a label the prefix lacks, the first
    patient holding it: each class is kept where the table has it. The sets are nested: for one
    seed, the patients of a smaller fraction are among those of every larger one, and
    fraction 1 keeps every row.

    Reference: issue 14, the learning curve of task (a) (`train_fractions`).
    """
    fraction = check_train_fraction(fraction)
    order = patient_order(table, seed=seed, label=label)
    chosen = set(order[:max(1, math.floor(fraction * len(order) + 0.5))])
    patients = table["patient_id"].astype(str)
    labels = table[label].to_numpy()
    for klass in sorted(set(labels) - set(labels[patients.isin(chosen).to_numpy()]), key=str):
        holders = set(patients[labels == klass])
        chosen.add(next(p for p in order if p in holders))
    return patients.isin(chosen).to_numpy()
