"""Metrics on hand-counted predictions."""
from __future__ import annotations

import numpy as np
import pytest

from mammo_keras.evaluation import metrics

Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
S = np.array([0.1, 0.2, 0.7, 0.4, 0.9, 0.8, 0.3, 0.6, 0.55, 0.95])
# threshold 0.5: TN=3 FP=1 FN=1 TP=5


def test_confusion_counts_and_rates():
    np.testing.assert_array_equal(metrics.confusion(Y, S), [[3, 1], [1, 5]])
    assert metrics.accuracy(Y, S) == 0.8
    assert metrics.sensitivity(Y, S) == 5 / 6 and metrics.recall(Y, S) == 5 / 6
    assert metrics.specificity(Y, S) == 3 / 4
    assert metrics.precision(Y, S) == 5 / 6
    assert np.isclose(metrics.f1(Y, S), 5 / 6)
    # AUC = fraction of (positive, negative) pairs ranked right: 4+4+2+3+3+4 = 20 of 24.
    assert np.isclose(metrics.auc(Y, S), 20 / 24)


def test_softmax_input_uses_positive_column():
    softmax = np.stack([1 - S, S], axis=1)
    assert metrics.all_metrics(Y, softmax) == metrics.all_metrics(Y, S)


def test_one_class_auc_is_nan_with_warning():
    with pytest.warns(UserWarning, match="one class"):
        assert np.isnan(metrics.auc([1, 1, 1], [0.2, 0.5, 0.9]))


def test_bootstrap_ci_brackets_estimate_and_is_seeded():
    estimate, low, high = metrics.bootstrap_ci(Y, S, "accuracy", n_replicates=2000, seed=0)
    assert estimate == 0.8 and low < 0.8 < high and 0.4 <= low and high <= 1.0
    assert metrics.bootstrap_ci(Y, S, "accuracy", n_replicates=2000, seed=0) == (estimate, low, high)
    perfect = metrics.bootstrap_ci(Y, Y.astype(float), "auc", n_replicates=200)
    assert perfect == (1.0, 1.0, 1.0)


def test_fold_summary_mean_and_sample_std():
    summary = metrics.fold_summary([{"accuracy": 0.8}, {"accuracy": 0.9}, {"accuracy": 1.0}])
    mean, std = summary["accuracy"]
    assert np.isclose(mean, 0.9) and np.isclose(std, 0.1)
