"""Ensembles of finished result rows, combined from their saved predictions.

Each member row has trained one model per fold (or one hold-out model) and written, per part
(`fold_<k>/` or `test/`), the test scores (predictions.csv) and the validation scores
(val_predictions.csv). An ensemble needs no model files: it combines those scores per part.

    average           the mean of the members' scores (Shen's four-model averaging)
    weighted_average  weights from a grid search on the VALIDATION scores (Coccomini Ch. 7.3)
    stack             a small MLP trained on the validation scores (Coccomini's stack model)

Weights and the level-1 model see validation scores only, never the test part, so the
ensemble's test numbers stay honest (the report chose its weights on the test set).

Reference: Shen et al. 2017, Sec. 3.1.4 (model averaging); Coccomini et al., Ch. 7.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_keras.fileio import atomic_write_json, atomic_write_text
from mammo_keras.models.ensembles import select_weights
from mammo_keras.vocabulary import ENSEMBLE_METHODS as METHODS

# The stack's level-1 MLP: fitted on the members' validation scores of each part, which leave no
# held-out set for it, so its early stopping watches its own training loss.
STACK = {"epochs": 40, "patience": 3, "monitor": "loss", "learning_rate": 1e-2, "batch_size": 32,
         "fitted_on": "the members' validation scores of each part"}


def describe(spec: Mapping) -> dict:
    """What an ensemble row does, for the plan: method, members, score column and its settings."""
    method = spec["method"]
    plan = {"method": method, "members": list(spec["members"]), "column": spec.get("column", "score")}
    if method == "weighted_average":
        plan.update(grid=list(spec["grid"]), selected_on="the members' validation scores "
                    "of each part (highest accuracy)", normalised=True)
    elif method == "stack":
        plan.update(hidden=list(spec.get("hidden", (16,))), output="sigmoid", **STACK)
    return plan
SCORE_COLUMNS = ("score", "score_tta")


def _parts(folder: Path) -> list[str]:
    return sorted(p.parent.name for p in folder.glob("*/predictions.csv"))


def _read(path: Path, column: str, what: str) -> pd.DataFrame:
    if not path.is_file():
        why = ("its training part had no validation patients (raise `val_fraction`), or it was trained "
               "before validation scores were saved (remove its folder to retrain)"
               if path.name.startswith("val_") else "the member has not finished this part")
        raise FileNotFoundError(f"{path} is missing: the ensemble needs the {what} of every member; {why}")
    table = pd.read_csv(path, keep_default_na=False)
    if column not in table:
        raise ValueError(f"{path} has no column {column!r} (columns: {list(table.columns)}); "
                         "`score_tta` needs `flip_tta: true` in the config")
    return table


def _aligned(tables: Sequence[pd.DataFrame], paths: Sequence[Path]) -> None:
    reference = list(tables[0]["item_id"].astype(str))
    for table, path in zip(tables[1:], paths[1:]):
        if list(table["item_id"].astype(str)) != reference:
            raise ValueError(f"{path} scores other items than {paths[0]}: ensemble members must share "
                             "their data, splits and seed")


def _stack_scores(x_val: np.ndarray, y_val: np.ndarray, x_test: np.ndarray, *, hidden: Sequence[int],
                  seed: int) -> np.ndarray:
    """Level-1 MLP on the members' validation scores (40 epochs, early stopping patience 3)."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(x_val.shape[1],), name="member_scores")
    x = inputs
    for number, units in enumerate(hidden):
        x = keras.layers.Dense(units, activation="relu", name=f"stack_dense_{number}")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="stack_output")(x)
    model = keras.Model(inputs, outputs, name="stack_level1")
    model.compile(optimizer=keras.optimizers.Adam(STACK["learning_rate"]), loss="binary_crossentropy")
    model.fit(x_val, y_val.astype(np.float32), epochs=STACK["epochs"], batch_size=STACK["batch_size"], verbose=0,
              shuffle=True, callbacks=[keras.callbacks.EarlyStopping(
                  monitor=STACK["monitor"], patience=STACK["patience"], restore_best_weights=True)])
    scores = model.predict(x_test, verbose=0).ravel().astype(np.float64)
    keras.backend.clear_session()
    return scores


def combine(members: Mapping[str, Path], method: str, out: str | Path, *, column: str = "score",
            grid: Sequence[float] | None = None, hidden: Sequence[int] = (16,), seed: int = 0
            ) -> pd.DataFrame:
    """Combine the members' per-part scores; writes out/<part>/predictions.csv and returns them pooled.

    Args:
        members: member label -> its result folder (holding fold_<k>/ or test/ parts).
        method: "average", "weighted_average" or "stack".
        column: which score to combine: "score", or "score_tta" (flip-augmented).
        grid: candidate weights per member for "weighted_average" (required there; Coccomini's
            is models.ensembles.COCCOMINI_GRID).
        hidden: hidden layer widths of the "stack" level-1 MLP.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}. Received: method={method!r}")
    if column not in SCORE_COLUMNS:
        raise ValueError(f"`column` must be one of {SCORE_COLUMNS}. Received: column={column!r}")
    if method == "weighted_average" and not grid:
        raise ValueError("a weighted_average ensemble needs `grid`, the candidate weights per member")
    if len(members) < 2:
        raise ValueError(f"an ensemble needs two or more members. Received: {list(members)}")
    out = Path(out)
    folders = {label: Path(folder) for label, folder in members.items()}
    parts = _parts(next(iter(folders.values())))
    for label, folder in folders.items():
        if not parts or _parts(folder) != parts:
            raise FileNotFoundError(f"member {label!r} ({folder}) has parts {_parts(folder)}, expected "
                                    f"{parts or 'some'}: every member must have finished the same folds")
    pooled = []
    for part in parts:
        paths = [folder / part / "predictions.csv" for folder in folders.values()]
        tests = [_read(path, column, "test scores") for path in paths]
        _aligned(tests, paths)
        scores = np.stack([t[column].to_numpy(np.float64) for t in tests], axis=1)
        record: dict = {"method": method, "column": column, "members": list(folders)}
        if method == "average":
            combined = scores.mean(axis=1)
        else:
            val_paths = [folder / part / "val_predictions.csv" for folder in folders.values()]
            vals = [_read(path, column, "validation scores") for path in val_paths]
            _aligned(vals, val_paths)
            val_scores = np.stack([v[column].to_numpy(np.float64) for v in vals], axis=1)
            y_val = vals[0]["label"].to_numpy().astype(int)
            if method == "weighted_average":
                search = select_weights(list(val_scores.T), y_val, grid)
                weights = np.asarray(search.weights)
                combined = scores @ weights
                record.update(weights=[round(float(w), 4) for w in weights],
                              val_accuracy=search.accuracy, grid=list(grid))
            else:
                combined = _stack_scores(val_scores, y_val, scores, hidden=hidden, seed=seed)
                record.update(hidden=list(hidden), n_val=int(len(y_val)))
        predictions = tests[0][["item_id", "patient_id", "label", "fold"]].assign(score=combined)
        atomic_write_json(out / part / "ensemble.json", record)
        atomic_write_text(out / part / "predictions.csv", predictions.to_csv(index=False))
        pooled.append(predictions)
    return pd.concat(pooled, ignore_index=True)
