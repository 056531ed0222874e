"""Experiment kind `detection`: train each detector on a patient-level split and score it.

Per dataset: records -> detection items (masses with boxes, normals) -> patient-level
train/val/test split -> images downsampled to `input_size`. Per row: one stage of the stage engine
(Adam with its gradient clipping, the config's rate, epochs and batch; the library's losses: focal +
Huber for RetinaNet, BCE + CIoU for YOLOv8; the epoch with the lowest validation loss kept) ->
detections on the test images -> IoU-matched TPs at 0.5, AP (= mAP, one class), sensitivity at
0.5/1/2 FP per image (FROC) with image-bootstrap 95% CIs. Writes per row log.csv, detections.csv,
froc.csv, froc.png, learning_curves.png and boxes.png; the dataset's splits.csv.

The `detection:` block of the config holds: epochs, learning_rate, negatives_per_positive,
normalisation (per model option `normalisation` overrides), hflip, dataset_options (reader
options per dataset, e.g. the phantom's image size), n_box_images.

A row with `baseline: {detector: brightest_blobs, grid: {...}, options: {...}}` is the table's floor
(`run_baseline_row`): boxes on the brightest blobs, its options chosen on the non-test images, scored
on the same test images with the same metrics.

Reference: Hamed et al. 2020, Table 3 and Sec. 3.1 (IoU, mAP).
"""
from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_keras import data
from mammo_keras.config import ExperimentConfig, ModelRow
from mammo_keras.data.splits import OFFICIAL_COLUMN, official_split, save_assignments, train_val_test
from mammo_keras.data import detection as ddata
from mammo_keras.errors import DatasetNotFoundError
from mammo_keras.evaluation import detection as metrics
from mammo_keras.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

DEFAULTS = {"epochs": 10, "learning_rate": 1e-4, "negatives_per_positive": None, "hflip": True,
            "normalisation": "imagenet", "dataset_options": {}, "n_box_images": 4}
METRIC_COLUMNS = ("ap", "sens_at_0.5fpi", "sens_at_1fpi", "sens_at_2fpi", "sensitivity_all", "mean_iou_tp")
CLIPNORM = 10.0
STRATIFY_KEY = "pathology"  # benign / malignant / normal: every part gets both mass kinds (the plan reads it)


def settings_of(config: ExperimentConfig) -> dict:
    """The config's `detection` block over the defaults; unknown keys are an error."""
    unknown = sorted(set(config.detection) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"{config.source}: unknown `detection` keys {unknown}. Valid keys: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **config.detection}


def row_settings(config: ExperimentConfig, row: ModelRow) -> tuple[dict, str, object]:
    """The builder options, the input normalisation and the training stage of one detector row."""
    from mammo_keras.training.stages import Stage

    options = settings_of(config)
    build = dict(row.options)
    normalisation = build.pop("normalisation", options["normalisation"])
    epochs = int(build.pop("epochs", options["epochs"]))
    rate = float(build.pop("learning_rate", options["learning_rate"]))
    # The survey's detectors train end to end: every layer, the lowest validation loss kept (patience
    # = epochs: nothing stops early); the training order is drawn once from the seed (`run`).
    stage = Stage("detect", epochs, optimizer="adam", learning_rate=rate, trainable="all",
                  batch_size=config.batch_size or 4, early_stopping_patience=epochs, clipnorm=CLIPNORM,
                  shuffle=False)
    return build, normalisation, stage


def load_items(config: ExperimentConfig, dataset: str, data_dir, options: dict) -> pd.DataFrame:
    """Detection items of one dataset, limited to `max_items` patients' images, with a `split` column
    (patient-level, or the dataset's own train/test assignment with `split: official`)."""
    from mammo_keras.runner.inputs import dataset_root

    name = data.canonical_name(dataset)
    table = data.read_dataset(name, dataset_root(name, data_dir),
                              **(options.get("dataset_options", {}).get(name) or {}))
    items = ddata.detection_items(table, abnormality=config.abnormality or "mass")
    items = ddata.subsample_negatives(items, options["negatives_per_positive"], seed=config.seed)
    if config.max_items is not None and len(items) > config.max_items:
        patients = items["patient_id"].drop_duplicates().sample(frac=1.0, random_state=config.seed)
        counts = items.groupby("patient_id").size().loc[patients].cumsum()
        items = items[items["patient_id"].isin(counts.index[counts <= config.max_items])]
    items = items.reset_index(drop=True)
    if config.split == "official":  # the dataset's own test part; validation from its training patients
        sides = table.assign(image_id=table["image_id"].astype(str)).groupby("image_id")["split"].first() \
            if "split" in table.columns else pd.Series(dtype=str)
        items = items.assign(**{OFFICIAL_COLUMN: items["image_id"].astype(str).map(sides).fillna("").to_numpy()})
        return official_split(items, val_fraction=config.official_val_fraction, seed=config.seed,
                              label=STRATIFY_KEY, origin=name).drop(columns=[OFFICIAL_COLUMN])
    return train_val_test(items, fractions=config.fractions, seed=config.seed, label=STRATIFY_KEY)


@dataclasses.dataclass
class DetectionInputs:
    """One dataset's detection split, loaded at the input size, or why it is absent."""

    name: str
    split: dict | None = None
    fingerprint: str = ""
    synthetic: bool = False
    absent: str = ""


def load_split(config: ExperimentConfig, dataset: str, data_dir, out: Path,
               progress: Callable[[str], None]) -> DetectionInputs:
    """Items, split (saved as splits.csv) and images of one dataset."""
    options = settings_of(config)
    name = data.canonical_name(dataset)
    try:
        items = load_items(config, dataset, data_dir, options)
    except DatasetNotFoundError as error:
        where = str(error).splitlines()[0]
        progress(f"{name}: dataset absent ({where}); the paper's numbers are shown alone")
        return DetectionInputs(name, absent=f"absent ({where})")
    save_assignments(items.drop(columns=["boxes"]), out / name / "splits.csv")
    split = {}
    for part in ("train", "val", "test"):
        chosen = items[items["split"] == part].reset_index(drop=True)
        images, boxes, scales = ddata.load_images(chosen, config.input_hw)
        split[part] = {"items": chosen, "images": images, "boxes": boxes, "scales": scales}
    counts = {p: f"{len(s['items'])} images ({int(s['items']['n_lesions'].sum())} masses)" for p, s in split.items()}
    progress(f"{name}: {counts} from {items['patient_id'].nunique()} patients, "
             f"{'official train/test split' if config.split == 'official' else 'patient-level split'}, "
             f"downsampled to {config.input_hw[0]}x{config.input_hw[1]}"
             f"{' [SYNTHETIC phantom data]' if name == 'phantom' else ''}")
    return DetectionInputs(name, split, ddata.fingerprint(items), name == "phantom")


def predict(model, images: np.ndarray, *, batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image (boxes (n, 4) clipped to the image, scores (n,)), without the decoder's padding."""
    # Eager batches: keras-hub's NonMaxSuppression needs a static batch size, which a traced
    # `predict` (with a partial last batch) does not give it.
    parts = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        decoded = model.decode_predictions(model(chunk, training=False), chunk)
        parts.append({key: np.asarray(value) for key, value in decoded.items()})
    raw = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    height, width = images.shape[1:3]
    out = []
    for index in range(len(images)):
        count = int(raw["num_detections"][index])
        boxes = np.asarray(raw["boxes"][index][:count], dtype=np.float64)
        scores = np.asarray(raw["confidence"][index][:count], dtype=np.float64)
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        out.append((boxes[keep], scores[keep]))
    return out


def run_row(config: ExperimentConfig, row: ModelRow, split: dict, out: Path,
            progress: Callable[[str], None]) -> tuple[pd.DataFrame, dict]:
    """Train one detector on split["train"] (its best epoch on split["val"]), score split["test"]:
    the detections table and the row's metrics."""
    import keras

    from mammo_keras import models
    from mammo_keras.evaluation.plots import loss_curves
    from mammo_keras.models.detection import training_of
    from mammo_keras.training.fit import fit_stages

    options = settings_of(config)
    build_options, normalisation, stage = row_settings(config, row)
    keras.utils.set_random_seed(config.seed)
    shape = (*config.input_hw, 3)
    model = models.get(row.name, input_shape=shape, num_classes=1, **build_options)
    images, boxes = split["train"]["images"], split["train"]["boxes"]
    if options["hflip"]:  # fixed mirrored copies: the survey's papers all augment by flips/rotations
        flipped, flipped_boxes = ddata.hflip(images, boxes)
        images, boxes = np.concatenate([images, flipped]), list(boxes) + flipped_boxes
    # The order is mixed once, from the seed, lest mirrored copies follow their originals.
    order = np.random.default_rng(config.seed).permutation(len(images))
    images, boxes = images[order], [boxes[i] for i in order]
    contract = training_of(row.name)  # the family's target keys and losses, from the registry
    x_train = ddata.normalise(images, normalisation)
    y_train = ddata.padded_targets(boxes, label_key=contract.label_key)
    x_val = ddata.normalise(split["val"]["images"], normalisation)
    y_val = ddata.padded_targets(split["val"]["boxes"], label_key=contract.label_key)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    progress(f"  {row.label}: {len(x_train)} training images ({'with' if options['hflip'] else 'no'} "
             f"mirrored copies), {len(x_val)} validation, {stage.epochs} epochs at {shape[0]}x{shape[1]}")
    log = fit_stages(model, [stage], (x_train, y_train), (x_val, y_val), seed=config.seed, log_csv=out / "log.csv",
                     compile_options=contract.compile_options)
    seconds = time.perf_counter() - started
    test = split["test"]
    detections = predict(model, ddata.normalise(test["images"], normalisation), batch_size=stage.batch_size)
    loss_curves(log, out / "learning_curves.png", title=f"{row.label}: detection loss")
    selected = log.loc[log["selected"], "total_epoch"] if len(log) else []
    return score_test(config, row, test, detections, out, {
        "seconds": round(seconds, 1), "epochs": stage.epochs,
        "best_epoch": int(selected.iloc[0]) if len(selected) else None, "normalisation": normalisation,
        "n_train_images": len(x_train)})


def score_test(config: ExperimentConfig, row: ModelRow, test: dict, detections, out: Path,
               summary: dict) -> tuple[pd.DataFrame, dict]:
    """Every row's scoring of its test detections, alike for trained detectors and the baseline: AP and
    FROC with image-bootstrap CIs; writes detections.csv, froc.csv, froc.png, boxes.png, metrics.json."""
    from mammo_keras.evaluation.plots import froc_figure

    truth = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in test["boxes"]]
    result = metrics.evaluate(detections, truth)
    cis = metrics.bootstrap(detections, truth, n_replicates=config.n_bootstrap, seed=config.seed)
    fp_rate, sensitivity, thresholds = metrics.froc(detections, truth)
    table = detections_table(test["items"], detections, truth, test["scales"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "detections.csv", table.to_csv(index=False))
    atomic_write_text(out / "froc.csv", pd.DataFrame({"fp_per_image": fp_rate, "sensitivity": sensitivity,
                                                      "threshold": thresholds}).to_csv(index=False))
    froc_figure(fp_rate, sensitivity, out / "froc.png",
                title=f"{row.label}: FROC, {len(truth)} test images ({sum(len(t) for t in truth)} masses)")
    boxes_figure(out / "boxes.png", test, detections, truth, settings_of(config)["n_box_images"])
    summary = {"metrics": result, "ci": cis, **summary, "n_test_images": len(truth),
               "n_test_lesions": int(sum(len(t) for t in truth))}
    atomic_write_json(out / "metrics.json", summary)
    return table, summary


def baseline_candidates(row: ModelRow) -> list[dict]:
    """The detector options a baseline row tries: every combination of its `grid`, over its fixed `options`."""
    import itertools

    grid, fixed = dict(row.baseline.get("grid") or {}), dict(row.baseline.get("options") or {})
    keys = list(grid)
    return [{**fixed, **dict(zip(keys, values))} for values in itertools.product(*(grid[k] for k in keys))]


def run_baseline_row(config: ExperimentConfig, row: ModelRow, split: dict, out: Path,
                     progress: Callable[[str], None]) -> tuple[pd.DataFrame, dict]:
    """The detection floor (`evaluation.detection_baseline.brightest_blobs`): no training; its options
    are chosen by AP on the non-test images (train and validation), the only fitting it does, then it
    runs once on the test images, scored as the trained rows are. Writes selection.csv (AP of every
    candidate on the non-test images) beside the scoring outputs."""
    from mammo_keras.evaluation.detection_baseline import detect

    started = time.perf_counter()
    fit_images = np.concatenate([split["train"]["images"], split["val"]["images"]])
    fit_truth = [np.asarray(b, dtype=np.float64).reshape(-1, 4)
                 for b in list(split["train"]["boxes"]) + list(split["val"]["boxes"])]
    candidates = baseline_candidates(row)
    progress(f"  {row.label}: {row.baseline['detector']}, {len(candidates)} option sets tried on the "
             f"{len(fit_images)} training and validation images (no training), the best AP kept")
    tried = []
    for options in candidates:
        ap = metrics.average_precision(detect(fit_images, **options), fit_truth)
        tried.append({**{key: options.get(key) for key in sorted(options)}, "ap_train_val": ap})
    best = max(range(len(tried)), key=lambda i: (tried[i]["ap_train_val"], -i))  # ties: the first listed
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "selection.csv", pd.DataFrame(tried).assign(
        chosen=[i == best for i in range(len(tried))]).to_csv(index=False))
    chosen = candidates[best]
    progress(f"  {row.label}: chose {chosen} (AP {tried[best]['ap_train_val']:.3f} on the non-test images)")
    detections = detect(split["test"]["images"], **chosen)
    return score_test(config, row, split["test"], detections, out, {
        "seconds": round(time.perf_counter() - started, 1), "epochs": 0, "best_epoch": None,
        "normalisation": "none (grey [0, 1])", "n_train_images": len(fit_images), "options": chosen,
        "ap_train_val": tried[best]["ap_train_val"]})


def detections_table(items: pd.DataFrame, detections, truth, scales) -> pd.DataFrame:
    """Every kept box of every test image with its score, TP flag, IoU and the factor back to original pixels."""
    rows = []
    for (image_id, scale), (boxes, scores), gt in zip(zip(items["image_id"], scales), detections, truth):
        is_tp, overlap = metrics.match(boxes, scores, gt)
        for box, score, hit, value in zip(boxes, scores, is_tp, overlap):
            rows.append({"image_id": image_id, "score": score, "x0": box[0], "y0": box[1], "x1": box[2],
                         "y1": box[3], "tp": bool(hit), "iou": value, "scale_to_original": scale})
    return pd.DataFrame(rows, columns=["image_id", "score", "x0", "y0", "x1", "y1", "tp", "iou", "scale_to_original"])


def boxes_figure(path: Path, test: dict, detections, truth, count: int) -> None:
    """The first `count` test images with a mass (and one normal) with their boxes, side by side."""
    from PIL import Image

    positives = [i for i, t in enumerate(truth) if len(t)][:count]
    negatives = [i for i, t in enumerate(truth) if not len(t)][:1]
    panels = []
    for index in positives + negatives:
        boxes, scores = detections[index]
        is_tp, _ = metrics.match(boxes, scores, truth[index])
        panel = path.with_name(f".panel_{index}.png")
        metrics.draw_boxes(test["images"][index], panel, gt_boxes=truth[index], pred_boxes=boxes,
                           scores=scores, is_tp=is_tp)
        panels.append(Image.open(panel).copy())
        panel.unlink()
    if not panels:
        return
    height = max(p.height for p in panels)
    strip = Image.new("RGB", (sum(p.width for p in panels) + 4 * (len(panels) - 1), height), (255, 255, 255))
    x = 0
    for panel in panels:
        strip.paste(panel, (x, 0))
        x += panel.width + 4
    buffer = io.BytesIO()
    strip.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def plan_baseline_row(config: ExperimentConfig, row: ModelRow) -> dict:
    """What `run_baseline_row` does for `row`, for the plan."""
    return {"detection_baseline": {
        "detector": row.baseline["detector"], "input": [*config.input_hw], "normalisation": "none (grey [0, 1])",
        "fixed_options": dict(row.baseline.get("options") or {}), "grid": dict(row.baseline.get("grid") or {}),
        "candidates": len(baseline_candidates(row)), "training": "none",
        "selection": "the candidate with the best AP (IoU >= 0.5) on the training and validation images; "
                     "the test images are used once, by the chosen candidate",
        "matching": "IoU >= 0.5, a detection takes its best still-unmatched lesion",
        "metrics": ["ap", "sens_at_0.5fpi", "sens_at_1fpi", "sens_at_2fpi"],
        "ci": {"method": "bootstrap over test images", "replicates": config.n_bootstrap}}}


def plan_row(config: ExperimentConfig, row: ModelRow) -> dict:
    """What `run_row` does for `row`, for the plan (the detector is not built: keras-hub / keras-cv
    presets need a download, and YOLOv8's keras-cv is an optional install)."""
    options = settings_of(config)
    build, normalisation, stage = row_settings(config, row)
    return {"detection": {
        "input": [*config.input_hw, 3], "normalisation": normalisation, "builder_options": build,
        "optimizer": {"name": stage.optimizer, "learning_rate": stage.learning_rate, "clipnorm": stage.clipnorm},
        "epochs": stage.epochs, "batch_size": stage.batch_size, "trainable": stage.trainable,
        "loss": "binary cross-entropy + CIoU (YOLOv8)" if row.name.startswith("yolo")
        else "focal + Huber (keras-hub RetinaNet)",
        "augmentation": "fixed horizontally mirrored copies of the training images" if options["hflip"] else None,
        "negatives_per_positive": options["negatives_per_positive"],
        "selection": "best validation loss (EarlyStopping restore_best_weights)",
        "matching": "IoU >= 0.5, a detection takes its best still-unmatched lesion",
        "metrics": ["ap", "sens_at_0.5fpi", "sens_at_1fpi", "sens_at_2fpi"],
        "ci": {"method": "bootstrap over test images", "replicates": config.n_bootstrap}}}
