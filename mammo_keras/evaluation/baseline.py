"""The classical baseline: scikit-image texture and intensity features, scikit-learn classifiers.

Every real-data table gets this row beside its CNN rows: the floor a CNN must clear. It is trained
and scored on exactly the folds (or the train/val/test split) the CNN rows use, and writes the
same predictions tables (`fold_<k>/predictions.csv`, atomically and last, as `training.cv` does),
so the runner's pooled metrics, bootstrap CIs and ROC plots work on it unchanged.

Features (`baseline_features`), per item; all from scikit-image / SciPy, none hand-written:
    glcm_*       grey-level co-occurrence properties (`graycomatrix` + `graycoprops`: contrast,
                 dissimilarity, homogeneity, energy, correlation, entropy) at a few distances,
                 averaged over 4 angles, on the item quantised to `levels` grey levels
    lbp_*        normalised histograms of uniform local binary patterns (`local_binary_pattern`)
    int_*        intensity statistics of the item's values: mean, std, percentiles, skewness and
                 kurtosis (`scipy.stats`), Shannon entropy (`skimage.measure.shannon_entropy`)
    otsu_*       a generic shape descriptor: `regionprops` of the Otsu foreground region at the
                 item's centre (or its largest region when the centre is background). This is the
                 shape of the bright structure in the item, not of a delineated lesion.
    box_*        the lesion's box (width, height, aspect, area, in source-image pixels) from the
                 index `box` column, only with `lesion_boxes=True`: the lesion ROI tasks (chougrad,
                 jain_levy, coccomini) record the lesion's box there, while the Shen patch tasks
                 record the patch's own box and the whole-image task none.

Quantisation is per item, between its 0.5th and 99.5th percentiles (robust to a few hot pixels):
texture describes the pattern, while `int_*` keeps the item's absolute values.

Classifiers (`CLASSIFIERS`): a standardised logistic regression and a random forest, with fixed
settings (nothing is tuned, so no validation part is needed). Each part is trained on every item
outside its test part: in k-fold CV, the other folds; in a hold-out split, `train` and `val`.

Why here and not in `models/`: the model registry builds `keras.Model`s (its tests and the runner
build, freeze and save every entry as one), while this is a scikit-learn reference scored like the
other rows; it reads prepared items and writes predictions tables, the evaluation side of the chain.

Reference: Haralick et al. 1973 (GLCM texture features); Ojala et al. 2002 (uniform LBP).
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
from skimage.filters import threshold_otsu
from skimage.measure import label as label_regions
from skimage.measure import regionprops, shannon_entropy
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mammo_keras.data.rows import is_lazy
from mammo_keras.data.splits import check_no_leakage, fraction_of_patients
from mammo_keras.evaluation.metrics import MULTICLASS_METRICS, all_metrics
from mammo_keras.fileio import atomic_write_json, atomic_write_text
from mammo_keras.vocabulary import BASELINE_CLASSIFIERS

GLCM_PROPERTIES = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "entropy")
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
OTSU_PROPERTIES = ("area_fraction", "eccentricity", "solidity", "extent", "axis_ratio", "compactness",
                   "centroid_offset")
BOX_FEATURES = ("width", "height", "aspect", "area")
CLASSIFIERS = BASELINE_CLASSIFIERS
ID_COLUMNS = ("item_id", "patient_id", "label")


def _grey_items(images: np.ndarray, part: int) -> np.ndarray:
    """(N, H, W) items; paired items (N, parts, H, W) give their part `part`. Lazy (N, H, W) rows
    (`data.rows.ItemRows`) stay lazy: they are read a chunk at a time (`_each_item`)."""
    if is_lazy(images) and images.ndim == 3:
        if min(images.shape[1:]) < 3:
            raise ValueError("images must be (N, H, W) grey items or (N, parts, H, W) pairs, at least 3 x 3. "
                             f"Received: images.shape={images.shape}")
        return images
    images = np.asarray(images)
    if images.ndim == 4:
        if not 0 <= part < images.shape[1]:
            raise ValueError(f"`part` must index the item's parts 0..{images.shape[1] - 1}. Received: part={part!r}")
        images = images[:, part]
    if images.ndim != 3 or min(images.shape[1:], default=0) < 3:
        raise ValueError("images must be (N, H, W) grey items or (N, parts, H, W) pairs, at least 3 x 3. "
                         f"Received: images.shape={np.asarray(images).shape}")
    return images


def _each_item(items):
    """The items one by one: from memory, or lazy rows read a chunk at a time (`ItemRows.chunks`: at most
    64 items and 32 MiB), never the whole set."""
    if not is_lazy(items):
        yield from items
        return
    for chunk in items.chunks():
        yield from chunk


def quantise(item: np.ndarray, levels: int) -> np.ndarray:
    """The item as integers 0..levels-1 between its 0.5th and 99.5th percentiles (constant item: 0)."""
    low, high = np.percentile(item, (0.5, 99.5))
    if not high > low:
        return np.zeros(item.shape, np.uint8)
    scaled = np.clip((item - low) / (high - low), 0.0, 1.0)
    return np.round(scaled * (levels - 1)).astype(np.uint8)


def _glcm(quantised: np.ndarray, levels: int, distances: Sequence[int]) -> list[float]:
    matrix = graycomatrix(quantised, distances=list(distances), angles=list(GLCM_ANGLES), levels=levels,
                          symmetric=True, normed=True)
    # graycoprops: (distances, angles); the mean over angles is the rotation-invariant property.
    return [float(value) for prop in GLCM_PROPERTIES for value in graycoprops(matrix, prop).mean(axis=1)]


def _lbp(grey8: np.ndarray, patterns: Sequence[tuple[int, float]]) -> list[float]:
    values = []
    for points, radius in patterns:
        codes = local_binary_pattern(grey8, points, radius, method="uniform")
        counts = np.bincount(codes.astype(np.int64).ravel(), minlength=points + 2)
        values.extend((counts / counts.sum()).tolist())
    return values


def _intensity(item: np.ndarray, grey8: np.ndarray) -> list[float]:
    values = item.astype(np.float64).ravel()
    std = float(values.std())
    # Skewness and kurtosis of a constant item are undefined (SciPy gives NaN): 0, its flat shape.
    skew = float(stats.skew(values)) if std > 0 else 0.0
    kurtosis = float(stats.kurtosis(values)) if std > 0 else 0.0
    return [float(values.mean()), std, *np.percentile(values, PERCENTILES).tolist(), skew, kurtosis,
            float(shannon_entropy(grey8))]


def _otsu_shape(item: np.ndarray) -> list[float]:
    """regionprops of the Otsu foreground region at the item centre (else its largest region)."""
    if not item.max() > item.min():
        return [0.0] * len(OTSU_PROPERTIES)
    regions = label_regions(item > threshold_otsu(item))
    props = regionprops(regions)
    if not props:
        return [0.0] * len(OTSU_PROPERTIES)
    centre = regions[item.shape[0] // 2, item.shape[1] // 2]
    region = next((p for p in props if p.label == centre), None) if centre else None
    region = region or max(props, key=lambda p: p.area)
    major = region.axis_major_length
    ratio = region.axis_minor_length / major if major > 0 else 0.0
    perimeter = region.perimeter
    compactness = 4 * np.pi * region.area / perimeter ** 2 if perimeter > 0 else 0.0
    offset = np.hypot(region.centroid[0] - (item.shape[0] - 1) / 2,
                      region.centroid[1] - (item.shape[1] - 1) / 2) / np.hypot(*item.shape)
    return [region.area / item.size, float(region.eccentricity), float(region.solidity), float(region.extent),
            float(ratio), float(compactness), float(offset)]


def _boxes(index: pd.DataFrame | None, n: int) -> np.ndarray:
    """(N, 4) lesion boxes from the index `box` column (JSON lists), or a ValueError naming the gaps."""
    if index is None or "box" not in index:
        raise ValueError("lesion_boxes=True needs an index with a `box` column (x0, y0, x1, y1 per item). "
                         f"Received: index columns {None if index is None else list(index.columns)}")
    if len(index) != n:
        raise ValueError(f"index needs one row per item. Received: {len(index)} rows for {n} items")
    boxes = [json.loads(value) if isinstance(value, str) else value for value in index["box"]]
    bad = [i for i, box in enumerate(boxes) if not isinstance(box, (list, tuple)) or len(box) != 4]
    if bad:
        raise ValueError("lesion_boxes=True needs a 4-number box per item (the lesion ROI tasks record one). "
                         f"Received: {len(bad)} rows without one, first item_id="
                         f"{index['item_id'].iloc[bad[0]] if 'item_id' in index else bad[0]!r}")
    return np.asarray(boxes, dtype=np.float64)


def feature_names(*, distances: Sequence[int] = (1, 2, 4), lbp: Sequence[tuple[int, float]] = ((8, 1), (16, 2)),
                  lesion_boxes: bool = False) -> list[str]:
    """The column names `baseline_features` gives for these options, in order."""
    names = [f"glcm_{prop}_d{d}" for prop in GLCM_PROPERTIES for d in distances]
    names += [f"lbp_p{p}_r{r:g}_{code}" for p, r in lbp for code in range(p + 2)]
    names += ["int_mean", "int_std", *(f"int_p{q}" for q in PERCENTILES), "int_skewness", "int_kurtosis",
              "int_entropy"]
    names += [f"otsu_{prop}" for prop in OTSU_PROPERTIES]
    if lesion_boxes:
        names += [f"box_{name}" for name in BOX_FEATURES]
    return names


def baseline_features(images: np.ndarray, index: pd.DataFrame | None = None, *, levels: int = 32,
                      distances: Sequence[int] = (1, 2, 4), lbp: Sequence[tuple[int, float]] = ((8, 1), (16, 2)),
                      lesion_boxes: bool = False, part: int = 0) -> tuple[np.ndarray, list[str]]:
    """Texture, intensity and shape features of every item (see the module docstring).

    Args:
        images: (N, H, W) prepared items, or (N, parts, H, W) pairs (Coccomini's [lesion, baseline]:
            `part` 0, the lesion, is described).
        index: the items' index.csv rows (needed for `lesion_boxes`).
        levels: grey levels of the GLCM quantisation (2..256).
        distances: GLCM pixel distances; lbp: (points, radius) of each uniform LBP histogram.
        lesion_boxes: add the lesion box's width, height, aspect and area from `index["box"]`.

    Returns:
        (features (N, F) float64, all finite; their F names).
    """
    if not isinstance(levels, int) or isinstance(levels, bool) or not 2 <= levels <= 256:
        raise ValueError(f"`levels` must be an integer from 2 to 256. Received: levels={levels!r}")
    items = _grey_items(images, part)
    rows = []
    for item in _each_item(items):
        item = np.asarray(item, dtype=np.float64)
        grey8 = quantise(item, 256)
        rows.append(_glcm(quantise(item, levels), levels, distances) + _lbp(grey8, lbp)
                    + _intensity(item, grey8) + _otsu_shape(item))
    features = np.asarray(rows, dtype=np.float64).reshape(len(items), -1)
    if lesion_boxes:
        boxes = _boxes(index, len(items))
        width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        aspect = np.divide(width, height, out=np.zeros_like(width), where=height > 0)
        features = np.column_stack([features, width, height, aspect, width * height])
    names = feature_names(distances=distances, lbp=lbp, lesion_boxes=lesion_boxes)
    bad = ~np.isfinite(features)
    if bad.any():  # a bug, not data: every feature above is defined for any finite item
        rows_bad, cols_bad = np.nonzero(bad)
        raise ValueError(f"features must be finite. Received: {int(bad.any(axis=1).sum())} items with NaN or "
                         f"infinite values, first item {int(rows_bad[0])} feature {names[cols_bad[0]]!r}")
    return features, names


CLASSIFIER_DEFAULTS = {"logistic_regression": {"C": 1.0, "max_iter": 5000},
                       "random_forest": {"n_estimators": 500, "n_jobs": 1}}


def make_classifier(name: str, *, seed: int = 0, **options):
    """A fresh scikit-learn classifier: `logistic_regression` (standardised) or `random_forest`.

    `options` replace the estimator's settings (CLASSIFIER_DEFAULTS, then scikit-learn's own),
    e.g. n_estimators=100; `random_state` is always `seed`.
    """
    if name not in CLASSIFIER_DEFAULTS:
        raise ValueError(f"Unknown baseline classifier. Valid names: {list(CLASSIFIERS)}. Received: name={name!r}")
    settings = {**CLASSIFIER_DEFAULTS[name], **options, "random_state": seed}
    estimator = LogisticRegression() if name == "logistic_regression" else RandomForestClassifier()
    unknown = sorted(set(settings) - set(estimator.get_params()))
    if unknown:
        raise ValueError(f"{name} takes the options {sorted(estimator.get_params())}. Received: {unknown}")
    estimator.set_params(**settings)
    if name == "logistic_regression":
        return Pipeline([("scale", StandardScaler()), ("classify", estimator)])
    return estimator


def _parts(items: pd.DataFrame) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(fold number, training rows, test rows) of each part of a CV table or a hold-out split."""
    if "fold" in items:
        check_no_leakage(items, by="fold")
        folds = items["fold"].astype(int).to_numpy()
        return [(int(k), np.flatnonzero(folds != k), np.flatnonzero(folds == k)) for k in np.unique(folds)]
    if "split" in items:
        check_no_leakage(items, by="split")
        split = items["split"].astype(str).to_numpy()
        unknown = sorted(set(split) - {"train", "val", "test"})
        if unknown:
            raise ValueError(f"`split` must hold 'train', 'val' or 'test'. Received: split values {unknown}")
        return [(0, np.flatnonzero(split != "test"), np.flatnonzero(split == "test"))]
    raise ValueError("items need a `fold` column (k-fold CV) or a `split` column (train/val/test). "
                     f"Received: columns {list(items.columns)}")


def _score_columns(model, x: np.ndarray, classes: np.ndarray) -> dict[str, np.ndarray]:
    """`score` (P(class 1)) for two classes; `pred` and `p_0..p_<k-1>` for k > 2 classes."""
    probabilities = np.zeros((len(x), len(classes)))
    fitted = model.predict_proba(x)
    for column, klass in enumerate(model.classes_):
        probabilities[:, int(np.searchsorted(classes, klass))] = fitted[:, column]
    if len(classes) == 2:
        return {"score": probabilities[:, 1]}
    return {"pred": classes[probabilities.argmax(axis=1)],
            **{f"p_{int(k)}": probabilities[:, i] for i, k in enumerate(classes)}}


def _signature(name: str, seed: int, features: np.ndarray, items: pd.DataFrame) -> str:
    digest = hashlib.sha256(f"{name}:{seed}:{features.shape}".encode())
    digest.update(np.ascontiguousarray(features).tobytes())
    columns = [c for c in (*ID_COLUMNS, "fold", "split") if c in items]
    digest.update(items[columns].astype(str).to_csv(index=False).encode())
    return digest.hexdigest()


def fit_predict(name: str, features: np.ndarray, items: pd.DataFrame, *, seed: int = 0,
                out: str | Path | None = None, options: dict | None = None, train_fraction: float | None = None,
                progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Train classifier `name` on each part's training items and score its test items.

    Args:
        name: one of CLASSIFIERS.
        features: (N, F) from `baseline_features`, row i describing `items` row i.
        items: item_id, patient_id, label and either `fold` (each fold is the test part once, the
            others train) or `split` (train + val train, test is scored; fold 0). Patients must not
            cross parts (LeakageError otherwise).
        seed: part k's classifier is seeded with seed + k (as `training.cv`).
        options: the classifier's settings (see `make_classifier`).
        train_fraction: a learning curve's point: each part trains on this share of its training
            patients, the ones `training.cv.cross_validate` keeps for the CNN rows of that fraction
            (`data.splits.fraction_of_patients` seeded with seed + k); the test parts are unchanged.
        out: when given, each part writes out/fold_<k>/metrics.json and then, atomically and last,
            predictions.csv; a part finished earlier with the same classifier, seed, features and
            parts is reused.

    Returns:
        The test predictions of every part, in part order: item_id, patient_id, label, fold, and
        `score` (P(label 1)) for two classes, or `pred` and `p_0..p_<k-1>` for k > 2 classes.
    """
    features = np.asarray(features, dtype=np.float64)
    missing = [c for c in ID_COLUMNS if c not in items]
    if missing:
        raise ValueError(f"items need the columns {list(ID_COLUMNS)}. Received: columns without {missing}")
    if features.ndim != 2 or len(features) != len(items):
        raise ValueError(f"features must be (N, F) with one row per item. "
                         f"Received: features.shape={features.shape} for {len(items)} items")
    options = dict(options or {})
    make_classifier(name, seed=seed, **options)  # an unknown name or option fails before any work
    items = items.reset_index(drop=True)
    labels = items["label"].astype(int).to_numpy()
    classes = np.unique(labels)
    if len(classes) < 2 or classes.tolist() != list(range(len(classes))):
        raise ValueError("labels must be the class numbers 0..k-1 with k >= 2, each present. "
                         f"Received: labels {classes.tolist()}")
    signature = _signature(f"{name}{sorted(options.items())}{'' if train_fraction is None else train_fraction}",
                           seed, features, items)
    pooled = []
    for fold, train_rows, test_rows in _parts(items):
        folder = Path(out) / f"fold_{fold}" if out is not None else None
        done = _finished(folder, signature)
        if done is not None:
            pooled.append(done)
            if progress:
                progress(f"fold {fold}: done earlier, reused")
            continue
        started = time.perf_counter()
        if train_fraction is not None:
            train_rows = train_rows[fraction_of_patients(items.iloc[train_rows], train_fraction, seed=seed + fold)]
        model = make_classifier(name, seed=seed + fold, **options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            model.fit(features[train_rows], labels[train_rows])
        predictions = items.iloc[test_rows][list(ID_COLUMNS)].assign(
            fold=fold, **_score_columns(model, features[test_rows], classes))
        metrics = {**_metrics(predictions), "fold": fold, "classifier": name, "options": options, "seed": seed + fold,
                   "n_train": int(len(train_rows)), "n_test": int(len(test_rows)), "train_fraction": train_fraction,
                   "n_train_patients": int(items.iloc[train_rows]["patient_id"].astype(str).nunique()), "n_features": int(features.shape[1]),
                   "signature": signature, "seconds": round(time.perf_counter() - started, 3)}
        if folder is not None:
            atomic_write_json(folder / "metrics.json", metrics)
            atomic_write_text(folder / "predictions.csv", predictions.to_csv(index=False))
        if progress:
            shown = " ".join(f"{k} {metrics[k]:.3f}" for k in ("accuracy", "auc") if k in metrics)
            progress(f"fold {fold}: {shown} ({metrics['seconds']:.1f} s)")
        pooled.append(predictions)
    return pd.concat(pooled, ignore_index=True)


def _metrics(predictions: pd.DataFrame) -> dict[str, float]:
    """A part's metrics as `training.cv` records them: every binary metric of `score`, or the multi-class ones of `pred`."""
    if "pred" in predictions:
        return {name: function(predictions["label"], predictions["pred"]) for name, function in MULTICLASS_METRICS.items()}
    return all_metrics(predictions["label"], predictions["score"])


def _finished(folder: Path | None, signature: str) -> pd.DataFrame | None:
    """The predictions of a part finished earlier on the same inputs, or None."""
    if folder is None or not (folder / "predictions.csv").is_file() or not (folder / "metrics.json").is_file():
        return None
    if json.loads((folder / "metrics.json").read_text()).get("signature") != signature:
        return None
    return pd.read_csv(folder / "predictions.csv", keep_default_na=False)
