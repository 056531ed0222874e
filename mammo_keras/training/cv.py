"""Patient-level stratified K-fold cross-validation with per-fold outputs and resume.

Output folder:
    folds.csv               fold of every item (patient-level; checked for leakage)
    fold_<k>/log.csv        per-epoch log of every stage
    fold_<k>/predictions.csv  out-of-fold scores; written last and atomically, it marks the
                            fold done: a killed run started again skips finished folds and,
                            being seeded per fold, ends with the same results.
    fold_<k>/backup/backup.npz  the fold's training state after its last backed-up epoch
                            (`fit.FitBackup`; every `TrainSpec.backup_every` seconds and at each
                            stage's end): a fold killed mid-training restarts there and ends
                            with the predictions of an uninterrupted run; removed when the
                            fold is done.
    fold_<k>/offline_copies.npy  the fold's offline-augmented training items (Jain & Levy's x25
                            copies), written once and read per batch; removed when the fold is done.
    fold_<k>/pretrain_log.csv  per-epoch log of a row's self-supervised pretraining (`pretrain`),
                            with fold_<k>/pretrained.weights.h5 its result until the fold is done.
"""
from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from mammo_keras.data.pipeline import AugmentConfig
from mammo_keras.data.recipes import FittedInputs, Normalisation, OfflineAugment
from mammo_keras.data.splits import balance_parts, check_no_leakage, load_assignments, patient_kfold
from mammo_keras.data.splits import OFFICIAL_COLUMN, official_split, reuse_split, save_assignments, train_val_test
from mammo_keras.data.splits import fraction_of_patients
from mammo_keras.evaluation.metrics import METRIC_NAMES, METRICS, MULTICLASS_METRICS, auc
from mammo_keras.evaluation.scoring import calibration, reliability_diagram
from mammo_keras.fileio import atomic_write_json, atomic_write_text
from mammo_keras.models.inputs import as_model_input, count, positive_scores
from mammo_keras.training.fit import BACKUP_EVERY, augment_place, fit_stages, predict_fixed, wait_for_backup
from mammo_keras.training.contrastive import Pretraining, unlabelled_rows
from mammo_keras.training.stages import Stage


# explain(model, test_images, test_predictions, out_dir): per-fold explanations (e.g. Grad-CAM).
Explainer = Callable[[keras.Model, np.ndarray, pd.DataFrame, Path], None]


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, NumPy and TensorFlow; with `deterministic`, ask TF for deterministic kernels.

    Op determinism (`tf.config.experimental.enable_op_determinism`) makes GPU reductions and
    tf.data deterministic at some cost in speed; without it a CPU run with the same seed is
    still repeatable in practice, a GPU run is not. The choice is process-wide in TF, so it is
    set (or unset) at every call.
    """
    from tensorflow.python.framework import config as tf_config

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


STRATIFY_KEY = "label"  # the column the runner's splits stratify on (the plan's `split.stratify` reads it)


def assign_folds(index: pd.DataFrame, n_splits: int, seed: int, path: Path) -> pd.DataFrame:
    """Fold per item, saved to `path` (reused when it exists, so a resumed run keeps its folds).

    The saved file has image_id, patient_id, lesion_id (= item_id) and fold.
    """
    if path.is_file():
        folds = load_assignments(path)
        if list(folds["lesion_id"].astype(str)) != list(index["item_id"].astype(str)):
            raise ValueError(f"{path} belongs to other data (its items differ); remove it to start over")
        return folds
    table = index.assign(image_id=index["image_id"].astype(str), lesion_id=index["item_id"].astype(str))
    folds = patient_kfold(table[["item_id", "image_id", "patient_id", "lesion_id", "label"]],
                          n_splits=n_splits, seed=seed, label=STRATIFY_KEY)
    save_assignments(folds, path)
    return load_assignments(path)


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """How one part (fold) is trained and scored: the protocol of a result row, as one object.

    stages: the training stages; augment: online augmentation; normalisation / offline /
    eval_crop: the training-part-dependent input steps (`data.recipes`); fine_tune: the row's
    fine-tuning strategy (stages may be skipped for it); selection / snapshots: which epoch's
    weights are kept; flip_tta: also score the mean over four flips; save_models: save each
    part's model with `model_info` (the manifest sections `predict` reads); deterministic: TF op
    determinism (`seed_everything`); progress: tqdm bars over epochs and steps (`fit_stages`); augment_on: where
    augmentation runs (`fit.AUGMENT_ON`);
    pretrain: a `contrastive.Pretraining` of the encoder on the part's training items, without their
    labels, before the stages (kept in `<part>/pretrained.weights.h5`, so a resumed part reuses it);
    backup: keep `<part>/backup/backup.npz` (written after an epoch once `backup_every` seconds
    have passed since the last one, and at every stage's end; 0: every epoch) so that a killed
    part resumes after its last backed-up epoch (`fit.FitBackup`), removed once the part is done.
    """

    stages: tuple[Stage, ...]
    augment: AugmentConfig | None = None
    normalisation: Normalisation = Normalisation()
    offline: OfflineAugment | None = None
    eval_crop: tuple[int, int] | None = None
    fine_tune: str | None = None
    selection: str = "last"
    snapshots: int | None = None
    flip_tta: bool = False
    cache_features: bool = True
    save_models: bool = False
    model_info: dict | None = None
    verbose: int = 0
    progress: bool = False
    deterministic: bool = True
    augment_on: str = "auto"
    backup: bool = True
    backup_every: float = BACKUP_EVERY
    pretrain: Pretraining | None = None


def as_spec(stages: TrainSpec | Sequence[Stage], **options) -> TrainSpec:
    """A TrainSpec from a spec (options replace its fields) or from a plain list of stages."""
    options = {k: v for k, v in options.items() if v is not None}
    if isinstance(stages, TrainSpec):
        return dataclasses.replace(stages, **options)
    return TrainSpec(stages=tuple(stages), **options)


def cross_validate(build_model: Callable[[], keras.Model], images: np.ndarray, index: pd.DataFrame,
                   spec: TrainSpec | Sequence[Stage], out: str | Path, *, n_splits: int = 5, seed: int = 0,
                   val_fraction: float = 0.15, train_fraction: float | None = None,
                   progress: Callable[[str], None] | None = None, explain: Explainer | None = None,
                   unlabelled: tuple | None = None, **options) -> pd.DataFrame:
    """Train and test one model per fold; returns the pooled out-of-fold predictions.

    Within each training part, `val_fraction` of the patients (stratified) are held out
    for early stopping, learning-rate drops and epoch selection; the test fold is never seen
    in training. With `train_fraction` (a learning curve's point) each training part first
    keeps that share of its patients (`data.splits.fraction_of_patients`, seeded per fold and
    nested across fractions); validation is then carved out of the kept patients as usual, and
    the test folds are those of every other fraction.

    Args:
        build_model: makes a fresh model (called once per fold, after seeding).
        images: (N, H, W) prepared arrays; index: their `index.csv` (item_id, patient_id, label).
        spec: the training protocol (a TrainSpec, or a list of stages plus TrainSpec `options`).
        out: output folder; finished folds found there are not trained again.
        explain: called as explain(model, test_inputs, test_predictions, fold_dir) after each
            fold's test, before the fold is marked done (e.g. Grad-CAM overlays).
        unlabelled: (images, index) of another task's items for `spec.pretrain` (see `train_and_test`).
    """
    spec = as_spec(spec, **options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    folds = assign_folds(index, n_splits, seed, out / "folds.csv")
    pooled = []
    for fold in range(n_splits):
        fold_dir = out / f"fold_{fold}"
        done = fold_dir / "predictions.csv"
        if done.is_file():
            pooled.append(pd.read_csv(done, keep_default_na=False))
            if progress:
                progress(f"fold {fold}: done earlier, reused")
            continue
        test_mask = (folds["fold"] == fold).to_numpy()
        train_rows = np.flatnonzero(~test_mask)
        if train_fraction is not None:
            train_rows = train_rows[fraction_of_patients(index.iloc[train_rows], train_fraction, seed=seed + fold)]
        inner = _inner_split(index.iloc[train_rows].reset_index(drop=True), val_fraction, seed + fold)
        predictions, metrics = train_and_test(
            build_model, images, index, spec, fold_dir, fit_rows=train_rows[inner == "train"],
            val_rows=train_rows[inner == "val"], test_rows=np.flatnonzero(test_mask), fold=fold,
            seed=seed + fold, explain=explain, unlabelled=unlabelled)
        pooled.append(predictions)
        if progress:
            progress(f"fold {fold}: {_summary(metrics)} ({metrics['epochs']} epochs, {metrics['seconds']:.0f} s)")
    result = pd.concat(pooled, ignore_index=True)
    check_no_leakage(result.assign(image_id=result["item_id"]), by="fold")
    return result


def prediction_columns(model: keras.Model, inputs, *, flip_tta: bool = False) -> dict[str, np.ndarray]:
    """Score columns for a predictions table.

    A binary model gives `score` (probability of class 1) and, with `flip_tta`, `score_tta`
    (the mean over the four flips, Shen's augmented prediction). A model with k > 2 classes
    gives `pred` (the argmax) and `p_0` ... `p_<k-1>`.
    """
    outputs = np.asarray(predict_fixed(model, inputs), dtype=np.float64)
    if outputs.ndim == 2 and outputs.shape[1] > 2:
        return {"pred": outputs.argmax(axis=1), **{f"p_{k}": outputs[:, k] for k in range(outputs.shape[1])}}
    columns = {"score": positive_scores(outputs)}
    if flip_tta:
        from mammo_keras.models.wrappers import flip_tta as wrap

        columns["score_tta"] = positive_scores(np.asarray(predict_fixed(wrap(model), inputs), dtype=np.float64))
    return columns


def metric_inputs(predictions: pd.DataFrame, metric: str):
    """(y_true, y_score, function) for `metric` on a predictions table, or None where undefined.

    "a_auc" is the AUC of the flip-augmented score (`score_tta`); a multi-class table (`pred`)
    has accuracy and balanced accuracy only.
    """
    labels = predictions["label"]
    if "pred" in predictions:
        return (labels, predictions["pred"], MULTICLASS_METRICS[metric]) if metric in MULTICLASS_METRICS else None
    if metric == "a_auc":
        return (labels, predictions["score_tta"], auc) if "score_tta" in predictions else None
    return labels, predictions["score"], METRICS[metric]


def prediction_metrics(predictions: pd.DataFrame) -> dict[str, float]:
    """Every binary metric of `score` (plus `a_auc` of `score_tta`), or the multi-class ones of `pred`."""
    metrics = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in (*METRIC_NAMES, "a_auc"):
            inputs = metric_inputs(predictions, name)
            if inputs is not None:
                labels, scores, function = inputs
                metrics[name] = function(labels, scores)
    return metrics


def train_and_test(build_model: Callable[[], keras.Model], images: np.ndarray, index: pd.DataFrame,
                   spec: TrainSpec | Sequence[Stage], out: Path, *, fit_rows: np.ndarray, val_rows: np.ndarray,
                   test_rows: np.ndarray, fold: int, seed: int, explain: Explainer | None = None,
                   unlabelled: tuple | None = None, **options) -> tuple[pd.DataFrame, dict]:
    """Seed, build, fit the input steps and train on `fit_rows` (watching `val_rows`), score `test_rows`.

    The training-part-dependent input steps (mean subtraction, offline augmentation) are fitted
    on `fit_rows` only; validation and test items get the fitted transform. Validation scores go
    to val_predictions.csv (what ensembles choose their weights on); the model (with the fitted
    input steps and `spec.model_info` in its manifest) is saved when `spec.save_models`;
    predictions.csv is written last and atomically: it marks this part done.

    `spec.pretrain` pretrains the encoder first, without labels: on the fit inputs, or with
    `unlabelled` = (images, index) of another task of the same dataset (`Pretraining.unlabelled`)
    on those of every patient outside `val_rows` and `test_rows`, given the fitted input steps.
    """
    spec = as_spec(spec, **options)
    started = time.perf_counter()
    labels = index["label"].to_numpy()
    fitted, x_fit, source = FittedInputs.fit(images[fit_rows], index.iloc[fit_rows], normalisation=spec.normalisation,
                                             offline=spec.offline, crop=spec.eval_crop, seed=seed,
                                             offline_path=out / OFFLINE_FILE)
    y_fit = labels[fit_rows][source]
    seed_everything(seed, deterministic=spec.deterministic)
    model = build_model()
    if spec.pretrain is not None:
        if spec.pretrain.unlabelled is None:
            pretrain_items = x_fit
        else:
            if unlabelled is None:
                raise ValueError("this row pretrains on another task's items (`pretrain.unlabelled`); "
                                 "pass them as `unlabelled=(images, index)`")
            extra_images, extra_index = unlabelled
            keep = unlabelled_rows(extra_index, index, np.concatenate([val_rows, test_rows]),
                                   where=f"pretrain.unlabelled ({spec.pretrain.unlabelled['task']})")
            pretrain_items = fitted.transform(extra_images[keep])
        pretrain_part(model, pretrain_items, spec, out, seed=seed)
    log = fit_stages(model, spec.stages, (x_fit, y_fit),
                     (fitted.transform(images[val_rows]), labels[val_rows]) if len(val_rows) else None,
                     augment=spec.augment, seed=seed, log_csv=out / "log.csv", verbose=spec.verbose,
                     cache_features=spec.cache_features, fine_tune=spec.fine_tune, selection=spec.selection,
                     snapshots=spec.snapshots, augment_on=spec.augment_on,
                     backup_dir=out / "backup" if spec.backup else None, backup_every=spec.backup_every,
                     progress=spec.progress)

    def scored(rows: np.ndarray) -> pd.DataFrame:
        columns = prediction_columns(model, as_model_input(fitted.transform(images[rows]), model),
                                     flip_tta=spec.flip_tta)
        carried = ["item_id", "patient_id", *(["laterality"] if "laterality" in index else []), "label"]
        return index.iloc[rows][carried].assign(fold=fold, **columns)

    if len(val_rows):
        atomic_write_text(out / "val_predictions.csv", scored(val_rows).to_csv(index=False))
    predictions = scored(test_rows)
    selected = log.loc[log["selected"], "total_epoch"] if "selected" in log else []
    metrics = {**prediction_metrics(predictions),
               "fold": fold, "n_train": int(len(fit_rows)), "n_train_inputs": int(len(x_fit)),
               "n_val": int(len(val_rows)), "n_train_patients": _patients(index, fit_rows),
               "n_val_patients": _patients(index, val_rows), "n_test": int(len(test_rows)), "epochs": int(len(log)),
               "selected_epoch": int(selected.iloc[0]) if len(selected) else None,
               "selection": spec.selection, "inputs": fitted.to_manifest(), "deterministic": spec.deterministic,
               "augment_on": augment_place(spec.augment_on) if spec.augment is not None else None,
               "seconds": round(time.perf_counter() - started, 2)}
    atomic_write_json(out / "metrics.json", metrics)
    if spec.save_models:
        from mammo_keras import io as model_io

        info = dict(spec.model_info or {})
        info["preprocessing"] = {**info.get("preprocessing", {}), **fitted.to_manifest()}
        info["card"] = card_facts(info.get("card"), predictions, metrics, seed=seed)
        model_io.save(model, out / "model", arrays=fitted.arrays(), files=calibration_files(predictions), **info)
    if explain is not None:
        explain(model, fitted.transform(images[test_rows]), predictions, out)
    atomic_write_text(out / "predictions.csv", predictions.to_csv(index=False))
    (out / PRETRAINED_FILE).unlink(missing_ok=True)  # the whole model's weights: kept only to resume
    (out / PRETRAINED_RECORD).unlink(missing_ok=True)
    (out / OFFLINE_FILE).unlink(missing_ok=True)  # the part's offline copies, made again if it reruns
    if spec.backup:
        wait_for_backup(out / "backup" / "backup.npz")  # the last stage's end, written while predicting
        (out / "backup" / "backup.npz").unlink(missing_ok=True)
        if (out / "backup").is_dir() and not any((out / "backup").iterdir()):
            (out / "backup").rmdir()
    keras.backend.clear_session()
    return predictions, metrics


PRETRAINED_FILE = "pretrained.weights.h5"
PRETRAINED_RECORD = "pretrained.json"  # what the saved encoder was pretrained on: reused only for the same
OFFLINE_FILE = "offline_copies.npy"  # a part's offline-augmented training items, read per batch


def pretrain_part(model: keras.Model, x_fit, spec: TrainSpec, out: Path, *, seed: int) -> None:
    """Pretrain `model`'s encoder on the part's training inputs (no labels; `spec.pretrain`), or load the
    weights an earlier, killed invocation of this part saved; then reseed, so the stages that follow
    start from the same state either way."""
    from mammo_keras.training.contrastive import pretrain

    saved, record = out / PRETRAINED_FILE, out / PRETRAINED_RECORD
    made_by = {"pretraining": json.loads(json.dumps(dataclasses.asdict(spec.pretrain), default=str)),
               "seed": int(seed), "items": count(x_fit), "items_sha256": _items_digest(x_fit)}
    if saved.is_file() and record.is_file() and json.loads(record.read_text()) == made_by:
        model.load_weights(str(saved))
    else:  # none yet, or one pretrained on other items or settings (a part whose split changed): never reused
        out.mkdir(parents=True, exist_ok=True)
        pretrain(model, as_model_input(x_fit, model), spec.pretrain, seed=seed, log_csv=out / "pretrain_log.csv")
        partial = out / f".{PRETRAINED_FILE}.partial.weights.h5"
        model.save_weights(str(partial))
        atomic_write_json(record, made_by)
        partial.replace(saved)
    seed_everything(seed, deterministic=spec.deterministic)


def _items_digest(items, chunk: int = 256) -> str:
    """SHA-256 of the items' values, read `chunk` at a time (lazy rows too): which items were pretrained on."""
    import hashlib

    digest = hashlib.sha256()
    for start in range(0, count(items), chunk):
        part = np.ascontiguousarray(np.asarray(items[start:start + chunk], dtype=np.float32))
        digest.update(str(part.shape[1:]).encode())
        digest.update(part.tobytes())
    return digest.hexdigest()


CARD_METRICS = ("accuracy", "auc")
CARD_REPLICATES = 1000
CALIBRATION_FILE = "calibration.png"  # the reliability diagram in a saved model's folder


def card_facts(card: dict | None, predictions: pd.DataFrame, metrics: dict, *, seed: int) -> dict:
    """The model card's facts (`io.save(card=...)`) of one trained part: the runner's (data, protocol, and
    `part_what`, a text with {fold}) plus the part's sizes and its test metrics with 95% bootstrap CIs."""
    from mammo_keras.evaluation.metrics import bootstrap_ci, brier_score

    card = dict(card or {})
    what = str(card.pop("part_what", "part {fold}")).format(fold=metrics["fold"])
    card["part"] = {"what": what, "n_train": metrics["n_train"], "n_val": metrics["n_val"],
                    "n_test": metrics["n_test"], "selected_epoch": metrics.get("selected_epoch")}
    scored = {}
    for name in CARD_METRICS:
        inputs = metric_inputs(predictions, name)
        if inputs is None or len(predictions) == 0:
            continue
        labels, scores, function = inputs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value, low, high = bootstrap_ci(labels.to_numpy(), scores.to_numpy(), function,
                                            n_replicates=CARD_REPLICATES, seed=seed)
        if np.isfinite(value):
            scored[name] = {"value": float(value), "low": float(low), "high": float(high)}
    if _binary_scores(predictions):
        labels, scores = predictions["label"].to_numpy(), predictions["score"].to_numpy()
        value, low, high = bootstrap_ci(labels, scores, brier_score, n_replicates=CARD_REPLICATES, seed=seed)
        scored["brier"] = {"value": float(value), "low": float(low), "high": float(high)}
        card["calibration"] = {"brier": float(value), "ece": calibration(labels, scores)["ece"],
                               "figure": CALIBRATION_FILE}
    card["metrics"] = scored
    card["metrics_note"] = (f"On this part's {len(predictions)} test items (threshold 0.5 for accuracy; Brier score: "
                            f"the mean squared error of the malignant probability, lower is better); 95% CIs: "
                            f"percentile bootstrap of the items, {CARD_REPLICATES} replicates.")
    return card


def calibration_files(predictions: pd.DataFrame) -> dict[str, Callable[[Path], object]]:
    """The reliability diagram of a saved model's test predictions (`io.save(files=...)`), or none for a
    multi-class model: observed malignant rate against mean predicted probability in ten bins."""
    if not _binary_scores(predictions):
        return {}
    labels, scores = predictions["label"].to_numpy(), predictions["score"].to_numpy()
    report = {"levels": {"test items": {"n": len(predictions), "calibration": calibration(labels, scores)}}}
    return {CALIBRATION_FILE: lambda path: reliability_diagram(report, path, title="this part's test items")}


def _binary_scores(predictions: pd.DataFrame) -> bool:
    return len(predictions) > 0 and "score" in predictions and "pred" not in predictions


def holdout_split(index: pd.DataFrame, *, fractions=(0.8, 0.1, 0.1), seed: int = 0,
                  source: pd.DataFrame | None = None, balance_eval: bool = False,
                  official_val: float | None = None, origin: str | None = None) -> tuple[pd.DataFrame, int]:
    """The patient-level train/val/test assignment of a hold-out run, and the patients new to `source`.

    `source`: an earlier run's split (patient_id, split) that this one must keep (chained tables);
    `balance_eval`: move patients to training until val and test hold both classes equally;
    `official_val`: test on the dataset's own train/test assignment (the index's `official_split`,
    `data.splits.official_split`), with this fraction of its training patients for validation; the
    official test part is then kept whole (`balance_eval` balances validation only). `origin` (the
    dataset's name) begins the official split's errors.
    """
    table = index.assign(image_id=index["image_id"].astype(str), lesion_id=index["item_id"].astype(str))
    columns = ["image_id", "patient_id", "lesion_id", "label"]
    if source is not None:
        split, new = reuse_split(table[columns], source, fractions=fractions, seed=seed, label=STRATIFY_KEY)
    elif official_val is not None:
        official = [OFFICIAL_COLUMN] if OFFICIAL_COLUMN in table.columns else []
        split = official_split(table[columns + official], val_fraction=official_val, seed=seed, label=STRATIFY_KEY,
                               origin=origin)
        split, new = split.drop(columns=official), 0
    else:
        split, new = train_val_test(table[columns], fractions=fractions, seed=seed, label=STRATIFY_KEY), 0
    if balance_eval:
        parts = ("val",) if official_val is not None else ("val", "test")
        split = balance_parts(split, parts=parts, seed=seed, label=STRATIFY_KEY)
    return split, new


def holdout(build_model: Callable[[], keras.Model], images: np.ndarray, index: pd.DataFrame,
            spec: TrainSpec | Sequence[Stage], out: str | Path, *, fractions=(0.8, 0.1, 0.1), seed: int = 0,
            train_patients: int | None = None, split_source: pd.DataFrame | None = None,
            balance_eval: bool = False, progress: Callable[[str], None] | None = None,
            explain: Explainer | None = None, **options) -> pd.DataFrame:
    """One patient-level stratified train/val/test split (Jain & Levy, Shen); returns test predictions.

    The split is saved as split.csv; a finished run (test/predictions.csv) is reused.
    `split_source` keeps an earlier run's patient split (see `holdout_split`).
    `train_patients` trains on that many of the training patients only (drawn with `seed`; the
    validation and test parts stay whole): Shen's Table 4, accuracy by training-set size.
    """
    spec = as_spec(spec, **options)
    out = Path(out)
    finished = _finished_test(out, progress, "hold-out test")
    if finished is not None:
        return finished
    split, new = holdout_split(index, fractions=fractions, seed=seed, source=split_source, balance_eval=balance_eval)
    if progress and split_source is not None:  # the split the table's rows share (runner.kinds.table_split)
        progress(f"the given patient split{f' ({new} patients new to it assigned now)' if new else ''}")
    save_assignments(split, out / "split.csv")
    names = split["split"].to_numpy()
    fit_rows = np.flatnonzero(names == "train")
    if train_patients is not None:
        fit_rows = _first_patients(index, fit_rows, train_patients, seed)
    predictions, metrics = train_and_test(
        build_model, images, index, spec, out / "test", fit_rows=fit_rows,
        val_rows=np.flatnonzero(names == "val"), test_rows=np.flatnonzero(names == "test"), fold=0,
        seed=seed, explain=explain)
    _report_test(progress, "hold-out test", metrics)
    return predictions


def transfer(build_model: Callable[[], keras.Model], images: np.ndarray, index: pd.DataFrame,
             test_images: np.ndarray, test_index: pd.DataFrame, spec: TrainSpec | Sequence[Stage],
             out: str | Path, *, val_fraction: float = 0.15, seed: int = 0,
             progress: Callable[[str], None] | None = None, explain: Explainer | None = None,
             **options) -> pd.DataFrame:
    """Train on one dataset, test once on another (Chougrad's independent MIAS test).

    `val_fraction` of the training patients (stratified) steer early stopping; the test set is
    never seen in training, and may share no item, image or patient with the training set
    (`check_independent`, before training). The parts are saved as out/split.csv (`transfer_split`)
    and the trained model to out/test/model (JSON + HDF5 + .keras) for later use, e.g. by a
    screening application or a row that starts from it. A finished run is reused.
    """
    spec = as_spec(spec, **{"save_models": True, **options})
    out = Path(out)
    finished = _finished_test(out, progress, "independent test")
    if finished is not None:
        return finished
    split = transfer_split(index, test_index, val_fraction=val_fraction, seed=seed)
    save_assignments(split, out / "split.csv")  # who the saved model learned from (runner.lineage reads it)
    inner = split["split"].to_numpy()[:len(index)]
    columns = [c for c in index.columns if c in test_index.columns]
    both = pd.concat([index[columns], test_index[columns]], ignore_index=True)
    joined = np.concatenate([np.asarray(images, np.float32), np.asarray(test_images, np.float32)])  # ROI sets
    predictions, metrics = train_and_test(
        build_model, joined, both, spec, out / "test",
        fit_rows=np.flatnonzero(inner == "train"), val_rows=np.flatnonzero(inner == "val"),
        test_rows=len(index) + np.arange(len(test_index)), fold=0, seed=seed, explain=explain)
    _report_test(progress, "independent test", metrics)
    return predictions.reset_index(drop=True)


def check_independent(index: pd.DataFrame, test_index: pd.DataFrame) -> None:
    """Raise ValueError when the test set shares an item, an image or a patient with the training set.

    An independent test is on other women: the same patient's other lesion type (CBIS-DDSM's masses for
    training and its calcifications for testing), another view, or another reading of the same images
    is not one."""
    for column, what in (("item_id", "items"), ("image_id", "images"), ("patient_id", "patients")):
        if column not in index.columns or column not in test_index.columns:
            continue
        shared = sorted(set(index[column].astype(str)) & set(test_index[column].astype(str)))
        if shared:
            shown = ", ".join(repr(value) for value in shared[:5]) + (f" and {len(shared) - 5} more"
                                                                      if len(shared) > 5 else "")
            raise ValueError(f"the test set shares {len(shared)} {what} with the training set ({column}: {shown}); "
                             "an independent test needs other women: test on another dataset (`test_dataset`), "
                             "or on a phantom drawn with another seed (`test_dataset_options`)")


def transfer_split(index: pd.DataFrame, test_index: pd.DataFrame, *, val_fraction: float, seed: int) -> pd.DataFrame:
    """The parts of a transfer run (`transfer`): the training set's patients split train/val (patient-level,
    stratified, `val_fraction`), then every test-set item as "test"; checked independent first
    (`check_independent`). Columns item_id, image_id, patient_id, lesion_id (= item_id), split."""
    check_independent(index, test_index)
    inner = _inner_split(index.reset_index(drop=True), val_fraction, seed)
    both = pd.concat([index.assign(split=inner), test_index.assign(split="test")], ignore_index=True)
    ids = {column: both[column].astype(str) for column in ("item_id", "image_id", "patient_id") if column in both}
    return pd.DataFrame({**ids, "lesion_id": both["item_id"].astype(str), "split": both["split"].to_numpy()})


def _finished_test(out: Path, progress: Callable[[str], None] | None, what: str) -> pd.DataFrame | None:
    """The predictions of a single-test run finished earlier (out/test/predictions.csv), or None."""
    done = out / "test" / "predictions.csv"
    if not done.is_file():
        return None
    if progress:
        progress(f"{what}: done earlier, reused")
    return pd.read_csv(done, keep_default_na=False)


def _summary(metrics: dict) -> str:
    return " ".join(f"{name} {metrics[name]:.3f}" for name in ("accuracy", "auc", "a_auc") if name in metrics)


def _report_test(progress: Callable[[str], None] | None, what: str, metrics: dict) -> None:
    if progress:
        progress(f"{what}: {_summary(metrics)} ({metrics['epochs']} epochs, {metrics['seconds']:.0f} s)")


def _first_patients(index: pd.DataFrame, rows: np.ndarray, n_patients: int, seed: int) -> np.ndarray:
    """The items of `n_patients` patients drawn at random (seeded) from those of `rows`."""
    patients = index.iloc[rows]["patient_id"].astype(str)
    unique = patients.drop_duplicates().to_numpy()
    if not isinstance(n_patients, int) or isinstance(n_patients, bool) or not 0 < n_patients <= len(unique):
        raise ValueError(f"`train_patients` must be an integer from 1 to the {len(unique)} training "
                         f"patients. Received: train_patients={n_patients!r}")
    chosen = set(np.random.default_rng(seed).permutation(unique)[:n_patients])
    return rows[patients.isin(chosen).to_numpy()]


def _patients(index: pd.DataFrame, rows: np.ndarray) -> int:
    return int(index.iloc[rows]["patient_id"].astype(str).nunique())


def _inner_split(train_index: pd.DataFrame, val_fraction: float, seed: int) -> np.ndarray:
    """'train'/'val' per row of the training part, patient-level and stratified."""
    if val_fraction <= 0:
        return np.full(len(train_index), "train")
    table = train_index.assign(image_id=train_index["item_id"].astype(str),
                               lesion_id=train_index["item_id"].astype(str))
    try:
        split = train_val_test(table, fractions=(1.0 - val_fraction, val_fraction, 0.0),
                               seed=seed, label=STRATIFY_KEY)["split"].to_numpy()
    except ValueError:  # too few patients of a class for a stratified hold-out
        return np.full(len(train_index), "train")
    return np.where(split == "val", "val", "train")


def read_fold_metrics(out: str | Path) -> list[dict]:
    """metrics.json of every finished fold, in fold order."""
    return [json.loads(p.read_text()) for p in sorted(Path(out).glob("fold_*/metrics.json"))]
