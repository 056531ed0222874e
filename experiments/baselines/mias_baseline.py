"""The classical baseline on the real mini-MIAS tasks of issue 14, written as evidence (results + README).

    PYTHONPATH=. python experiments/baselines/mias_baseline.py --data ../shared/data/mini-mias \
        --work /tmp/mias_baseline

Every item comes from the package's own reader and `data.prepare` tasks; folds are the runner's
patient-level folds (`training.cv.assign_folds`, 5 folds, seed 0, stratified on the row's label
after its relabelling, as the runner does after a config's `label_map`). Per row: scikit-image
features (`evaluation.baseline.baseline_features`), logistic regression and random forest trained
on exactly those folds (`evaluation.baseline.fit_predict`), pooled metrics with 95% percentile
bootstrap CIs (`evaluation.metrics.bootstrap_ci`, 2000 replicates, seed 0) and the collapse flag
(`evaluation.collapse`). Also the brightest-blob detector on the mass detection images
(`detection.data.detection_items`), scored by `evaluation.detection`.

This is a script rather than a config because the runner has no baseline experiment kind yet
(it is being restructured); the rows below are data (ROWS) so that kind can take them over.
Outputs: mias_results.json, mias_results.csv and README.md beside this file; the per-fold
predictions.csv / metrics.json and fold files under --work.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_keras.data import read_dataset
from mammo_keras.data.prepare import load_prepared, prepare
from mammo_keras.data.roi import centre_crop
from mammo_keras.evaluation.baseline import CLASSIFIERS, baseline_features, fit_predict
from mammo_keras.evaluation.collapse import collapse_summary
from mammo_keras.evaluation.metrics import accuracy, auc, bootstrap_ci, multiclass_accuracy
from mammo_keras.fileio import atomic_write_json, atomic_write_text
from mammo_keras.data.splits import patient_kfold
from mammo_keras.training.cv import assign_folds

HERE = Path(__file__).resolve().parent
N_FOLDS, SEED, N_BOOTSTRAP = 5, 0, 2000
EXTRA_FOLD_SEEDS = (1, 2, 3, 4, 5)  # rows under SMALL items are also run on these patient splits
SMALL = 200
DETECTION_SIZE = (512, 512)
DETECTOR = {"sigma": 8.0, "max_detections": 10, "box_size": None}  # fixed a priori, not tuned on the data
DETECTION_ORDER = ("ap", "sens_at_0.5fpi", "sens_at_1fpi", "sens_at_2fpi", "sensitivity_all", "fp_per_image_all",
                   "mean_iou_tp")


@dataclass(frozen=True)
class Row:
    """One baseline row: a prepared task, how its items are relabelled, which features."""

    name: str
    issue_task: str
    what: str
    task: str
    options: dict = field(default_factory=dict)
    relabel: Callable[[pd.DataFrame], pd.Series] | None = None  # index -> new label (NaN drops the item)
    lesion_boxes: bool = False
    crop: tuple[int, int] | None = None  # evaluation crop of canvases (Jain & Levy)
    positive: str = ""


def _lesion_vs_background(index: pd.DataFrame) -> pd.Series:
    return (index["label"] > 0).astype(int)


def _abnormal(index: pd.DataFrame) -> pd.Series:
    return (index["abnormality"] != "normal").astype(int)


def _calcification_of_pairs(index: pd.DataFrame) -> pd.Series:
    return index["label"].map({1: 0, 2: 0, 3: 1, 4: 1})  # Coccomini table4_1's label_map


def _calcification_of_rois(index: pd.DataFrame) -> pd.Series:
    return index["abnormality"].map({"mass": 0, "calcification": 1})  # distortion/asymmetry dropped


ROWS = (
    Row("patches_lesion_vs_background", "a", "Shen S10 patches: lesion (classes 1-4) vs background (0)",
        "shen_s10", relabel=_lesion_vs_background, positive="lesion"),
    Row("patches_5class", "a", "Shen S10 patches: Shen's 5 classes (Table 1 task)", "shen_s10"),
    Row("whole_abnormal_vs_normal", "b", "whole images 256 x 192: any abnormality vs normal", "shen",
        {"height": 256, "width": 192}, relabel=_abnormal, positive="abnormal"),
    Row("mass_vs_calc_pairs", "c", "Coccomini lesion patches (part 0 of the pairs): mass vs calcification",
        "coccomini", relabel=_calcification_of_pairs, lesion_boxes=True, positive="calcification"),
    Row("mass_vs_calc_rois", "c", "Chougrad ROIs of masses and calcifications: mass vs calcification",
        "chougrad", relabel=_calcification_of_rois, lesion_boxes=True, positive="calcification"),
    Row("benign_vs_malignant_chougrad", "d", "Chougrad ROIs (all 119 lesions with a box): benign vs malignant",
        "chougrad", lesion_boxes=True, positive="malignant"),
    Row("benign_vs_malignant_jain_levy", "d", "Jain & Levy crops (centre 224 x 224 of the canvas): benign vs "
        "malignant", "jain_levy", lesion_boxes=True, crop=(224, 224), positive="malignant"),
)


NOTES = (
    "Notes:",
    "- (a) The `shen_s10` task with its default options samples its background patches from the images that have "
    "a lesion only (its select step keeps mass and calcification lesions), as these rows do; the configs "
    "`experiments/mias_tasks/patches_2class` and `patches_5class` also draw background from the normal breasts "
    "(task option `normal_images`).",
    "- (b) The `shen` task labels an image malignant (1) or not (0) by default. This row relabels by the index "
    "`abnormality` column: 1 when any finding (mass, calcification, distortion, asymmetry; benign or malignant; with "
    "or without coordinates) is on the image, 0 for the normal images; a config's `label_map` cannot say this "
    "(benign findings and normal images share label 0), the task option `label: abnormal` does "
    "(`experiments/mias_tasks/abnormal_vs_normal`).",
    "- (c) The `coccomini` task drops lesions without an adjacent baseline patch, so its row holds fewer lesions "
    "than the ROI row; both keep masses (CIRC, SPIC, MISC) and calcifications (CALC) with a box and a pathology.",
    "- mini-MIAS gives each lesion as a circle, so its box is a square: `box_aspect` is 1 for every item and "
    "`box_width` = `box_height` = 2 x radius (the lesion size).",
)


def _commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(HERE), "status", "--porcelain", "--", "mammo_keras", str(HERE)],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _prepared(table: pd.DataFrame, root: Path, work: Path, row: Row, log) -> tuple[np.ndarray, pd.DataFrame, dict]:
    tag = "_".join([row.task, *(f"{k}{v}" for k, v in sorted(row.options.items()))])
    started = time.perf_counter()
    report = prepare("mias", table, work / "prepared" / tag, row.task, root=root, options=row.options,
                     progress=False, contact_sheet=False)
    images, index = load_prepared(work / "prepared" / tag, mmap=False)
    log(f"{row.name}: prepared {len(index)} items of task {row.task} ({time.perf_counter() - started:.1f} s)")
    return images, index, {"data_fingerprint": report.data_fingerprint, "prepare_seconds": report.seconds}


def patient_bootstrap_ci(labels: np.ndarray, scores: np.ndarray, patients: np.ndarray, function,
                         *, n_replicates: int = N_BOOTSTRAP, seed: int = SEED) -> tuple[float, float]:
    """Percentile 95% CI of `function(labels, scores)` resampling whole patients (all their items).

    The patch tasks hold 10 overlapping patches per lesion and several items per woman: resampling
    items, as `metrics.bootstrap_ci` does, treats them as independent and narrows the interval.
    """
    codes, groups = np.unique(patients, return_inverse=True)
    members = [np.flatnonzero(groups == k) for k in range(len(codes))]
    rng = np.random.default_rng(seed)
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(n_replicates):
            rows = np.concatenate([members[k] for k in rng.integers(0, len(codes), size=len(codes))])
            values.append(function(labels[rows], scores[rows]))
    values = np.asarray(values, dtype=np.float64)
    low, high = np.quantile(values[np.isfinite(values)], [0.025, 0.975])
    return float(low), float(high)


def pooled_metrics(predictions: pd.DataFrame, n_bootstrap: int = N_BOOTSTRAP) -> dict:
    """Pooled AUC and accuracy (binary) or accuracy (k classes): item and patient bootstrap CIs, fold mean +- sd."""
    multiclass = "pred" in predictions
    column = "pred" if multiclass else "score"
    functions = (("accuracy", multiclass_accuracy),) if multiclass else (("auc", auc), ("accuracy", accuracy))
    labels, scores = predictions["label"].to_numpy(), predictions[column].to_numpy()
    patients = predictions["patient_id"].astype(str).to_numpy()
    result = {}
    for metric, function in functions:
        estimate, low, high = bootstrap_ci(labels, scores, function, n_replicates=n_bootstrap, seed=SEED)
        patient_low, patient_high = patient_bootstrap_ci(labels, scores, patients, function, n_replicates=n_bootstrap)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            per_fold = [function(g["label"], g[column]) for _, g in predictions.groupby("fold")]
        result[metric] = {"pooled": estimate, "ci_low": low, "ci_high": high, "patient_ci_low": patient_low,
                          "patient_ci_high": patient_high, "fold_mean": float(np.nanmean(per_fold)),
                          "fold_std": float(np.nanstd(per_fold, ddof=1))}
    return result


def other_splits_auc(classifier: str, features: np.ndarray, index: pd.DataFrame) -> dict[int, float]:
    """Pooled AUC of the same row on the patient-level folds of each of EXTRA_FOLD_SEEDS (no files kept)."""
    values = {}
    for fold_seed in EXTRA_FOLD_SEEDS:
        table = index.assign(image_id=index["image_id"].astype(str), lesion_id=index["item_id"].astype(str))
        folds = patient_kfold(table[["item_id", "image_id", "patient_id", "lesion_id", "label"]], N_FOLDS,
                              seed=fold_seed, label="label")["fold"].to_numpy()
        items = index[["item_id", "patient_id", "label"]].assign(fold=folds)
        predictions = fit_predict(classifier, features, items, seed=SEED)
        values[fold_seed] = auc(predictions["label"], predictions["score"])
    return values


def run_row(row: Row, table: pd.DataFrame, root: Path, work: Path, log, *, classifiers=CLASSIFIERS,
            other_splits: bool = True, n_bootstrap: int = N_BOOTSTRAP) -> list[dict]:
    """Prepare, relabel, fold, featurise, train the classifiers; one result per classifier and feature set.

    `other_splits`: a binary row with fewer than SMALL items is also scored on the patient folds of
    EXTRA_FOLD_SEEDS, to show how much its AUC moves with the split (the bootstrap CI does not).
    `n_bootstrap`: replicates of each CI (fewer only to check point estimates quickly).
    """
    images, index, provenance = _prepared(table, root, work, row, log)
    if row.relabel is not None:
        labels = row.relabel(index)
        keep = labels.notna().to_numpy()
        images, index = images[keep], index[keep].assign(label=labels[keep].astype(int)).reset_index(drop=True)
    if images.ndim == 4:
        images = images[:, 0]  # Coccomini's [lesion, baseline]: the lesion patch
    if row.crop is not None:
        images = centre_crop(images, row.crop)
    out = work / row.name
    folds = assign_folds(index, N_FOLDS, SEED, out / "folds.csv")
    items = index[["item_id", "patient_id", "label"]].assign(fold=folds["fold"].to_numpy())
    started = time.perf_counter()
    full, names = baseline_features(images, index, lesion_boxes=row.lesion_boxes)
    feature_seconds = time.perf_counter() - started
    log(f"{row.name}: {full.shape[1]} features of {len(items)} items ({feature_seconds:.1f} s)")
    feature_sets = {"texture+box": full, "texture": full[:, [not n.startswith("box_") for n in names]]} \
        if row.lesion_boxes else {"texture": full}
    counts = items["label"].value_counts().sort_index()
    results = []
    for features_name, features in feature_sets.items():
        for classifier in classifiers:
            started = time.perf_counter()
            folder = out / f"{classifier}_{features_name.replace('+', '_')}"
            predictions = fit_predict(classifier, features, items, seed=SEED, out=folder)
            fit_seconds = time.perf_counter() - started
            metrics = pooled_metrics(predictions, n_bootstrap)
            collapse = collapse_summary(predictions)
            if other_splits and len(items) < SMALL and "auc" in metrics:
                metrics["auc"]["other_fold_seeds"] = {str(k): v for k, v in
                                                      other_splits_auc(classifier, features, index).items()}
            results.append({
                "row": row.name, "issue_task": row.issue_task, "what": row.what, "task": row.task,
                "task_options": row.options, "positive": row.positive, "classifier": classifier,
                "features": features_name, "n_features": int(features.shape[1]), "n_items": int(len(items)),
                "n_patients": int(items["patient_id"].nunique()),
                "class_counts": {int(k): int(v) for k, v in counts.items()},
                "majority_rate": float(counts.max() / counts.sum()), "metrics": metrics,
                "collapsed": collapse["collapsed"], "min_fold_std": collapse["min_fold_std"],
                "feature_seconds": round(feature_seconds, 1), "fit_seconds": round(fit_seconds, 1),
                "folds_file": str(out / "folds.csv"), **provenance})
            shown = " ".join(f"{m} {v['pooled']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"
                             for m, v in metrics.items())
            if "other_fold_seeds" in metrics.get("auc", {}):
                shown += f" (other splits: {_seed_range(metrics['auc'])})"
            log(f"  {classifier} ({features_name}): {shown} ({fit_seconds:.1f} s)")
    return results


def run_detection(table: pd.DataFrame, log) -> dict:
    """The brightest-blob detector on the mass detection images (every mass with a box, and normals)."""
    from mammo_keras.data.detection import detection_items, fingerprint, load_images
    from mammo_keras.evaluation import detection as det
    from mammo_keras.evaluation.detection_baseline import detect

    started = time.perf_counter()
    items = detection_items(table)
    images, boxes, _ = load_images(items, DETECTION_SIZE)
    detections = detect(images, **DETECTOR)
    values = det.evaluate(detections, boxes)
    intervals = det.bootstrap(detections, boxes, n_replicates=1000, seed=SEED)
    seconds = time.perf_counter() - started
    result = {"row": "mass_detection_brightest_blobs", "issue_task": "detection", "n_images": int(len(items)),
              "n_positive_images": int(items["label"].sum()), "n_lesions": int(items["n_lesions"].sum()),
              "image_size": list(DETECTION_SIZE), "detector": DETECTOR, "data_fingerprint": fingerprint(items),
              "metrics": {k: {"value": v, "ci_low": intervals[k][0], "ci_high": intervals[k][1]}
                          for k, v in values.items()}, "seconds": round(seconds, 1)}
    log(f"detection: AP {values['ap']:.3f} [{intervals['ap'][0]:.3f}, {intervals['ap'][1]:.3f}], "
        f"sens@1FPI {values['sens_at_1fpi']:.3f} ({seconds:.1f} s)")
    return result


def _ci(metric: dict, percent: bool = False, prefix: str = "") -> str:
    scale, digits = (100, 1) if percent else (1, 3)
    interval = f"[{metric[prefix + 'ci_low'] * scale:.{digits}f}, {metric[prefix + 'ci_high'] * scale:.{digits}f}]"
    return interval if prefix else f"{metric['pooled'] * scale:.{digits}f} {interval}"


def _seed_range(metric: dict) -> str:
    """min-max of the pooled AUC over the main split (seed 0) and the other fold seeds."""
    values = [metric["pooled"], *metric["other_fold_seeds"].values()]
    return f"{min(values):.3f}-{max(values):.3f}"


def write_outputs(results: list[dict], detection: dict, meta: dict, out: Path) -> None:
    atomic_write_json(out / "mias_results.json", {"meta": meta, "rows": results, "detection": detection})
    flat = []
    for r in results:
        entry = {k: v for k, v in r.items() if k not in ("metrics", "class_counts", "task_options")}
        entry["class_counts"] = json.dumps(r["class_counts"])
        for metric, values in r["metrics"].items():
            entry.update({f"{metric}_{k}": json.dumps(v, sort_keys=True) if isinstance(v, dict) else v
                          for k, v in values.items()})
        flat.append(dict(sorted(entry.items())))  # the same file whether rows come from a run or from the JSON
    atomic_write_text(out / "mias_results.csv", pd.DataFrame(flat).to_csv(index=False))
    lines = [
        "# Classical baseline on mini-MIAS (issue 14: the floor a CNN must clear)", "",
        "Generated by `mias_baseline.py` (do not edit by hand; rerun the command below). Every number was measured "
        "by that command; the per-row data are in `mias_results.json` / `mias_results.csv`.", "",
        f"Command: `{meta['command']}`  ",
        f"Commit: `{meta['commit']}`; {meta['machine']}; total wall time {meta['wall_seconds']:.0f} s.  ",
        f"Data: mini-MIAS (Suckling et al. 1994, research use) from `{meta['data']}`, via `read_dataset('mias')` and "
        "`data.prepare` tasks; patient-level folds from `training.cv.assign_folds` (5 folds, seed 0, stratified on "
        "the row's label); pooled out-of-fold metrics with 95% percentile bootstrap CIs (2000 replicates, seed 0); "
        "accuracy at threshold 0.5 (binary) or argmax (5 classes).", "",
        "Features (`evaluation.baseline`): GLCM properties at distances 1, 2, 4 (mean of 4 angles, 32 grey levels), "
        "uniform LBP histograms (8, 1) and (16, 2), intensity statistics, regionprops of the item's central Otsu "
        "region (a generic shape descriptor, not a lesion outline); `texture+box` adds the lesion box's width, "
        "height, aspect and area (mini-MIAS: the bounding square of the Info.txt circle, so width = height = 2r). "
        "Classifiers: standardised logistic regression (C=1) and a 500-tree random forest, untuned.", "",
        "Two 95% CIs per metric: `item CI` resamples items (`metrics.bootstrap_ci`, the package's pooled CI); "
        "`patient CI` resamples whole patients with all their items, the honest one where a woman contributes "
        "several items (the patch rows: 10 overlapping patches per lesion, as many background patches). Neither "
        "includes the variation between patient splits: `AUC over 6 splits` is the range of the pooled AUC over "
        "fold seeds 0-5 (seed 0 is the row's split), for the rows under 200 items.", "",
        "| task | row | classifier | features | n (patients) | classes | majority % | AUC pooled [item CI] | "
        "AUC patient CI | AUC fold mean ± sd | AUC over 6 splits | accuracy % [item CI] | accuracy patient CI | "
        "collapsed | seconds (features + fit) |",
        "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in results:
        m = r["metrics"]
        has_auc = "auc" in m
        auc_text = _ci(m["auc"]) if has_auc else "-"
        auc_patient = _ci(m["auc"], prefix="patient_") if has_auc else "-"
        auc_folds = f"{m['auc']['fold_mean']:.3f} ± {m['auc']['fold_std']:.3f}" if has_auc else "-"
        auc_seeds = _seed_range(m["auc"]) if has_auc and "other_fold_seeds" in m["auc"] else "-"
        counts = ", ".join(f"{k}: {v}" for k, v in r["class_counts"].items())
        lines.append(f"| ({r['issue_task']}) | {r['row']} | {r['classifier']} | {r['features']} | {r['n_items']} "
                     f"({r['n_patients']}) | {counts} | {100 * r['majority_rate']:.1f} | {auc_text} | {auc_patient} | "
                     f"{auc_folds} | {auc_seeds} | {_ci(m['accuracy'], percent=True)} | "
                     f"{_ci(m['accuracy'], percent=True, prefix='patient_')} | {'yes' if r['collapsed'] else 'no'} | "
                     f"{r['feature_seconds']:.0f} + {r['fit_seconds']:.0f} |")
    lines += ["", "Rows: " + "; ".join(f"`{row.name}` = {row.what}"
                                       + (f" (positive class: {row.positive})" if row.positive else "") for row in ROWS)
              + ".", "", *NOTES, ""]
    d = detection["metrics"]
    lines += ["## Mass detection: brightest-blob baseline", "",
              f"`evaluation.detection_baseline.detect` with {json.dumps(detection['detector'], sort_keys=True)} on "
              f"{detection['n_images']} images ({detection['n_positive_images']} with {detection['n_lesions']} masses "
              f"with a box, the rest normal) resized to {detection['image_size'][0]} x {detection['image_size'][1]}; "
              "IoU >= 0.5 matching, CIs from 1000 image-level bootstrap replicates. No training, nothing tuned "
              f"({detection['seconds']:.0f} s).", "",
              "| metric | value [95% CI] |", "|---|---:|"]
    for key in sorted(d, key=lambda k: (DETECTION_ORDER.index(k) if k in DETECTION_ORDER else len(DETECTION_ORDER), k)):
        value = d[key]
        lines.append(f"| {key} | {value['value']:.3f} [{value['ci_low']:.3f}, {value['ci_high']:.3f}] |")
    atomic_write_text(out / "README.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(HERE.parents[1].parent / "shared" / "data" / "mini-mias"))
    parser.add_argument("--work", default="/tmp/mias_baseline", help="prepared items, folds and predictions")
    parser.add_argument("--out", default=str(HERE), help="where the results and README go")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    root, work, out = Path(args.data), Path(args.work), Path(args.out)
    log = lambda message: print(message, flush=True)  # noqa: E731
    table = read_dataset("mias", root)
    results = []
    for row in ROWS:
        results.extend(run_row(row, table, root, work, log))
    detection = run_detection(table, log)
    arguments = sys.argv[1:] if argv is None else argv
    meta = {"command": "PYTHONPATH=. python experiments/baselines/mias_baseline.py " + " ".join(arguments),
            "commit": _commit(), "data": str(args.data), "n_folds": N_FOLDS, "seed": SEED, "n_bootstrap": N_BOOTSTRAP,
            "machine": f"{platform.machine()} CPU, {len(os.sched_getaffinity(0))} cores, Python "
                       f"{platform.python_version()}",
            "wall_seconds": round(time.perf_counter() - started, 1)}
    write_outputs(results, detection, meta, out)
    log(f"wrote {out / 'README.md'} ({meta['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
