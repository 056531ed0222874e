"""Screening-style scoring of a predictions file: image, breast and exam level, with bootstrap CIs.

    report = score_file("results/.../predictions.csv", val_path="results/.../val_predictions.csv")
    report["levels"]["breast"]["auroc"]     # {"value": 0.81, "low": 0.74, "high": 0.87}

Input: the package's own `predictions.csv` (item_id, patient_id, label, fold, score, ...; its
item_id is the image id for whole-image tasks; laterality comes from `index=` the prepared
index.csv, which `data prepare` writes) or any CSV with the columns image_id, patient_id,
laterality, label, score and optionally exam_id. Scores are the probability of cancer.

Levels, as the NYU mammography meta-repository scores image-level models: image scores are
averaged per breast (patient_id + laterality; its evaluation/score.py averages one image per
view, the same when each view has one image), a breast is positive when any of its images is.
An exam (exam_id, or the patient when absent) then averages its breasts' scores
(`exam_rule="mean"`, the rule this package was asked to follow: image scores averaged per breast,
then per exam) and is positive when any breast is. `exam_rule="max"` takes the highest breast
instead: a cancer is in one breast, and the mean halves its score beside a healthy one, so
"max" is the rule to report beside it when exams mix one positive and one negative breast.

Metrics at each level: AUROC, AUPRC (average precision, scikit-learn's step-wise area; the
meta-repository's script uses the trapezoidal area under the PR curve, which runs slightly
higher), sensitivity and specificity at a threshold chosen on validation data (the Youden
optimum, max TPR - FPR, on the validation file aggregated at the same level; the highest such
threshold on ties) or 0.5 without one, said so in the report, and the probabilistic F1 (pF1) of
the RSNA 2023 competition, which scores one prediction per patient-laterality: the breast level.

95% CIs: percentile bootstrap, 2,000 replicates. Replicates resample patients (all their
images, breasts and exams together), so that correlated images of one woman do not narrow the
interval; `resample="unit"` resamples the level's units instead, which gives exactly the
replicates of `metrics.bootstrap_ci` (same seed, same draws) when the data fit in one chunk.
Every replicate is computed at once from resampling counts (weighted ranks), not by a loop.

Calibration: Brier score, expected calibration error over ten equal-width bins, and a
reliability diagram PNG.

References: Stadnick et al. 2021, "Meta-repository of screening mammography classifiers",
arXiv:2108.04800, and https://github.com/nyukat/mammography_metarepository (evaluation/score.py);
Carr et al. 2022, RSNA Screening Mammography Breast Cancer Detection (Kaggle), evaluation page
(pF1); Simon 2020, "Probabilistic extension of precision, recall, and F1 score", Eval4NLP;
Youden 1950, "Index for rating diagnostic tests", Cancer 3(1); Brier 1950, Monthly Weather
Review 78(1).
"""
from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from mammo_keras.data.records import normalise_patient_ids
from mammo_keras.evaluation import metrics
from mammo_keras.errors import DataError

LEVELS = ("image", "breast", "exam")
EXAM_RULES = ("mean", "max")
RESAMPLING = ("patient", "unit")
N_REPLICATES = 2000
CALIBRATION_BINS = 10
DEFAULT_THRESHOLD = 0.5
_CHUNK_DRAWS = 1 << 22  # draws per bootstrap chunk (memory bound); one chunk = bootstrap_ci's stream
_SIDES = {"L": "L", "R": "R", "LEFT": "L", "RIGHT": "R"}


def read_predictions(path: str | Path, *, index: str | Path | None = None) -> pd.DataFrame:
    """A predictions CSV as image_id, patient_id, laterality ("" unknown), exam_id ("" none), label, score.

    Args:
        path: the package's predictions.csv or any CSV with image_id, patient_id, laterality,
            label, score (exam_id optional).
        index: the prepared index.csv whose item_id rows give image_id and laterality (the
            package's own predictions.csv does not carry the side).

    Patient ids lose surrounding spaces and ids differing only by case become one ("P1", " p1 "),
    as the dataset readers do (`data.records.normalise_patient_ids`); `attrs["problems"]` says
    which were merged, and `score_file` adds it to the report's notes.

    Raises:
        DataError: a missing column, a label other than 0/1, a score that is not a finite
            number, an unknown side or an item the index lacks, naming the file and line.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(path, f"cannot read the predictions CSV ({error})") from None
    if "score" not in table.columns and "pred" in table.columns:
        raise DataError(path, "this is a multi-class predictions file (a `pred` column); scoring needs "
                              "a binary one with a `score` column (the probability of cancer)", line=1)
    if "image_id" not in table.columns and "item_id" in table.columns:
        table = table.rename(columns={"item_id": "image_id"})
    if index is not None:
        table = _join_index(table, Path(index), path)
    required = ["image_id", "patient_id", "label", "score"]
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise DataError(path, f"a predictions CSV needs the columns image_id (or item_id), patient_id, "
                              f"label and score, with laterality for the breast level and exam_id "
                              f"optional. Missing: {missing}. Received columns: {list(table.columns)}",
                        line=1)
    patients, merged = normalise_patient_ids(table["patient_id"])  # " p1 " and "P1" are one woman
    out = pd.DataFrame({"image_id": table["image_id"].str.strip(), "patient_id": patients})
    out["laterality"] = [_side(v, path, i + 2) for i, v in enumerate(table.get("laterality", [""] * len(table)))]
    out["exam_id"] = table["exam_id"].str.strip() if "exam_id" in table.columns else ""
    out["label"] = [_label(v, path, i + 2) for i, v in enumerate(table["label"])]
    out["score"] = [_score(v, path, i + 2) for i, v in enumerate(table["score"])]
    if out.empty:
        raise DataError(path, "the predictions file has no rows")
    empty = out["patient_id"] == ""
    if empty.any():
        raise DataError(path, "every row needs a patient_id", line=int(np.flatnonzero(empty)[0]) + 2)
    duplicated = out["image_id"].duplicated()
    if duplicated.any():
        line = int(np.flatnonzero(duplicated)[0]) + 2
        raise DataError(path, f"image_id {out['image_id'][line - 2]!r} appears twice; score one prediction "
                              "per image (pool the folds or the models first)", line=line)
    out.attrs["problems"] = merged
    return out


def aggregate(predictions: pd.DataFrame, level: str, *, exam_rule: str = "mean") -> pd.DataFrame:
    """One row per unit of `level` (image, breast or exam): unit, patient_id, label, score.

    Raises:
        ValueError: an unknown level or rule, or the breast level without laterality.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {list(LEVELS)}. Received: level={level!r}")
    if exam_rule not in EXAM_RULES:
        raise ValueError(f"exam_rule must be one of {list(EXAM_RULES)}. Received: exam_rule={exam_rule!r}")
    if level == "image":
        return predictions.assign(unit=predictions["image_id"])[["unit", "patient_id", "label", "score"]]
    sided = bool((predictions["laterality"] != "").all())
    if level == "breast" and not sided:
        raise ValueError("the breast level needs the side of every image: a laterality column (L/R), or "
                         "the prepared index.csv of a package predictions file (--index). Received: "
                         f"{int((predictions['laterality'] == '').sum())} rows without laterality")
    if level == "breast" or sided:
        breasts = (predictions.groupby(["patient_id", "laterality"], sort=True)
                   .agg(label=("label", "max"), score=("score", "mean"), exam_id=("exam_id", "first"))
                   .reset_index())
        breasts["unit"] = breasts["patient_id"] + "_" + breasts["laterality"]
        if level == "breast":
            return breasts[["unit", "patient_id", "label", "score"]]
        source = breasts
    else:  # exam level without sides: the exam rule over its images
        source = predictions
    exams = source.assign(unit=np.where(source["exam_id"] != "", source["exam_id"], source["patient_id"]))
    patients = exams.groupby("unit")["patient_id"].nunique()
    if (patients > 1).any():
        raise ValueError(f"an exam belongs to one patient. Received: exam_id={patients[patients > 1].index[0]!r} "
                         "with several patient_id values")
    grouped = exams.groupby("unit", sort=True).agg(patient_id=("patient_id", "first"), label=("label", "max"),
                                                   score=("score", exam_rule)).reset_index()
    return grouped[["unit", "patient_id", "label", "score"]]


def youden_threshold(labels, scores) -> float:
    """The score threshold (score >= t is positive) that maximises TPR - FPR; the highest on ties.

    Raises:
        ValueError: the validation data hold one class only, a score that is NaN or infinite, or a
            label other than 0/1.
    """
    labels, scores = metrics.binary_arrays(labels, scores)
    if len(np.unique(labels)) < 2:
        raise ValueError("a threshold chosen on validation data needs both classes there. Received: "
                         f"labels {sorted(set(labels.tolist()))} only")
    fpr, tpr, thresholds = skm.roc_curve(labels, scores)
    finite = np.isfinite(thresholds)
    j = np.where(finite, tpr - fpr, -np.inf)
    return float(thresholds[int(np.argmax(j))])


def pf1(labels, scores) -> float:
    """RSNA 2023's probabilistic F1: scores (clipped to [0, 1]) count as partial true/false positives.

    pPrecision = sum(p * y) / sum(p), pRecall = sum(p * y) / sum(y), pF1 their harmonic mean;
    0 when either is 0; NaN without positives. Reference: the competition's evaluation page.
    """
    labels, scores = metrics.binary_arrays(labels, scores)
    labels, scores = labels.astype(np.float64), np.clip(scores, 0.0, 1.0)
    return float(_weighted_pf1(labels, scores, np.ones((1, len(labels))))[0])


def calibration(labels, scores, *, bins: int = CALIBRATION_BINS) -> dict:
    """Brier score, expected calibration error and the reliability table over equal-width bins."""
    labels, scores = metrics.binary_arrays(labels, scores)
    labels = labels.astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1], right=False), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        count = int(inside.sum())
        mean_score = float(scores[inside].mean()) if count else float("nan")
        observed = float(labels[inside].mean()) if count else float("nan")
        if count:
            ece += count / len(labels) * abs(observed - mean_score)
        table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": count,
                      "mean_score": mean_score, "observed": observed})
    return {"brier": metrics.brier_score(labels, scores), "ece": float(ece), "bins": table}


def score_levels(predictions: pd.DataFrame, *, levels: Sequence[str] = LEVELS,
                 val: pd.DataFrame | None = None, exam_rule: str = "mean", resample: str = "patient",
                 n_replicates: int = N_REPLICATES, confidence: float = 0.95, seed: int = 0) -> dict:
    """Metrics with bootstrap CIs at each level.

    Args:
        predictions: as `read_predictions` returns.
        levels: which of image, breast, exam.
        val: validation predictions (same format) to choose each level's threshold on.
        resample: "patient" (cluster bootstrap) or "unit".

    Returns:
        {"levels": {level: {"n", "positives", "threshold", "threshold_rule", "auroc", "auprc",
        "sensitivity", "specificity", "pf1", "calibration"}}, "notes": [...], settings}; each metric
        is {"value", "low", "high"}.
    """
    if resample not in RESAMPLING:
        raise ValueError(f"resample must be one of {list(RESAMPLING)}. Received: resample={resample!r}")
    unknown = [level for level in levels if level not in LEVELS]
    if unknown or not levels:
        raise ValueError(f"levels must be a non-empty selection of {list(LEVELS)}. Received: levels={list(levels)}")
    notes = []
    sided = bool((predictions["laterality"] != "").all())
    if not sided and "breast" in levels:
        notes.append("breast level needs laterality: give --index (the prepared index.csv) or a laterality "
                     "column")
        levels = [level for level in levels if level != "breast"]
        if not levels:
            aggregate(predictions, "breast")  # raises, saying what is missing
    if "exam" in levels:
        exams = "exam_id" if (predictions["exam_id"] != "").any() else "patient"
        notes.append(f"exam = {exams}; its score is the {exam_rule} of its "
                     f"{'breasts' if sided else 'images (no laterality)'}")
    results = {}
    for level in levels:
        units = aggregate(predictions, level, exam_rule=exam_rule)
        labels, scores = units["label"].to_numpy(), units["score"].to_numpy()
        if val is not None:
            val_units = aggregate(val, level, exam_rule=exam_rule)
            threshold = youden_threshold(val_units["label"], val_units["score"])
            rule = "Youden optimum (max TPR - FPR) on the validation file at this level"
        else:
            threshold, rule = DEFAULT_THRESHOLD, "0.5: no validation file given (--val), not tuned"
        clusters = (pd.factorize(units["patient_id"])[0] if resample == "patient"
                    else np.arange(len(units)))
        estimates = _point_estimates(labels, scores, threshold)
        replicates = _bootstrap(labels, scores, clusters, threshold, n_replicates=n_replicates, seed=seed)
        tail = (1.0 - confidence) / 2.0
        entry = {"n": len(units), "positives": int(labels.sum()), "patients": int(units["patient_id"].nunique()),
                 "threshold": threshold, "threshold_rule": rule}
        for name, value in estimates.items():
            values = replicates[name][np.isfinite(replicates[name])]
            low, high = (np.quantile(values, [tail, 1.0 - tail]) if len(values) else (math.nan, math.nan))
            entry[name] = {"value": float(value), "low": float(low), "high": float(high)}
        entry["calibration"] = calibration(labels, scores)
        results[level] = entry
    if "breast" in results:
        notes.append("pF1 is RSNA 2023's metric at its own level, one prediction per patient-laterality: "
                     "the breast row")
    return {"levels": results, "notes": notes, "exam_rule": exam_rule, "resample": resample,
            "n_replicates": n_replicates, "confidence": confidence, "seed": seed}


def breast_auroc(predictions: pd.DataFrame, *, n_replicates: int = N_REPLICATES, seed: int = 0,
                 confidence: float = 0.95) -> dict | None:
    """The breast-level AUROC of a runner's predictions table, for its results table.

    Args:
        predictions: item_id (or image_id), patient_id, laterality, label, score and fold (a part
            number), one row per image.

    Returns:
        {"fold_mean", "fold_std", "pooled", "ci_low", "ci_high", "n_breasts"}: image scores averaged
        per breast (patient_id + laterality, `aggregate`); per part its AUROC, and the pooled AUROC
        with a percentile patient-bootstrap CI (`score_levels`). None when the side of an image is
        unknown (no breast level) or the table is not a binary one.
    """
    if "score" not in predictions or "laterality" not in predictions or predictions.empty:
        return None
    sides = predictions["laterality"].astype(str).str.strip().str.upper().map(_SIDES)
    if sides.isna().any():
        return None
    ids = predictions["image_id"] if "image_id" in predictions else predictions["item_id"]
    table = pd.DataFrame({"image_id": ids.astype(str).to_numpy(),
                          "patient_id": predictions["patient_id"].astype(str).to_numpy(),
                          "laterality": sides.to_numpy(), "exam_id": "",
                          "label": predictions["label"].astype(int).to_numpy(),
                          "score": predictions["score"].astype(float).to_numpy()})
    if table["label"].nunique() < 2:
        return None
    per_part = []
    for _, group in table.groupby(predictions["fold"].to_numpy() if "fold" in predictions else np.zeros(len(table))):
        breasts = aggregate(group, "breast")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            per_part.append({"auc": metrics.auc(breasts["label"], breasts["score"])})
    mean, std = metrics.fold_summary(per_part)["auc"]
    entry = score_levels(table, levels=["breast"], n_replicates=n_replicates, confidence=confidence,
                         seed=seed)["levels"]["breast"]
    return {"fold_mean": mean, "fold_std": std, "pooled": entry["auroc"]["value"], "ci_low": entry["auroc"]["low"],
            "ci_high": entry["auroc"]["high"], "n_breasts": entry["n"]}


def score_file(path: str | Path, *, val_path: str | Path | None = None, index: str | Path | None = None,
               levels: Sequence[str] = LEVELS, calibration_png: str | Path | None = None, **options) -> dict:
    """`score_levels` on a predictions file (and a validation file), optionally drawing the reliability diagram."""
    predictions = read_predictions(path, index=index)
    val = read_predictions(val_path, index=index) if val_path is not None else None
    report = score_levels(predictions, levels=levels, val=val, **options)
    for name, table in (("predictions", predictions), ("validation", val)):
        report["notes"].extend(f"{name}: {problem}" for problem in ([] if table is None else table.attrs["problems"]))
    report["predictions"] = str(path)
    report["val"] = None if val_path is None else str(val_path)
    if calibration_png is not None:
        report["calibration_png"] = str(reliability_diagram(report, calibration_png, title=Path(path).name))
    return report


def reliability_diagram(report: dict, out_png: str | Path, *, title: str = "") -> Path:
    """Observed cancer rate against mean predicted score per bin, one curve per level, with counts."""
    from mammo_keras.evaluation.plots import new_figure, save_figure

    figure, (top, bottom) = new_figure(2, 1, figsize=(5.5, 6.5), sharex=True,
                                       gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    width = 1.0 / CALIBRATION_BINS / (len(report["levels"]) + 1)
    for number, (level, entry) in enumerate(report["levels"].items()):
        bins = [b for b in entry["calibration"]["bins"] if b["count"]]
        top.plot([b["mean_score"] for b in bins], [b["observed"] for b in bins], marker="o",
                 label=f"{level} (n={entry['n']}, Brier {entry['calibration']['brier']:.3f}, "
                       f"ECE {entry['calibration']['ece']:.3f})")
        bottom.bar([b["low"] + (number + 0.5) * width for b in entry["calibration"]["bins"]],
                   [b["count"] for b in entry["calibration"]["bins"]], width=width, label=level)
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed fraction positive",
            title=f"Reliability diagram{': ' + title if title else ''}")
    top.legend(loc="upper left", fontsize=8)
    bottom.set(xlabel="predicted probability (bin)", ylabel="count")
    bottom.legend(fontsize=8)
    return save_figure(figure, out_png)


def format_report(report: dict) -> str:
    """The report as a text table, with the threshold rule and the notes under it."""
    lines = [f"{'level':7} {'n':>6} {'pos':>5}  {'AUROC [95% CI]':24} {'AUPRC [95% CI]':24} "
             f"{'sens [95% CI]':24} {'spec [95% CI]':24} {'pF1':>6} {'Brier':>6}"]
    for level, entry in report["levels"].items():
        cells = [_cell(entry[name]) for name in ("auroc", "auprc", "sensitivity", "specificity")]
        lines.append(f"{level:7} {entry['n']:>6} {entry['positives']:>5}  " + " ".join(f"{c:24}" for c in cells)
                     + f" {entry['pf1']['value']:6.3f} {entry['calibration']['brier']:6.3f}")
    first = next(iter(report["levels"].values()))
    lines.append(f"threshold for sensitivity/specificity: {first['threshold_rule']}"
                 + ("" if report.get("val") else f" (t = {first['threshold']:g})"))
    if report.get("val"):
        lines.append("  thresholds: " + ", ".join(f"{level} {entry['threshold']:.4g}"
                                                 for level, entry in report["levels"].items()))
    lines.append(f"95% CIs: percentile bootstrap, {report['n_replicates']} replicates resampling "
                 f"{'patients' if report['resample'] == 'patient' else 'units'}, seed {report['seed']}")
    lines.extend(f"note: {note}" for note in report["notes"])
    if report.get("calibration_png"):
        lines.append(f"reliability diagram: {report['calibration_png']}")
    return "\n".join(lines)


def to_json(report: dict) -> str:
    """The report as JSON (NaN written as null)."""
    return json.dumps(_nan_to_none(report), indent=2)


def _cell(metric: dict) -> str:
    if not math.isfinite(metric["value"]):
        return "n/a"
    return f"{metric['value']:.3f} [{metric['low']:.3f}, {metric['high']:.3f}]"


def _point_estimates(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    with warnings.catch_warnings():  # one class present: AUROC NaN, as metrics.auc says
        warnings.simplefilter("ignore")
        return {
            "auroc": metrics.auc(labels, scores),
            "auprc": float(skm.average_precision_score(labels, scores)) if labels.any() else math.nan,
            "sensitivity": metrics.sensitivity(labels, scores, threshold=threshold),
            "specificity": metrics.specificity(labels, scores, threshold=threshold),
            "pf1": pf1(labels, scores),
        }


def _bootstrap(labels: np.ndarray, scores: np.ndarray, clusters: np.ndarray, threshold: float, *,
               n_replicates: int, seed: int) -> dict[str, np.ndarray]:
    """Every metric on `n_replicates` resamples of the clusters, from per-replicate unit counts."""
    rng = np.random.default_rng(seed)
    n_clusters = int(clusters.max()) + 1
    chunk = max(1, _CHUNK_DRAWS // max(n_clusters, len(clusters)))
    order = np.argsort(scores, kind="mergesort")
    labels_sorted, scores_sorted, clusters_sorted = labels[order], scores[order], clusters[order]
    starts = np.r_[0, np.flatnonzero(np.diff(scores_sorted)) + 1]  # groups of tied scores
    positive = (scores_sorted >= threshold).astype(np.float64)
    y = labels_sorted.astype(np.float64)
    clipped = np.clip(scores_sorted, 0.0, 1.0)
    out: dict[str, list[np.ndarray]] = {name: [] for name in ("auroc", "auprc", "sensitivity", "specificity", "pf1")}
    done = 0
    while done < n_replicates:
        size = min(chunk, n_replicates - done)
        draws = rng.integers(0, n_clusters, size=(size, n_clusters))
        flat = (np.arange(size)[:, None] * n_clusters + draws).ravel()
        counts = np.bincount(flat, minlength=size * n_clusters).reshape(size, n_clusters).astype(np.float64)
        weights = counts[:, clusters_sorted]  # (replicates, units) in score order
        auroc, auprc = _weighted_ranking(y, weights, starts)
        out["auroc"].append(auroc)
        out["auprc"].append(auprc)
        pos, neg = weights @ y, weights @ (1.0 - y)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["sensitivity"].append((weights @ (y * positive)) / pos)
            out["specificity"].append((weights @ ((1.0 - y) * (1.0 - positive))) / neg)
        out["pf1"].append(_weighted_pf1(y, clipped, weights))
        done += size
    return {name: np.concatenate(values) for name, values in out.items()}


def _weighted_ranking(y: np.ndarray, weights: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC (ties count half) and average precision per replicate, units sorted by ascending score."""
    pos = np.add.reduceat(weights * y, starts, axis=1)  # (replicates, tie groups), ascending score
    neg = np.add.reduceat(weights * (1.0 - y), starts, axis=1)
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = (pos * (below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)
        tp = np.cumsum(pos[:, ::-1], axis=1)  # descending thresholds
        predicted = tp + np.cumsum(neg[:, ::-1], axis=1)
        precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
        auprc = (pos[:, ::-1] * precision).sum(axis=1) / total_pos
    undefined = (total_pos == 0) | (total_neg == 0)
    auroc[undefined] = np.nan
    auprc[total_pos == 0] = np.nan
    return auroc, auprc


def _weighted_pf1(y: np.ndarray, clipped: np.ndarray, weights: np.ndarray) -> np.ndarray:
    true_positive = weights @ (y * clipped)
    false_positive = weights @ ((1.0 - y) * clipped)
    actual = weights @ y
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = true_positive / (true_positive + false_positive)
        recall = true_positive / actual
        value = 2 * precision * recall / (precision + recall)
    value = np.where((precision > 0) & (recall > 0), value, 0.0)
    return np.where(actual > 0, value, np.nan)


def _join_index(table: pd.DataFrame, index_path: Path, path: Path) -> pd.DataFrame:
    try:
        index = pd.read_csv(index_path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(index_path, f"cannot read the index CSV ({error})") from None
    if "item_id" not in index.columns:
        raise DataError(index_path, f"an index CSV (data prepare's index.csv) needs an item_id column. "
                                    f"Received columns: {list(index.columns)}", line=1)
    extra = [c for c in ("laterality", "exam_id") if c in index.columns and c not in table.columns]
    lookup = index.drop_duplicates("item_id").set_index("item_id")
    absent = ~table["image_id"].isin(lookup.index)
    if absent.any():
        line = int(np.flatnonzero(absent)[0]) + 2
        raise DataError(path, f"item {table['image_id'][line - 2]!r} is not in the index {index_path}", line=line)
    joined = table.copy()
    for column in extra:
        joined[column] = lookup.loc[joined["image_id"], column].to_numpy()
    return joined


def _side(value: str, path: Path, line: int) -> str:
    text = str(value).strip().upper()
    if text == "":
        return ""
    if text not in _SIDES:
        raise DataError(path, f"laterality must be L or R (or LEFT/RIGHT). Received: {value!r}", line=line)
    return _SIDES[text]


def _label(value: str, path: Path, line: int) -> int:
    text = str(value).strip()
    if text not in ("0", "1", "0.0", "1.0"):
        raise DataError(path, f"label must be 0 or 1 (1 = cancer). Received: {value!r}", line=line)
    return int(float(text))


def _score(value: str, path: Path, line: int) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise DataError(path, f"score must be a finite number (the probability of cancer). Received: {value!r}",
                        line=line)
    if not 0.0 <= number <= 1.0:  # Brier, pF1 and calibration read it as a probability
        raise DataError(path, f"score must be a probability in [0, 1] (Brier, pF1 and calibration read it as "
                              f"one; pass probabilities, not logits). Received: {value!r}", line=line)
    return number


def _nan_to_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


__all__ = ["EXAM_RULES", "LEVELS", "aggregate", "breast_auroc", "calibration", "format_report", "pf1", "read_predictions",
           "reliability_diagram", "score_file", "score_levels", "to_json", "youden_threshold"]
