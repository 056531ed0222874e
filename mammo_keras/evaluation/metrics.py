"""Classification metrics as pure functions of (y_true, y_score), wrapping scikit-learn.

Binary tasks take `y_score` as the probability of the positive class (malignant = 1).
A metric that is undefined for the data (AUC with one class present) returns NaN
with a warning, as scikit-learn's habit, instead of stopping a cross-validation.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import numpy as np
from sklearn import metrics as skm

METRIC_NAMES = ("accuracy", "auc", "sensitivity", "specificity", "precision", "recall", "f1")


def _as_arrays(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).astype(int).ravel()
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_score.ndim == 2:  # softmax output: take the positive class column
        y_score = y_score[:, -1]
    y_score = y_score.ravel()
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true and y_score need the same length. "
                         f"Received: {y_true.shape} and {y_score.shape}")
    return y_true, y_score


def confusion(y_true, y_score, *, threshold: float = 0.5) -> np.ndarray:
    """2 x 2 confusion matrix, rows = true class, columns = predicted (benign, malignant)."""
    y_true, y_score = _as_arrays(y_true, y_score)
    return skm.confusion_matrix(y_true, (y_score >= threshold).astype(int), labels=[0, 1])


def accuracy(y_true, y_score, *, threshold: float = 0.5) -> float:
    y_true, y_score = _as_arrays(y_true, y_score)
    return float(skm.accuracy_score(y_true, (y_score >= threshold).astype(int)))


def auc(y_true, y_score) -> float:
    """Area under the ROC curve; NaN (with a warning) when only one class is present."""
    y_true, y_score = _as_arrays(y_true, y_score)
    if len(np.unique(y_true)) < 2:
        warnings.warn("AUC is undefined with one class in y_true; returning NaN", stacklevel=2)
        return float("nan")
    return float(skm.roc_auc_score(y_true, y_score))


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else float("nan")


def sensitivity(y_true, y_score, *, threshold: float = 0.5) -> float:
    """True-positive rate (recall of the malignant class)."""
    (_, _), (fn, tp) = confusion(y_true, y_score, threshold=threshold)
    return _ratio(tp, tp + fn)


def specificity(y_true, y_score, *, threshold: float = 0.5) -> float:
    """True-negative rate (recall of the benign class)."""
    (tn, fp), (_, _) = confusion(y_true, y_score, threshold=threshold)
    return _ratio(tn, tn + fp)


def precision(y_true, y_score, *, threshold: float = 0.5) -> float:
    (_, fp), (_, tp) = confusion(y_true, y_score, threshold=threshold)
    return _ratio(tp, tp + fp)


def recall(y_true, y_score, *, threshold: float = 0.5) -> float:
    return sensitivity(y_true, y_score, threshold=threshold)


def f1(y_true, y_score, *, threshold: float = 0.5) -> float:
    p, r = precision(y_true, y_score, threshold=threshold), recall(y_true, y_score, threshold=threshold)
    return _ratio(2 * p * r, p + r) if np.isfinite(p) and np.isfinite(r) else float("nan")


def multiclass_accuracy(y_true, y_pred) -> float:
    """Share of items whose predicted class (integer) equals the true class (any number of classes)."""
    y_true, y_pred = np.asarray(y_true).astype(int).ravel(), np.asarray(y_pred).astype(int).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred need the same length. Received: {y_true.shape} and {y_pred.shape}")
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


METRICS: Mapping[str, Callable[..., float]] = {
    "accuracy": accuracy, "auc": auc, "sensitivity": sensitivity, "specificity": specificity,
    "precision": precision, "recall": recall, "f1": f1,
}


def all_metrics(y_true, y_score, *, names=METRIC_NAMES) -> dict[str, float]:
    """Every metric in `names` for one set of predictions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: METRICS[name](y_true, y_score) for name in names}


def bootstrap_ci(y_true, y_score, metric: str | Callable[..., float], *, n_replicates: int = 2000,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Point estimate and percentile bootstrap CI of a metric over resampled cases.

    Replicates where the metric is undefined (a resample with one class, for AUC)
    are dropped. Returns (estimate, low, high).
    """
    y_true, y_score = _as_arrays(y_true, y_score)
    function = METRICS[metric] if isinstance(metric, str) else metric
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(y_true), size=(n_replicates, len(y_true)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimate = function(y_true, y_score)
        values = np.array([function(y_true[s], y_score[s]) for s in samples], dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float(estimate), float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(estimate), float(low), float(high)


def fold_summary(per_fold: list[Mapping[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and sample standard deviation (ddof=1) of each metric over folds."""
    names = per_fold[0].keys() if per_fold else []
    summary = {}
    for name in names:
        values = np.array([fold[name] for fold in per_fold], dtype=np.float64)
        values = values[np.isfinite(values)]
        std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        summary[name] = (float(values.mean()) if len(values) else float("nan"), std)
    return summary
