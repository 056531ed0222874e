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


BINARY = [metrics.accuracy, metrics.auc, metrics.sensitivity, metrics.specificity, metrics.precision,
          metrics.recall, metrics.f1, metrics.confusion,
          lambda y, s: metrics.bootstrap_ci(y, s, "accuracy", n_replicates=20)]


@pytest.mark.parametrize("function", BINARY)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_refused_naming_the_array_and_the_rows(function, bad):
    scores = S.copy()
    scores[[2, 7]] = bad
    with pytest.raises(ValueError, match=r"^y_score must be finite .*Received: 2 bad rows of 10"):
        function(Y, scores)
    softmax = np.stack([1 - scores, scores], axis=1)
    with pytest.raises(ValueError, match=r"^y_score must be finite .*2 bad rows of 10"):
        function(Y, softmax)


@pytest.mark.parametrize("function", BINARY)
@pytest.mark.parametrize("label", [0.9, 2, -1, np.nan])
def test_labels_other_than_0_and_1_are_refused_not_cast(function, label):
    labels = Y.astype(np.float64)
    labels[0] = label
    with pytest.raises(ValueError, match=r"^y_true must .*Received: 1 bad rows of 10"):
        function(labels, S)


def test_boolean_and_float_labels_that_are_0_or_1_still_count():
    assert metrics.accuracy(Y.astype(bool), S) == metrics.accuracy(Y.astype(float), S) == 0.8


def test_multiclass_accuracy_takes_class_numbers_and_refuses_the_rest():
    truth, predicted = np.array([0, 1, 2, 2, 3]), np.array([0, 1, 2, 1, 3])
    assert metrics.multiclass_accuracy(truth, predicted) == 0.8
    # as reproduce pools a multi-class table: the function itself, labels 0..k-1
    estimate, low, high = metrics.bootstrap_ci(truth, predicted, metrics.multiclass_accuracy, n_replicates=50)
    assert estimate == 0.8 and 0.0 <= low <= 0.8 <= high <= 1.0
    with pytest.raises(ValueError, match=r"y_true must hold class numbers .*1 bad rows of 5"):
        metrics.multiclass_accuracy([0, 1, 2.5, 2, 3], predicted)
    with pytest.raises(ValueError, match=r"y_pred must be finite .*1 bad rows of 5"):
        metrics.multiclass_accuracy(truth, [0, 1, np.nan, 2, 3])
    with pytest.raises(ValueError, match=r"y_score must be finite .*1 bad rows of 5"):
        metrics.bootstrap_ci(truth, [0, 1, np.inf, 2, 3], metrics.multiclass_accuracy, n_replicates=5)


def loop_bootstrap(y_true, y_score, function, *, n_replicates, seed, confidence=0.95):
    """The implementation replaced by the vectorised one: a Python loop of metric calls per resample."""
    import warnings

    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(y_true), size=(n_replicates, len(y_true)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimate = function(y_true, y_score)
        values = np.array([function(y_true[s], y_score[s]) for s in samples], dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return estimate, float("nan"), float("nan")
    low, high = np.quantile(values, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return estimate, low, high


@pytest.mark.parametrize("name", metrics.METRIC_NAMES)
@pytest.mark.parametrize("n, seed", [(7, 0), (60, 1), (301, 2)])
def test_vectorised_bootstrap_equals_the_loop_on_random_data(name, n, seed):
    """Same seed, same resample indices, same values: threshold metrics exactly, AUC to float64 rounding."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    scores = np.round(rng.random(n), 1)  # ties, and scores exactly at the 0.5 threshold
    function = metrics.METRICS[name]
    expected = loop_bootstrap(y, scores, function, n_replicates=200, seed=seed)
    got = metrics.bootstrap_ci(y, scores, name, n_replicates=200, seed=seed)
    if name == "auc":
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    else:
        assert got == pytest.approx(expected, rel=0, abs=0, nan_ok=True)


def test_vectorised_bootstrap_keeps_its_stream_across_chunks(monkeypatch):
    rng = np.random.default_rng(9)
    y, scores = (rng.random(50) < 0.5).astype(int), rng.random(50)
    whole = metrics.bootstrap_ci(y, scores, "auc", n_replicates=300, seed=4)
    monkeypatch.setattr(metrics, "_CHUNK_DRAWS", 50 * 7)  # chunks of 7 replicates
    assert metrics.bootstrap_ci(y, scores, "auc", n_replicates=300, seed=4) == whole
    truth, predicted = rng.integers(0, 4, 40), rng.integers(0, 4, 40)
    assert metrics.bootstrap_ci(truth, predicted, metrics.multiclass_accuracy, n_replicates=200, seed=1) == \
        pytest.approx(loop_bootstrap(truth, predicted, metrics.multiclass_accuracy, n_replicates=200, seed=1),
                      rel=0, abs=0)
    # any other function is still called on each resample
    median_score = metrics.bootstrap_ci(y, scores, lambda t, s: float(np.median(s)), n_replicates=50, seed=2)
    assert median_score == loop_bootstrap(y, scores, lambda t, s: float(np.median(s)), n_replicates=50, seed=2)


def test_balanced_accuracy_is_the_mean_recall_of_the_classes():
    """A constant prediction scores 1 / k whatever the balance (accuracy: the majority's share)."""
    from sklearn.metrics import balanced_accuracy_score

    assert metrics.balanced_accuracy(Y, S) == pytest.approx((5 / 6 + 3 / 4) / 2)
    truth = np.array([0] * 66 + [1] * 6 + [2] * 5 + [3] * 15 + [4] * 8)
    background = np.zeros_like(truth)
    assert metrics.multiclass_accuracy(truth, background) == 0.66
    assert metrics.multiclass_balanced_accuracy(truth, background) == pytest.approx(0.2)
    rng = np.random.default_rng(3)
    predicted = rng.integers(0, 5, truth.size)
    assert metrics.multiclass_balanced_accuracy(truth, predicted) == pytest.approx(
        balanced_accuracy_score(truth, predicted), abs=1e-15)
    # the vectorised bootstrap draws the same resamples as the loop; a class absent from a resample
    # is left out of its mean, as scikit-learn does
    got = metrics.bootstrap_ci(truth, predicted, metrics.multiclass_balanced_accuracy, n_replicates=300, seed=5)
    expected = loop_bootstrap(truth, predicted, metrics.multiclass_balanced_accuracy, n_replicates=300, seed=5)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    small = np.array([0, 0, 0, 0, 0, 1, 2])  # resamples often miss class 1 or 2
    np.testing.assert_allclose(
        metrics.bootstrap_ci(small, np.zeros(7, int), metrics.multiclass_balanced_accuracy, n_replicates=200, seed=0),
        loop_bootstrap(small, np.zeros(7, int), metrics.multiclass_balanced_accuracy, n_replicates=200, seed=0),
        rtol=1e-12)
