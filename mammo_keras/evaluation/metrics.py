"""Classification metrics as pure functions of (y_true, y_score), wrapping scikit-learn.

Binary tasks take `y_score` as the probability of the positive class (malignant = 1).
A metric that is undefined for the data (AUC with one class present) returns NaN
with a warning, as scikit-learn's habit, instead of stopping a cross-validation.
Bad inputs are errors, never silently counted: a NaN or infinite score or label, or a
binary label other than 0/1 (0.9, 2, -1), raises one ValueError naming the array and how
many rows are bad.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import numpy as np
from sklearn import metrics as skm

from mammo_keras.vocabulary import METRIC_NAMES  # noqa: F401 - the words configs check their metrics against


def _bad_rows(name: str, bad: np.ndarray, rule: str, values: np.ndarray) -> ValueError:
    shown = ", ".join(f"{v!r}" for v in values[bad][:5].tolist())
    return ValueError(f"{name} {rule}. Received: {int(bad.sum())} bad rows of {len(bad)}, "
                      f"{name}[bad]=[{shown}{', ...' if bad.sum() > 5 else ''}]")


def _finite(values: np.ndarray, name: str) -> np.ndarray:
    """`values` as float64, or a ValueError counting the rows with a NaN or infinite value."""
    try:
        if values.dtype.kind not in "biufO":
            raise TypeError
        values = values.astype(np.float64, copy=False)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric. Received: {name} of dtype {values.dtype}") from None
    bad = ~np.isfinite(values)
    if bad.ndim == 2:
        bad = bad.any(axis=1)
    if bad.any():
        flat = values if values.ndim == 1 else values[:, -1]
        raise _bad_rows(name, bad, "must be finite (no NaN or infinity)", flat)
    return values


def _labels(y_true, *, binary: bool = True) -> np.ndarray:
    """Class labels as integers: 0/1 for binary metrics, whole numbers >= 0 otherwise; never cast."""
    values = _finite(np.asarray(y_true).ravel(), "y_true")
    allowed = np.isin(values, (0.0, 1.0)) if binary else (values >= 0) & (values == np.round(values))
    if not allowed.all():
        rule = "must hold the labels 0 and 1" if binary else "must hold class numbers 0, 1, 2, ..."
        raise _bad_rows("y_true", ~allowed, rule, values)
    return values.astype(int)


def binary_arrays(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    """Binary labels (0/1, never cast) and finite scores of one length, the positive column of a softmax.

    Raises:
        ValueError: naming the array and counting its bad rows (NaN, infinity, a label not 0/1).
    """
    y_true = _labels(y_true)
    y_score = _finite(np.asarray(y_score), "y_score")
    if y_score.ndim == 2:  # softmax output: take the positive class column
        y_score = y_score[:, -1]
    y_score = y_score.ravel()
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true and y_score need the same length. "
                         f"Received: {y_true.shape} and {y_score.shape}")
    return y_true, y_score


def confusion(y_true, y_score, *, threshold: float = 0.5) -> np.ndarray:
    """2 x 2 confusion matrix, rows = true class, columns = predicted (benign, malignant)."""
    y_true, y_score = binary_arrays(y_true, y_score)
    return skm.confusion_matrix(y_true, (y_score >= threshold).astype(int), labels=[0, 1])


def accuracy(y_true, y_score, *, threshold: float = 0.5) -> float:
    y_true, y_score = binary_arrays(y_true, y_score)
    return float(skm.accuracy_score(y_true, (y_score >= threshold).astype(int)))


def auc(y_true, y_score) -> float:
    """Area under the ROC curve; NaN (with a warning) when only one class is present."""
    y_true, y_score = binary_arrays(y_true, y_score)
    if len(np.unique(y_true)) < 2:
        warnings.warn("AUC is undefined with one class in y_true; returning NaN", stacklevel=2)
        return float("nan")
    return float(skm.roc_auc_score(y_true, y_score))


def brier_score(y_true, y_score) -> float:
    """Mean squared difference between the predicted probability of the malignant class and the 0/1
    label (lower is better; 0.25 for a constant 0.5). Reference: Brier 1950, Monthly Weather Review 78(1)."""
    y_true, y_score = binary_arrays(y_true, y_score)
    return float(np.mean((y_score - y_true) ** 2))


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


def balanced_accuracy(y_true, y_score, *, threshold: float = 0.5) -> float:
    """The mean of sensitivity and specificity: accuracy with both classes weighted alike (0.5 for a
    constant prediction, whatever the class balance)."""
    sens, spec = sensitivity(y_true, y_score, threshold=threshold), specificity(y_true, y_score, threshold=threshold)
    return (sens + spec) / 2 if np.isfinite(sens) and np.isfinite(spec) else float("nan")


def _classes(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = _labels(y_true, binary=False)
    y_pred = _finite(np.asarray(y_pred).ravel(), "y_pred")
    if not (y_pred == np.round(y_pred)).all():
        raise _bad_rows("y_pred", y_pred != np.round(y_pred), "must hold class numbers", y_pred)
    y_pred = y_pred.astype(int)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred need the same length. Received: {y_true.shape} and {y_pred.shape}")
    return y_true, y_pred


def multiclass_accuracy(y_true, y_pred) -> float:
    """Share of items whose predicted class (integer) equals the true class (any number of classes)."""
    y_true, y_pred = _classes(y_true, y_pred)
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def multiclass_balanced_accuracy(y_true, y_pred) -> float:
    """The mean recall of the classes present in `y_true` (scikit-learn's balanced_accuracy_score):
    1 / k for a constant prediction among k classes, where accuracy is the majority class's share."""
    y_true, y_pred = _classes(y_true, y_pred)
    if not len(y_true):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a predicted class absent from y_true: scikit-learn warns, the value stands
        return float(skm.balanced_accuracy_score(y_true, y_pred))


METRICS: Mapping[str, Callable[..., float]] = {
    "accuracy": accuracy, "auc": auc, "sensitivity": sensitivity, "specificity": specificity,
    "precision": precision, "recall": recall, "f1": f1, "balanced_accuracy": balanced_accuracy,
}
MULTICLASS_METRICS: Mapping[str, Callable[..., float]] = {
    "accuracy": multiclass_accuracy, "balanced_accuracy": multiclass_balanced_accuracy,
}
"""The metrics of a table with more than two classes, on the predicted class (`pred`)."""


def all_metrics(y_true, y_score, *, names=METRIC_NAMES) -> dict[str, float]:
    """Every metric in `names` for one set of predictions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: METRICS[name](y_true, y_score) for name in names}


_CHUNK_DRAWS = 1 << 22  # resample draws per chunk (memory bound); chunks continue one random stream


def _auc_rows(y_true: np.ndarray, y_score: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """ROC AUC of every replicate from its resampling counts: the Mann-Whitney statistic, ties 1/2.

    Items sorted by score and grouped by tied score; per replicate, each positive scores the
    negatives below its group plus half those tied with it. Counts are integers, so the sums are
    exact and each AUC is one rounding of an exact fraction (scikit-learn's trapezoid agrees to
    float64 rounding). NaN where a replicate holds one class.
    """
    order = np.argsort(y_score, kind="mergesort")
    starts = np.r_[0, np.flatnonzero(np.diff(y_score[order])) + 1]
    weights = counts[:, order].astype(np.float64)
    positive = y_true[order].astype(np.float64)
    pos = np.add.reduceat(weights * positive, starts, axis=1)
    neg = np.add.reduceat(weights * (1.0 - positive), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    wins = (pos * (below + 0.5 * neg)).sum(axis=1)
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)


def _ratio_rows(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator != 0, numerator / np.where(denominator != 0, denominator, 1), np.nan)


def _replicate_rows(function: Callable[..., float], y_true: np.ndarray, y_score: np.ndarray,
                    counts: np.ndarray) -> np.ndarray | None:
    """`function` on every replicate at once from its (replicates, n) resampling counts; None if unknown.

    The same values as `function(y_true[s], y_score[s])` for each resample s (the threshold
    metrics exactly, AUC to float64 rounding), from integer counts by matrix products.
    """
    if function is multiclass_accuracy:
        return counts @ (y_true == y_score).astype(np.float64) / y_true.size
    if function is multiclass_balanced_accuracy:
        classes = np.unique(y_true)
        members = (y_true[None, :] == classes[:, None]).astype(np.float64)  # (classes, n)
        hits = members * (y_score == y_true)[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls = (counts @ hits.T) / (counts @ members.T)  # (replicates, classes); NaN: class not drawn
        return np.nanmean(recalls, axis=1)
    if function not in METRICS.values():
        return None
    if function is auc:
        return _auc_rows(y_true, y_score, counts)
    predicted = y_score >= 0.5
    weights = counts.astype(np.float64)
    tp, fp = weights @ (predicted & (y_true == 1)), weights @ (predicted & (y_true == 0))
    fn, tn = weights @ (~predicted & (y_true == 1)), weights @ (~predicted & (y_true == 0))
    if function is accuracy:
        return (tp + tn) / y_true.size
    sensitivity_rows, precision_rows = _ratio_rows(tp, tp + fn), _ratio_rows(tp, tp + fp)
    if function in (sensitivity, recall):
        return sensitivity_rows
    if function is specificity:
        return _ratio_rows(tn, tn + fp)
    if function is balanced_accuracy:
        return (sensitivity_rows + _ratio_rows(tn, tn + fp)) / 2
    if function is precision:
        return precision_rows
    both = np.isfinite(precision_rows) & np.isfinite(sensitivity_rows)
    f1_rows = _ratio_rows(2 * precision_rows * sensitivity_rows, precision_rows + sensitivity_rows)
    return np.where(both, f1_rows, np.nan)


def bootstrap_ci(y_true, y_score, metric: str | Callable[..., float], *, n_replicates: int = 2000,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Point estimate and percentile bootstrap CI of a metric over resampled cases.

    Replicates where the metric is undefined (a resample with one class, for AUC)
    are dropped. Returns (estimate, low, high). A named metric (or one of METRICS) checks its
    inputs as binary; any other function (`MULTICLASS_METRICS`) gets integer class numbers.

    The resamples are `np.random.default_rng(seed).integers(0, n, (n_replicates, n))`, drawn in
    chunks of one stream (the same indices as one draw); the package's metrics are computed for
    every replicate at once from resampling counts (`_replicate_rows`), any other function in
    a loop over the resamples.
    """
    function = METRICS[metric] if isinstance(metric, str) else metric
    if function in METRICS.values():
        y_true, y_score = binary_arrays(y_true, y_score)
    else:
        y_true, y_score = _labels(y_true, binary=False), _finite(np.asarray(y_score), "y_score")
        if len(y_true) != len(y_score):
            raise ValueError(f"y_true and y_score need the same length. "
                             f"Received: {y_true.shape} and {y_score.shape}")
    rng = np.random.default_rng(seed)
    n = len(y_true)
    chunk = max(1, _CHUNK_DRAWS // max(n, 1))
    vectorised = function in METRICS.values() or function in MULTICLASS_METRICS.values()
    parts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimate = function(y_true, y_score)
        done = 0
        while done < n_replicates:
            size = min(chunk, n_replicates - done)
            samples = rng.integers(0, n, size=(size, n))
            if vectorised and n:
                flat = (np.arange(size)[:, None] * n + samples).ravel()
                counts = np.bincount(flat, minlength=size * n).reshape(size, n)
                parts.append(_replicate_rows(function, y_true, y_score, counts))
            else:
                parts.append(np.array([function(y_true[s], y_score[s]) for s in samples], dtype=np.float64))
            done += size
    values = np.concatenate(parts) if parts else np.zeros(0)
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
