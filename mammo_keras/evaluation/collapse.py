"""Collapse detection: does a row's model score every test item (nearly) the same?

A collapsed model (stuck at the class prior, a dead ReLU head, a loss that is all penalty) gives
one score whatever the input; its accuracy is the majority rate and its AUC 0.5, or an artefact
of ties. That is a failed run, not a measurement, and a table must say so.

The rule (`collapsed`): a part (a CV fold, or the single test part of a hold-out or transfer run)
is collapsed when it holds at least 2 items and the standard deviation of its scores is at most
`tol` (default 1e-3, on probabilities in [0, 1]); a multi-class table (`p_0..p_<k-1>`) is
collapsed in a part when every class probability is. A row is collapsed when **any** of its parts
is: each part is a separately trained model, and one that ignores its input spoils the pooled
estimate.

So a table whose folds are each constant, at different values, is collapsed: every fold's model
ranks nothing within its fold, and whatever pooled AUC it gets measures only how the folds'
constants line up with the folds' class mix.

`score_spread` records the spread of each part beside the rule's decision: std, interquartile
range and the number of distinct scores after rounding to 1e-4.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

DEFAULT_TOL = 1e-3
DECIMALS = 4  # distinct scores are counted after rounding to 1e-4


def score_columns(predictions: pd.DataFrame) -> list[str]:
    """The score columns of a predictions table: `score` (binary) or `p_0..p_<k-1>` (k classes)."""
    probabilities = sorted((c for c in predictions.columns if c.startswith("p_") and c[2:].isdigit()),
                           key=lambda c: int(c[2:]))
    if "score" in predictions:
        return ["score"]
    if probabilities:
        return probabilities
    raise ValueError("a predictions table needs a `score` column or class probabilities `p_0..p_<k-1>`. "
                     f"Received: columns {list(predictions.columns)}")


def _parts(predictions: pd.DataFrame):
    if "fold" not in predictions:
        return [(0, predictions)]
    return list(predictions.groupby("fold", sort=True))


def score_spread(predictions: pd.DataFrame, *, tol: float = DEFAULT_TOL) -> pd.DataFrame:
    """Per part: fold, n, std, iqr, n_distinct and whether it is collapsed (see the module docstring).

    For k classes, std and iqr are the largest over the class probabilities, and n_distinct counts
    distinct rounded probability vectors.
    """
    if not np.isfinite(tol) or tol < 0:
        raise ValueError(f"`tol` must be a finite number >= 0. Received: tol={tol!r}")
    columns = score_columns(predictions)
    rows = []
    for fold, part in _parts(predictions):
        scores = part[columns].to_numpy(dtype=np.float64)
        if not np.isfinite(scores).all():
            raise ValueError(f"scores must be finite. Received: fold {fold} has "
                             f"{int((~np.isfinite(scores)).any(axis=1).sum())} rows with NaN or infinite scores")
        n = len(scores)
        std = float(scores.std(axis=0).max()) if n else float("nan")
        iqr = float(np.subtract(*np.percentile(scores, [75, 25], axis=0)).max()) if n else float("nan")
        distinct = len(np.unique(np.round(scores, DECIMALS), axis=0)) if n else 0
        rows.append({"fold": int(fold), "n": n, "std": std, "iqr": iqr, "n_distinct": distinct,
                     "collapsed": bool(n >= 2 and std <= tol)})
    return pd.DataFrame(rows, columns=["fold", "n", "std", "iqr", "n_distinct", "collapsed"])


def collapsed(predictions: pd.DataFrame, tol: float = DEFAULT_TOL) -> bool:
    """Whether any part of the table scores its items (nearly) alike: std of its scores <= `tol`.

    Args:
        predictions: a predictions table (item_id, patient_id, label, fold, and `score` or
            `p_0..p_<k-1>`); without a `fold` column it is one part.
        tol: the largest standard deviation of a part's scores that still counts as constant.
    """
    return bool(score_spread(predictions, tol=tol)["collapsed"].any())


def collapse_summary(predictions: pd.DataFrame, tol: float = DEFAULT_TOL) -> dict:
    """What a results table records for a row: the flag, which folds collapsed, and each fold's spread."""
    spread = score_spread(predictions, tol=tol)
    return {"collapsed": bool(spread["collapsed"].any()), "tol": float(tol),
            "collapsed_folds": [int(f) for f in spread.loc[spread["collapsed"], "fold"]],
            "min_fold_std": float(spread["std"].min()) if len(spread) else float("nan"),
            "folds": spread.to_dict("records")}
