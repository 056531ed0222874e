"""Collapse detection on constant, per-fold-constant, partly collapsed and normal predictions tables."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammo_keras.evaluation.collapse import collapse_summary, collapsed, score_spread


def _table(scores, folds) -> pd.DataFrame:
    n = len(scores)
    return pd.DataFrame({"item_id": [f"i{k}" for k in range(n)], "patient_id": [f"p{k}" for k in range(n)],
                         "label": np.arange(n) % 2, "fold": folds, "score": scores})


FOLDS = np.repeat(np.arange(4), 5)


def test_a_constant_table_is_collapsed():
    table = _table(np.full(20, 0.4952), FOLDS)
    assert collapsed(table)
    spread = score_spread(table)
    assert spread["n"].tolist() == [5] * 4 and spread["n_distinct"].tolist() == [1] * 4
    assert (spread["std"] == 0).all() and (spread["iqr"] == 0).all()


def test_folds_each_constant_at_different_values_are_collapsed():
    # Pooled, the scores spread over 0.1..0.9 (std 0.28), but no fold's model ranks its own items.
    table = _table(np.repeat([0.1, 0.4, 0.6, 0.9], 5), FOLDS)
    assert table["score"].std() > 0.25
    assert collapsed(table)
    assert collapse_summary(table)["collapsed_folds"] == [0, 1, 2, 3]


def test_one_collapsed_fold_marks_the_row():
    rng = np.random.default_rng(0)
    scores = rng.random(20)
    scores[FOLDS == 2] = 0.5 + 1e-4 * np.arange(5)  # std 1.4e-4: near constant
    summary = collapse_summary(_table(scores, FOLDS))
    assert summary["collapsed"] and summary["collapsed_folds"] == [2]
    assert summary["min_fold_std"] == pytest.approx(np.std(1e-4 * np.arange(5)))
    assert [f["n_distinct"] for f in summary["folds"]] == [5, 5, 5, 5]


def test_a_normal_table_is_not_collapsed_and_tol_is_the_rule():
    rng = np.random.default_rng(1)
    table = _table(rng.random(20), FOLDS)
    assert not collapsed(table)
    assert score_spread(table)["std"].min() > 0.1
    assert collapsed(table, tol=0.5)  # every fold's std is below 0.5
    # One item per part cannot show a spread: not called collapsed.
    assert not collapsed(_table([0.3, 0.7], [0, 1]))
    with pytest.raises(ValueError, match="Received: tol=-1"):
        collapsed(table, tol=-1)


def test_multiclass_and_single_part_tables():
    probabilities = np.tile([0.2, 0.5, 0.3], (6, 1))
    table = pd.DataFrame({"item_id": list("abcdef"), "label": [0, 1, 2] * 2, "pred": 1,
                          **{f"p_{k}": probabilities[:, k] for k in range(3)}})
    assert collapsed(table)  # no fold column: one part, every class probability constant
    table.loc[0, ["p_0", "p_1"]] = [0.6, 0.1]
    assert not collapsed(table)
    assert score_spread(table)["n_distinct"].tolist() == [2]
    with pytest.raises(ValueError, match="`score` column or class probabilities"):
        collapsed(table.drop(columns=["p_0", "p_1", "p_2"]))
