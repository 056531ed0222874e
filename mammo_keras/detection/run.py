"""Experiment kind `detection`: train each detector on a patient-level split and score it.

`mammo-keras reproduce hamed2020/table3` dispatches here (config `kind: detection`). Per
dataset: records -> detection items (masses with boxes, normals) -> patient-level
train/val/test split -> images downsampled to `input_size` -> per model: fit (Adam, the
library's losses: focal + Huber for RetinaNet, BCE + CIoU for YOLOv8; best epoch by validation
loss) -> detections on the test images -> IoU-matched TPs at 0.5, AP (= mAP, one class),
sensitivity at 0.5/1/2 FP per image (FROC) with image-bootstrap 95% CIs. Writes
results/<paper>/<table>/: table.md, table.csv, run.json, splits per dataset, and per model
log.csv, detections.csv, froc.png and boxes.png.

The `detection:` block of the config holds: epochs, learning_rate, negatives_per_positive,
normalisation (per model option `normalisation` overrides), hflip, dataset_options (reader
options per dataset, e.g. the phantom's image size).

Reference: Hamed et al. 2020, Table 3 and Sec. 3.1 (IoU, mAP).
"""
from __future__ import annotations

import io
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mammo_keras import __version__, settings
from mammo_keras.config import EXPERIMENTS_DIR, ExperimentConfig, ModelRow
from mammo_keras.data import canonical_name, read_dataset
from mammo_keras.data.splits import save_assignments, train_val_test
from mammo_keras.detection import data as ddata
from mammo_keras.errors import DatasetNotFoundError
from mammo_keras.evaluation import detection as metrics
from mammo_keras.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

DEFAULTS = {"epochs": 10, "learning_rate": 1e-4, "negatives_per_positive": None, "hflip": True,
            "normalisation": "imagenet", "dataset_options": {}, "n_box_images": 4}
METRIC_COLUMNS = ("ap", "sens_at_0.5fpi", "sens_at_1fpi", "sens_at_2fpi", "sensitivity_all", "mean_iou_tp")


def settings_of(config: ExperimentConfig) -> dict:
    """The config's `detection` block over the defaults; unknown keys are an error."""
    unknown = sorted(set(config.detection) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"{config.source}: unknown `detection` keys {unknown}. Valid keys: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **config.detection}


def _root(name: str, data_dir) -> Path | None:
    if name == "phantom":
        return None if data_dir is None else Path(data_dir) / "phantom"
    if data_dir is not None:
        return Path(data_dir) / settings.DATASET_FOLDERS.get(name, name)
    return settings.dataset_root(name)


def load_items(config: ExperimentConfig, dataset: str, data_dir, options: dict) -> pd.DataFrame:
    """Detection items of one dataset, limited to `max_items` patients' images, with a `split` column."""
    name = canonical_name(dataset)
    table = read_dataset(name, _root(name, data_dir), **(options.get("dataset_options", {}).get(name) or {}))
    items = ddata.detection_items(table, abnormality=config.abnormality or "mass")
    items = ddata.subsample_negatives(items, options["negatives_per_positive"], seed=config.seed)
    if config.max_items is not None and len(items) > config.max_items:
        patients = items["patient_id"].drop_duplicates().sample(frac=1.0, random_state=config.seed)
        counts = items.groupby("patient_id").size().loc[patients].cumsum()
        items = items[items["patient_id"].isin(counts.index[counts <= config.max_items])]
    return train_val_test(items.reset_index(drop=True), fractions=config.fractions, seed=config.seed,
                          label="pathology")  # benign / malignant / normal: every split gets both mass kinds


def plan_row(config: ExperimentConfig, row: ModelRow) -> dict:
    """What `run_model` does for `row`, for the plan (the detector is not built: keras-hub / keras-cv
    presets need a download, and the loop below is the whole protocol)."""
    options = settings_of(config)
    build = dict(row.options)
    normalisation = build.pop("normalisation", options["normalisation"])
    epochs = int(build.pop("epochs", options["epochs"]))
    learning_rate = float(build.pop("learning_rate", options["learning_rate"]))
    return {"detection": {
        "input": [*config.input_hw, 3], "normalisation": normalisation, "builder_options": build,
        "optimizer": {"name": "adam", "learning_rate": learning_rate, "clipnorm": 10.0},
        "epochs": epochs, "batch_size": config.batch_size or 4, "trainable": "all",
        "loss": "binary cross-entropy + CIoU (YOLOv8)" if row.name.startswith("yolo")
        else "focal + Huber (keras-hub RetinaNet)",
        "augmentation": "fixed horizontally mirrored copies of the training images" if options["hflip"] else None,
        "negatives_per_positive": options["negatives_per_positive"],
        "selection": "best validation loss (EarlyStopping restore_best_weights)",
        "matching": "IoU >= 0.5, a detection takes its best still-unmatched lesion",
        "metrics": ["ap", "sens_at_0.5fpi", "sens_at_1fpi", "sens_at_2fpi"],
        "ci": {"method": "bootstrap over test images", "replicates": config.n_bootstrap}}}


def _compile(model, learning_rate: float):
    import keras

    optimizer = keras.optimizers.Adam(learning_rate, clipnorm=10.0)
    if _is_yolo(model):
        model.compile(optimizer=optimizer, classification_loss="binary_crossentropy", box_loss="ciou")
    else:
        model.compile(optimizer=optimizer)  # keras-hub defaults: focal loss + Huber box loss


def _is_yolo(model) -> bool:
    return type(model).__name__ == "YOLOV8Detector"


def _targets(model, boxes):
    return ddata.padded_targets(boxes, label_key="classes" if _is_yolo(model) else "labels")


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


def run_model(config: ExperimentConfig, row: ModelRow, split: dict, out: Path, options: dict,
              progress: Callable[[str], None]) -> dict:
    """Train one detector on split["train"], pick its best epoch on split["val"], score split["test"]."""
    import keras

    from mammo_keras import models

    build_options = dict(row.options)
    normalisation = build_options.pop("normalisation", options["normalisation"])
    epochs = int(build_options.pop("epochs", options["epochs"]))
    learning_rate = float(build_options.pop("learning_rate", options["learning_rate"]))
    keras.utils.set_random_seed(config.seed)
    shape = (*config.input_hw, 3)
    model = models.get(row.name, input_shape=shape, num_classes=1, **build_options)
    _compile(model, learning_rate)
    images, boxes = split["train"]["images"], split["train"]["boxes"]
    if options["hflip"]:  # fixed mirrored copies: the survey's papers all augment by flips/rotations
        flipped, flipped_boxes = ddata.hflip(images, boxes)
        images, boxes = np.concatenate([images, flipped]), list(boxes) + flipped_boxes
    # keras-hub turns arrays into an unshuffled tf.data pipeline (fit's shuffle is ignored), so
    # the order is mixed once here, from the seed, lest mirrored copies follow their originals.
    order = np.random.default_rng(config.seed).permutation(len(images))
    images, boxes = images[order], [boxes[i] for i in order]
    x_train, y_train = ddata.normalise(images, normalisation), _targets(model, boxes)
    x_val = ddata.normalise(split["val"]["images"], normalisation)
    y_val = _targets(model, split["val"]["boxes"])
    out.mkdir(parents=True, exist_ok=True)
    batch = config.batch_size or 4
    started = time.perf_counter()
    callbacks = [keras.callbacks.CSVLogger(str(out / "log.csv")),
                 keras.callbacks.EarlyStopping("val_loss", patience=epochs, restore_best_weights=True)]
    progress(f"  {row.label}: {len(x_train)} training images ({'with' if options['hflip'] else 'no'} "
             f"mirrored copies), {len(x_val)} validation, {epochs} epochs at {shape[0]}x{shape[1]}")
    model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=epochs, batch_size=batch,
              shuffle=False, callbacks=callbacks, verbose=0)
    seconds = time.perf_counter() - started
    test = split["test"]
    detections = predict(model, ddata.normalise(test["images"], normalisation), batch_size=batch)
    truth = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in test["boxes"]]
    result = metrics.evaluate(detections, truth)
    cis = metrics.bootstrap(detections, truth, n_replicates=config.n_bootstrap, seed=config.seed)
    fp_rate, sensitivity, thresholds = metrics.froc(detections, truth)
    _write_detections(out / "detections.csv", test["items"], detections, truth, test["scales"])
    pd.DataFrame({"fp_per_image": fp_rate, "sensitivity": sensitivity, "threshold": thresholds}).to_csv(
        out / "froc.csv", index=False)
    froc_figure(fp_rate, sensitivity, out / "froc.png",
                title=f"{row.label}: FROC, {len(truth)} test images ({sum(len(t) for t in truth)} masses)")
    logs = pd.read_csv(out / "log.csv")
    _loss_plot(logs, out / "learning_curves.png", title=f"{row.label}: detection loss")
    _boxes_figure(out / "boxes.png", test, detections, truth, options["n_box_images"])
    best_epoch = int(logs["val_loss"].idxmin()) + 1 if "val_loss" in logs and len(logs) else None
    summary = {"metrics": result, "ci": cis, "seconds": round(seconds, 1), "epochs": epochs,
               "best_epoch": best_epoch, "normalisation": normalisation, "n_train_images": len(x_train),
               "n_test_images": len(truth), "n_test_lesions": int(sum(len(t) for t in truth))}
    atomic_write_json(out / "metrics.json", summary)
    return summary


def froc_figure(fp_per_image, sensitivity, path: Path, *, title: str, max_fp: float = 8.0) -> dict:
    """The FROC plot up to `max_fp` false positives per image, where CAD operating points lie.

    A weak detector keeps boxes down to confidence 0.01 and reaches tens of FPs per image; drawn to
    the end, the 0.5/1/2 FP/image points would be squeezed against the axis.
    """
    from mammo_keras.evaluation.plots import froc_curve

    fp_per_image, sensitivity = np.asarray(fp_per_image), np.asarray(sensitivity)
    keep = fp_per_image <= max_fp
    return froc_curve(fp_per_image[keep], sensitivity[keep], path,
                      title=f"{title}\nto {max_fp:g} FP/image (all boxes: {fp_per_image[-1]:.1f} FP/image, "
                            f"sensitivity {sensitivity[-1]:.2f})")


def _loss_plot(logs: pd.DataFrame, path: Path, *, title: str) -> None:
    """Training and validation loss per epoch (the detectors' summed box + class losses)."""
    from mammo_keras.evaluation.plots import _pyplot, _save

    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for column in ("loss", "val_loss"):
        if column in logs:
            axes.plot(logs["epoch"] + 1, logs[column], marker="o", label=column)
    axes.set(xlabel="epoch", ylabel="loss", yscale="log", title=title)
    axes.legend(fontsize=8)
    _save(figure, path)


def _write_detections(path: Path, items: pd.DataFrame, detections, truth, scales) -> None:
    rows = []
    for (image_id, scale), (boxes, scores), gt in zip(zip(items["image_id"], scales), detections, truth):
        is_tp, overlap = metrics.match(boxes, scores, gt)
        for box, score, hit, value in zip(boxes, scores, is_tp, overlap):
            rows.append({"image_id": image_id, "score": score, "x0": box[0], "y0": box[1], "x1": box[2],
                         "y1": box[3], "tp": bool(hit), "iou": value, "scale_to_original": scale})
    frame = pd.DataFrame(rows, columns=["image_id", "score", "x0", "y0", "x1", "y1", "tp", "iou", "scale_to_original"])
    atomic_write_text(path, frame.to_csv(index=False))


def _boxes_figure(path: Path, test: dict, detections, truth, count: int) -> None:
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


def reported_rows(config: ExperimentConfig, experiments_dir: Path = EXPERIMENTS_DIR) -> list[dict]:
    """The paper's rows of the config's reported table (paper_tables.yaml)."""
    path = experiments_dir / config.paper / "paper_tables.yaml"
    if not config.reported_table or not path.is_file():
        return []
    tables = (yaml.safe_load(path.read_text()) or {}).get("tables", {})
    return list((tables.get(config.reported_table) or {}).get("rows", []))


def _paper_text(row: ModelRow, paper_rows: list[dict]) -> str:
    refs = row.paper_row.get("ref")
    refs = refs if isinstance(refs, list) else [refs]
    texts = [f"{r['ref']}: {r['reported']}" for r in paper_rows if r.get("ref") in refs]
    return "; ".join(texts)


def _fmt(value, ci=None) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    text = f"{value:.3f}"
    if ci and all(np.isfinite(ci)):
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return text


def reproduce_detection(config: ExperimentConfig, *, data_dir=None, results_dir="results",
                        progress: Callable[[str], None] = print, commit: str = "unknown") -> Path:
    """Run every (dataset, detector) row of a `kind: detection` config; returns the results folder."""
    import keras
    import tensorflow as tf

    started = time.perf_counter()
    options = settings_of(config)
    out = Path(results_dir) / config.paper / config.table
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    progress(f"{config.name} [{config.profile} profile]: {config.title}")
    paper_rows = reported_rows(config)
    rows, fingerprints, synthetic = [], {}, False
    for dataset in config.datasets:
        name = canonical_name(dataset)
        try:
            items = load_items(config, dataset, data_dir, options)
        except DatasetNotFoundError as error:
            where = str(error).splitlines()[0]
            progress(f"{name}: dataset absent ({where}); the paper's numbers are shown alone")
            for row in config.models:
                rows.append({"dataset": name, "model": row.label, "status": f"absent ({where})",
                             "paper": _paper_text(row, paper_rows)})
            continue
        synthetic |= name == "phantom"
        save_assignments(items.drop(columns=["boxes"]), out / name / "splits.csv")
        fingerprints[name] = ddata.fingerprint(items)
        split = {}
        for part in ("train", "val", "test"):
            chosen = items[items["split"] == part].reset_index(drop=True)
            images, boxes, scales = ddata.load_images(chosen, config.input_hw)
            split[part] = {"items": chosen, "images": images, "boxes": boxes, "scales": scales}
        counts = {p: f"{len(s['items'])} images ({int(s['items']['n_lesions'].sum())} masses)" for p, s in split.items()}
        progress(f"{name}: {counts} from {items['patient_id'].nunique()} patients, patient-level split, "
                 f"downsampled to {config.input_hw[0]}x{config.input_hw[1]}"
                 f"{' [SYNTHETIC phantom data]' if name == 'phantom' else ''}")
        shown = name + (" (synthetic)" if name == "phantom" else "")
        for row in config.models:
            entry = {"dataset": shown, "model": row.label, "detector": row.name,
                     "weights": str(row.options.get("weights")), "paper": _paper_text(row, paper_rows)}
            try:
                summary = run_model(config, row, split, out / name / row.label, options, progress)
            except ImportError as error:  # an optional library (keras-cv for YOLOv8) is missing
                progress(f"  {row.label}: not run: {error}")
                rows.append({**entry, "status": f"not run: {str(error).split('. ')[0]}"})
                continue
            entry.update(status="ok", n_test_images=summary["n_test_images"],
                         n_test_lesions=summary["n_test_lesions"], epochs=summary["epochs"],
                         best_epoch=summary["best_epoch"], minutes=round(summary["seconds"] / 60, 2))
            for key in METRIC_COLUMNS:
                entry[key] = summary["metrics"][key]
                entry[f"{key}_ci_low"], entry[f"{key}_ci_high"] = summary["ci"][key]
            progress(f"  {row.label}: AP {entry['ap']:.3f}, sensitivity at 1 FP/image {entry['sens_at_1fpi']:.3f}")
            rows.append(entry)
    _write_tables(config, rows, paper_rows, out, options, synthetic, commit, time.perf_counter() - started)
    atomic_write_json(out / "run.json", {
        "config": config.to_dict(), "detection": options, "profile": config.profile, "seed": config.seed,
        "git_commit": commit, "data_fingerprints": fingerprints, "synthetic": synthetic,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "versions": {"mammo_keras": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
                     "keras_hub": _version("keras_hub"), "keras_cv": _version("keras_cv"),
                     "python": platform.python_version()},
        "rows": rows})
    return out


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module.replace("_", "-"))
    except PackageNotFoundError:
        return "not installed"


def _write_tables(config, rows, paper_rows, out: Path, options: dict, synthetic: bool, commit: str,
                  seconds: float) -> None:
    frame = pd.DataFrame(rows)
    atomic_write_text(out / "table.csv", frame.to_csv(index=False))
    lines = [f"# {config.title}", ""]
    if synthetic:
        lines += ["**SYNTHETIC DATA**: rows on the embedded phantom dataset show that the pipeline runs and "
                  "learns an easy signal, not the papers' accuracy. Use `--data DIR --profile cpu|paper`.", ""]
    lines += [f"Profile `{config.profile}`; command: `mammo-keras reproduce {config.name} --profile {config.profile}`.",
              f"Protocol: patient-level train/val/test split {list(config.fractions)}, images downsampled to "
              f"{config.input_hw[0]}x{config.input_hw[1]} px, {options['epochs']} epochs (best by validation loss), "
              f"Adam lr {options['learning_rate']}, batch {config.batch_size or 4}, horizontal-flip copies "
              f"{'on' if options['hflip'] else 'off'}, seed {config.seed}. TP: IoU >= 0.5 with a ground-truth mass box; "
              f"AP = mAP (one class); sensitivity at 0.5/1/2 false positives per image read off the FROC; "
              f"95% CIs from {config.n_bootstrap} bootstrap resamples of test images.",
              f"Git commit {commit}; wall time {seconds / 60:.1f} min.", ""]
    if config.note:
        lines += [config.note, ""]
    lines += ["| dataset | model | status | AP@0.5 | sens@0.5 FP/img | sens@1 FP/img | sens@2 FP/img | "
              "mean IoU of TPs | test images (masses) | minutes | paper (as printed; other data and metric) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = [row["dataset"], row["model"], row["status"]]
        for key in ("ap", "sens_at_0.5fpi", "sens_at_1fpi", "sens_at_2fpi"):
            cells.append(_fmt(row.get(key), (row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high"))
                              if key in row else None))
        cells.append(_fmt(row.get("mean_iou_tp")))
        cells.append(f"{row['n_test_images']} ({row['n_test_lesions']})" if "n_test_images" in row else "-")
        cells.append(f"{row['minutes']:.1f}" if "minutes" in row else "-")
        cells.append(row.get("paper") or "-")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    from mammo_keras.reproduce import deviation_lines

    deviations = deviation_lines(config.paper)
    if deviations:
        lines += ["", *deviations]
    if paper_rows:
        lines += ["", "Table 3 as published (detection rows):", "",
                  "| ref | work | detector | data | reported |", "|---|---|---|---|---|"]
        lines += [f"| {r.get('ref')} | {r.get('work', '')} | {r.get('detector', '')} | {r.get('dataset', '')} | "
                  f"{r.get('reported', '')} |" for r in paper_rows]
    atomic_write_text(out / "table.md", "\n".join(lines) + "\n")
