"""The one generic runner behind `mammo-keras reproduce <paper>/<table>`.

For every dataset of the config it reads the records, prepares the paper's inputs
(cached and resumable), then trains and evaluates every model with the config's
protocol, and writes `results/<paper>/<table>/`:

    table.md, table.csv   the paper's numbers and ours side by side, with 95% bootstrap CIs
    run.json              profile, resolved config, seeds, git commit, data fingerprints, times
    config.yaml           the resolved config
    <dataset>/<model>/    folds.csv, fold_<k>/ logs and predictions, roc.png
Rows whose dataset is absent say where it was looked for and carry the paper's number alone.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mammo_keras import __version__, settings
from mammo_keras.config import EXPERIMENTS_DIR, ExperimentConfig, ModelRow
from mammo_keras.data import canonical_name, read_dataset
from mammo_keras.data.prepare import load_prepared, prepare
from mammo_keras.data.recipes import IMAGE_MEAN_COLUMN
from mammo_keras.data.roi import resize
from mammo_keras.errors import DatasetNotFoundError
from mammo_keras.evaluation.metrics import bootstrap_ci, fold_summary
from mammo_keras.fileio import atomic_write_json, atomic_write_text, sha256_file

MERGED = "merged"


@dataclasses.dataclass
class DatasetInputs:
    """Prepared arrays of one dataset row, or why they are missing."""

    name: str
    images: np.ndarray | None = None
    index: pd.DataFrame | None = None
    fingerprint: str = ""
    synthetic: bool = False
    absent: str = ""


def git_commit() -> str:
    """The repository's HEAD commit (with '+dirty' for local changes), or 'unknown'."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def reported_table(config: ExperimentConfig, experiments_dir: Path = EXPERIMENTS_DIR, *,
                   name: str | None = None) -> dict:
    """The paper's table named by the config (or `name`), from experiments/<paper>/paper_tables.yaml ({} if none)."""
    path = experiments_dir / config.paper / "paper_tables.yaml"
    name = name or config.reported_table
    if not name or not path.is_file():
        return {}
    tables = (yaml.safe_load(path.read_text()) or {}).get("tables", {})
    return dict(tables.get(name) or {})


def matching_row(table: dict, config: ExperimentConfig, model: ModelRow | str, dataset: str | None, *,
                 require_metric: bool = True) -> int | None:
    """The first of `matching_rows`, or None."""
    found = matching_rows(table, config, model, dataset, require_metric=require_metric)
    return found[0] if found else None


def matching_rows(table: dict, config: ExperimentConfig, model: ModelRow | str, dataset: str | None, *,
                  require_metric: bool = True) -> list[int]:
    """The position of the paper's row that `model` on `dataset` reproduces in `table`, or None.

    A paper row matches when it carries the model's `paper_keys()` (by default model = label),
    names the config's key for `dataset` if it names a dataset (dataset None: any), and has the
    reported metric.
    """
    key = None if dataset is None else config.dataset_keys.get(dataset, dataset)
    metric = config.reported_metric
    keys = model.paper_keys() if isinstance(model, ModelRow) else {"model": model}
    def differs(value, wanted) -> bool:  # a list of wanted values matches any of them
        options = wanted if isinstance(wanted, (list, tuple)) else [wanted]
        return str(value).lower() not in {str(v).lower() for v in options}

    found = []
    for number, row in enumerate(table.get("rows", [])):
        if any(differs(row.get(k, ""), v) for k, v in keys.items()):
            continue
        if "dataset" in row and key is not None and str(row["dataset"]).lower() != str(key).lower():
            continue
        if row.get(metric) is not None or not require_metric:
            found.append(number)
    return found


def reported_value(table: dict, config: ExperimentConfig, model: ModelRow | str,
                   dataset: str) -> tuple[float | None, float | None]:
    """(value, std) the paper reports for this model and dataset (`matching_row`), as fractions.

    Values the paper prints in percent (`units: {metric: percent}`) are divided by 100, so the
    paper's number and ours are on one scale whatever the paper's habit.
    """
    number = matching_row(table, config, model, dataset)
    if number is None:
        return None, None
    metric = config.reported_metric
    scale = 0.01 if (table.get("units") or {}).get(metric) == "percent" else 1.0
    row = table["rows"][number]
    std = row.get(f"{metric}_std")
    return row[metric] * scale, (None if std is None else std * scale)


def reproductions(paper: str, experiments_dir: Path = EXPERIMENTS_DIR) -> dict[tuple[str, int], list[dict]]:
    """For each (table, row position) of a paper's paper_tables.yaml, the config rows that reproduce it."""
    from mammo_keras.config import list_configs, load_config

    found: dict[tuple[str, int], list[dict]] = {}
    for name in list_configs(experiments_dir):
        if not name.startswith(paper + "/"):
            continue
        config = load_config(name, "paper", experiments_dir=experiments_dir)
        for model in config.models:
            table_name = model.paper_row.get("table") or config.reported_table
            table = reported_table(config, experiments_dir, name=table_name)
            shown = [config.test_dataset] if config.kind == "transfer" else config.datasets
            for dataset, shown_as in zip(config.datasets, shown * len(config.datasets)):
                # a survey's detection rows are other works on other data: matched by model alone
                detection = config.kind == "detection"
                numbers = matching_rows(table, config, model, None if detection else shown_as,
                                        require_metric=not detection)
                for number in numbers if detection else numbers[:1]:
                    entry = {"config": config.table, "row": model.label, "dataset": dataset}
                    found.setdefault((table_name, number), []).append(entry)
    return found


def expand_options(options: dict) -> tuple[dict, list[str]]:
    """Options with `$VAR` / `${VAR}` strings expanded from the environment, and the unset names.

    Lets a config name a local weights file without hard-coding a path, e.g.
    `weights: ${MAMMO_VGG16_WEIGHTS}`; a row whose variable is unset is skipped, saying which.
    """
    expanded, unset = {}, []
    for key, value in options.items():
        if isinstance(value, str) and "$" in value:
            value = os.path.expandvars(value)
            if "$" in value:
                unset += re.findall(r"\$\{?(\w+)", value)
        expanded[key] = value
    return expanded, unset


def resolve_results(options: dict, results_dir: str | Path, dataset: str) -> tuple[dict, list[str]]:
    """Options whose value is `{results: <paper>/<table>, row: <label>}` -> that run's saved weights.

    This chains tables: Shen's whole-image rows start from the patch classifier a Table 1 run
    saved on the same dataset (`patch_weights: {results: shen2017/table1, row: s10_resnet50_pretrained}`).
    The file is `<results>/<paper>/<table>/<dataset>/<row>/test/model/model.weights.h5` unless the
    reference names another `file`. Returns the options and a note per reference whose run has
    not been made yet.
    """
    resolved, missing = {}, []
    for key, value in options.items():
        if isinstance(value, dict) and "results" in value:
            path = results_path(value, results_dir, dataset)
            if not path.is_file():
                missing.append(f"{key} needs {path}: run `mammo-keras reproduce {value['results']}` first "
                               "(same profile and data)")
            value = str(path)
        resolved[key] = value
    return resolved, missing


def results_path(reference: dict, results_dir: str | Path, dataset: str) -> Path:
    """The file a `{results: <paper>/<table>, row: <label>[, dataset: ..., file: ...]}` reference names.

    `dataset` defaults to the dataset of the row that refers (a chain on the same data); Shen's
    Table 4 names `cbis_ddsm`, the data its INbreast rows were first trained on.
    """
    from mammo_keras.io import WEIGHTS_FILE

    unknown = sorted(set(reference) - {"results", "row", "dataset", "file"})
    if unknown or "row" not in reference or str(reference["results"]).count("/") != 1:
        raise ValueError("a results reference is {results: <paper>/<table>, row: <row label>} with optional "
                         f"`dataset` and `file`. Received: {reference!r}")
    return (Path(results_dir) / reference["results"] / reference.get("dataset", dataset) / reference["row"]
            / reference.get("file", f"test/model/{WEIGHTS_FILE}"))


def table_split(config: ExperimentConfig, dataset: str, data: DatasetInputs, out: Path,
                results_dir: str | Path, progress: Callable[[str], None]) -> tuple[pd.DataFrame | None, str]:
    """The hold-out patient split every row of this table shares on `dataset`, saved as split.csv.

    With `split_from`, the earlier run's split of the same dataset is kept (chained tables: a
    whole-image test patient may not sit in the part the patch classifier trained on). Returns
    (patient_id, split) or None with the reason when the earlier run has not been made.
    """
    from mammo_keras.data.splits import load_assignments, save_assignments
    from mammo_keras.training.cv import holdout_split

    source = None
    if config.split_from:
        path = Path(results_dir) / config.split_from / dataset / "split.csv"
        if not path.is_file():
            return None, (f"the patient split of {config.split_from} is needed ({path}): run `mammo-keras "
                          f"reproduce {config.split_from}` first (same profile and data)")
        source = load_assignments(path)
    split, new = holdout_split(data.index, fractions=config.fractions, seed=config.seed, source=source,
                               balance_eval=config.balance_eval)
    save_assignments(split, out / dataset / "split.csv")
    if source is not None:
        progress(f"{dataset}: patient split kept from {config.split_from} ({new} patients new to it)")
    return split[["patient_id", "split"]], ""


def _dataset_root(name: str, data_dir: str | Path | None) -> Path | None:
    if name == "phantom":
        return None if data_dir is None else Path(data_dir) / "phantom"
    if data_dir is not None:
        return Path(data_dir) / settings.DATASET_FOLDERS.get(name, name)
    return settings.dataset_root(name)


def _limit_patients(index: pd.DataFrame, max_items: int | None, seed: int) -> np.ndarray:
    """Row positions of whole patients, drawn at random, up to about `max_items` rows."""
    if max_items is None or len(index) <= max_items:
        return np.arange(len(index))
    patients = index["patient_id"].drop_duplicates().sample(frac=1.0, random_state=seed)
    chosen, count = [], 0
    for patient in patients:
        if count >= max_items:
            break
        chosen.append(patient)
        count += int((index["patient_id"] == patient).sum())
    return np.flatnonzero(index["patient_id"].isin(chosen).to_numpy())


def load_inputs(config: ExperimentConfig, dataset: str, data_dir: str | Path | None, work: Path,
                progress: Callable[[str], None], *, options: dict | None = None,
                tag: str = "", abnormality: str | None = "config") -> DatasetInputs:
    """Read and prepare one dataset for the config's task; absent data is reported, not raised.

    Args:
        options: reader options (e.g. the phantom's seed); `tag` names their prepared folder.
        abnormality: keep only this lesion type (and normals); "config" means `config.abnormality`.
    """
    name = canonical_name(dataset)
    root = _dataset_root(name, data_dir)
    try:
        table = read_dataset(name, root, **(options or {}))
    except DatasetNotFoundError:
        where = root if root is not None else "nowhere: pass --data DIR or set MAMMO_DATA"
        progress(f"{name}: dataset absent (looked in {where}); the paper's numbers are shown alone")
        return DatasetInputs(name, absent=f"absent (looked in {where})")
    abnormality = config.abnormality if abnormality == "config" else abnormality
    if abnormality:
        keep = (table["abnormality"] == abnormality) | (table["abnormality"] == "normal")
        table = table[keep].reset_index(drop=True)
    folder = work / "prepared" / f"{name}_{config.task}{tag}"
    report = prepare(name, table, folder, config.task, root=root, progress=False)
    images, index = load_prepared(folder, mmap=False)
    if config.label_map:
        index = index.assign(label=index["label"].map(lambda v: config.label_map[int(v)]))
    rows = _limit_patients(index, config.max_items, config.seed)
    images, index = images[rows], index.iloc[rows].reset_index(drop=True)
    if config.item_part is not None:
        images = images[:, config.item_part]
    target = item_shape(config)
    if images.shape[-2:] != target:  # (N, H, W) items, or (N, parts, H, W) pairs
        images = np.stack([resize(image, target) if image.ndim == 2
                           else np.stack([resize(part, target) for part in image])
                           for image in images])
    if config.input_scale != 1.0:
        images = images * np.float32(config.input_scale)
        if IMAGE_MEAN_COLUMN in index:  # the source images' mean grey, on the items' scale
            index = index.assign(**{IMAGE_MEAN_COLUMN: index[IMAGE_MEAN_COLUMN].astype(float) * config.input_scale})
    synthetic = name == "phantom"
    progress(f"{name}: {len(index)} items ({index['label'].value_counts().sort_index().to_dict()}) "
             f"from {index['patient_id'].nunique()} patients{' [SYNTHETIC phantom data]' if synthetic else ''}")
    if tag:  # items of a second reading of one source (another phantom seed) get their own ids
        index = index.assign(patient_id=name + tag + ":" + index["patient_id"].astype(str),
                             item_id=name + tag + ":" + index["item_id"].astype(str))
    return DatasetInputs(name, images.astype(np.float32), index, report.data_fingerprint, synthetic)


def item_shape(config: ExperimentConfig) -> tuple[int, int]:
    """The (rows, cols) prepared items are resized to: the input size, or the canvas around it."""
    factor = canvas_factor(config)
    if not factor:
        return config.input_hw
    return tuple(int(round(side * factor)) for side in config.input_hw)


def merge_inputs(parts: list[DatasetInputs]) -> DatasetInputs:
    """The merged dataset (Chougrad's MD): the union of the other rows' items."""
    missing = [p.name for p in parts if p.absent]
    if missing or not parts:
        return DatasetInputs(MERGED, absent=f"needs every dataset (missing: {', '.join(missing) or 'all'})")
    index = pd.concat([p.index.assign(patient_id=p.name + ":" + p.index["patient_id"].astype(str),
                                      item_id=p.name + ":" + p.index["item_id"].astype(str))
                       for p in parts], ignore_index=True)
    return DatasetInputs(MERGED, np.concatenate([p.images for p in parts]), index,
                         "+".join(p.fingerprint[:12] for p in parts), any(p.synthetic for p in parts))


def row_stages(config: ExperimentConfig, row: ModelRow) -> tuple:
    """The row's stage list at the config's profile: its preset, epochs scaled, batch size overridden."""
    from mammo_keras.training.stages import preset as stage_preset

    stages = [stage.scaled(config.epoch_scale) if config.epoch_scale != 1.0 else stage
              for stage in stage_preset(row.stages or config.stages)]
    if config.batch_size:
        stages = [dataclasses.replace(stage, batch_size=config.batch_size) for stage in stages]
    return tuple(stages)


def train_spec(config: ExperimentConfig, row: ModelRow, options: dict):
    """The TrainSpec (training.cv) of one result row: everything that trains and scores one part."""
    from mammo_keras.app.recipe import model_info
    from mammo_keras.data.pipeline import preset as augment_preset
    from mammo_keras.data.recipes import Normalisation, OfflineAugment
    from mammo_keras.training.cv import TrainSpec

    offline = OfflineAugment(**config.offline_augment) if config.offline_augment else None
    return TrainSpec(stages=row_stages(config, row),
                     augment=augment_preset(config.augment) if config.augment else None,
                     normalisation=Normalisation(config.normalisation), offline=offline,
                     eval_crop=config.input_hw if canvas_factor(config) else None,
                     fine_tune=options.get("fine_tune"), selection=config.selection,
                     snapshots=config.selection_snapshots, flip_tta=config.flip_tta,
                     cache_features=config.cache_features,
                     save_models=config.save_models or config.kind == "transfer",
                     model_info=model_info(config, row))


def canvas_factor(config: ExperimentConfig) -> float | None:
    """The canvas side / input side of a task whose items are canvases (Jain & Levy), else None."""
    from mammo_keras.data.prepare import TASKS

    return TASKS[config.task].defaults.get("canvas") if config.task in TASKS else None


def run_model(config: ExperimentConfig, row, inputs: DatasetInputs, out: Path,
              progress: Callable[[str], None], test_inputs: DatasetInputs | None = None,
              options: dict | None = None, split_source: pd.DataFrame | None = None) -> dict:
    """Train and evaluate one model on one dataset with the config's protocol.

    Kind "transfer" trains on `inputs` and tests once on `test_inputs`. `options` are the row's
    builder options with `$VAR`s expanded (default: `expand_options(row.options)`);
    `split_source` the patient split a hold-out row keeps (the table's own, or a chained run's).
    """
    from mammo_keras import models
    from mammo_keras.training.cv import cross_validate, holdout, transfer
    from mammo_keras.training.distribute import build_model

    shape = (*config.input_hw, config.input_channels)
    if options is None:
        options, _ = expand_options(row.options)

    def build():  # under the --strategy / --precision of an enclosing training_scope, if any
        return build_model(lambda: models.get(row.name, input_shape=shape, **options))

    if row.input_scale is not None:  # arrays are scaled once per dataset by config.input_scale
        gain = np.float32(row.input_scale / config.input_scale)
        index = inputs.index
        if IMAGE_MEAN_COLUMN in index:
            index = index.assign(**{IMAGE_MEAN_COLUMN: index[IMAGE_MEAN_COLUMN].astype(float) * gain})
        inputs = dataclasses.replace(inputs, images=inputs.images * gain, index=index)
        if test_inputs is not None:
            test_inputs = dataclasses.replace(test_inputs, images=test_inputs.images * gain)
    started = time.perf_counter()
    report = lambda message: progress(f"  {row.label}: {message}")  # noqa: E731
    explain = _grad_cam_writer(report) if config.grad_cam else None
    spec = train_spec(config, row, options)
    if config.kind == "cv":
        predictions = cross_validate(build, inputs.images, inputs.index, spec, out, n_splits=config.n_splits,
                                     val_fraction=config.val_fraction, seed=config.seed, progress=report,
                                     explain=explain)
    elif config.kind == "holdout":
        predictions = holdout(build, inputs.images, inputs.index, spec, out, fractions=config.fractions,
                              seed=config.seed, train_patients=row.train_patients, split_source=split_source,
                              progress=report, explain=explain)
    else:
        predictions = transfer(build, inputs.images, inputs.index, test_inputs.images, test_inputs.index,
                               spec, out, val_fraction=config.val_fraction, seed=config.seed, progress=report,
                               explain=explain)
    # Training time from each fold's record, so a resumed run reports what the work cost.
    seconds = recorded_seconds(out) or time.perf_counter() - started
    return summarise(config, predictions, out, f"{row.label} on {inputs.name}", seconds)


def recorded_seconds(out: Path) -> float:
    """Training seconds recorded in the metrics.json of every part (fold) under `out`; 0 if none."""
    return sum(json.loads(path.read_text()).get("seconds", 0.0) for path in out.glob("*/metrics.json"))


def run_ensemble(config: ExperimentConfig, row: ModelRow, dataset_out: Path) -> dict:
    """Combine the saved scores of the row's members (earlier rows on this dataset); see training.ensembling."""
    from mammo_keras.models.ensembles import COCCOMINI_GRID
    from mammo_keras.training.ensembling import combine

    spec = row.ensemble
    members = {label: dataset_out / label for label in spec["members"]}
    predictions = combine(members, spec["method"], dataset_out / row.label, column=spec.get("column", "score"),
                          grid=tuple(spec.get("grid", COCCOMINI_GRID)), hidden=tuple(spec.get("hidden", (16,))),
                          seed=config.seed)
    seconds = sum(recorded_seconds(folder) for folder in members.values())
    return summarise(config, predictions, dataset_out / row.label, f"{row.label} on {dataset_out.name}", seconds)


def summarise(config: ExperimentConfig, predictions: pd.DataFrame, out: Path, title: str,
              seconds: float) -> dict:
    """Per-fold metrics, their mean and sd, pooled estimates with bootstrap CIs, and the plots."""
    from mammo_keras.training.cv import metric_inputs

    result = {"seconds": round(seconds, 1), "n_items": int(len(predictions))}
    per_fold: list[dict] = [{} for _ in predictions.groupby("fold")]
    nan = float("nan")
    for metric in config.metrics:
        inputs = metric_inputs(predictions, metric)
        if inputs is None:
            result[metric] = {"fold_mean": nan, "fold_std": nan, "pooled": nan, "ci_low": nan, "ci_high": nan}
            continue
        labels, scores, function = inputs
        for values, (_, group) in zip(per_fold, predictions.groupby("fold")):
            with np.errstate(all="ignore"):
                values[metric] = function(labels[group.index], scores[group.index])
        estimate, low, high = bootstrap_ci(labels, scores, function, n_replicates=config.n_bootstrap,
                                           seed=config.seed)
        summary = fold_summary([{metric: v[metric]} for v in per_fold])[metric]
        result[metric] = {"fold_mean": summary[0], "fold_std": summary[1],
                          "pooled": estimate, "ci_low": low, "ci_high": high}
    result["folds"] = per_fold
    result["selected_epochs"] = selected_epochs(out)
    _plots(predictions, out, title)
    return result


def selected_epochs(out: Path) -> list[int]:
    """The epoch whose weights each part (fold) scored, from its metrics.json (Shen's "#Epochs")."""
    epochs = []
    for path in sorted(out.glob("*/metrics.json")):
        value = json.loads(path.read_text()).get("selected_epoch")
        if value is not None:
            epochs.append(int(value))
    return epochs


def _grad_cam_writer(report: Callable[[str], None]):
    """An explainer writing grad_cam.png (the most malignant-looking test items of each class) per fold."""
    from mammo_keras.evaluation.saliency import grad_cam_sheet
    from mammo_keras.training.fit import as_model_input

    def explain(model, images, predictions, fold_dir: Path) -> None:
        try:
            written = grad_cam_sheet(model, as_model_input(images, model), predictions.reset_index(drop=True),
                                     fold_dir / "grad_cam.png")
        except ValueError as error:  # a model Grad-CAM cannot explain: say so, keep the fold
            report(f"no Grad-CAM for {model.name}: {error}")
            return
        if written is None:
            report(f"no Grad-CAM for {model.name} (no single image input with 4-D feature maps)")

    return explain


def _plots(predictions: pd.DataFrame, out: Path, title: str) -> None:
    """roc.png (per fold and pooled) and learning_curves.png (every fold's log)."""
    from mammo_keras.evaluation.plots import learning_curves, roc_curves

    if "score" in predictions and predictions["label"].nunique() == 2:
        roc_curves(predictions, out / "roc.png", title=title)
    logs = [pd.read_csv(path).assign(fold=int(path.parent.name.split("_")[-1]) if "_" in path.parent.name else 0)
            for path in sorted(out.glob("*/log.csv"))]
    if logs:
        learning_curves(pd.concat(logs, ignore_index=True), out / "learning_curves.png", title=title)


def format_metric(metric: str, value: float | None) -> str:
    """AUC (and A-AUC) as a fraction (0.912), every other rate in percent (91.2), '-' when missing."""
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value:.3f}" if metric in ("auc", "a_auc") else f"{100 * value:.1f}"


def write_tables(config: ExperimentConfig, rows: list[dict], out: Path, header: list[str]) -> None:
    """table.csv (one line per row) and table.md (paper vs ours, with CIs)."""
    atomic_write_text(out / "table.csv", pd.DataFrame(rows).to_csv(index=False))
    metric = config.reported_metric
    others = [m for m in config.metrics if m != metric]
    unit = lambda m: "" if m in ("auc", "a_auc") else " (%)"  # noqa: E731
    lines = [f"# {config.title}", "", *header, "",
             "`epoch`: the epoch whose weights each part scored (selection rule in plan.md); "
             "`minutes`: recorded training time.", "",
             f"| dataset | model | n | paper {metric}{unit(metric)} | ours {metric}{unit(metric)} (fold mean ± sd) | "
             f"ours {metric}{unit(metric)} pooled [95% CI] | "
             + " | ".join(f"ours {m}{unit(m)} pooled [95% CI]" for m in others) + " | epoch | minutes | status |",
             "|---|---|---:|---:|---:|---:|" + "---:|" * len(others) + "---:|---:|---|"]

    def pooled(name: str, row: dict) -> str:
        if not np.isfinite(row.get(f"{name}_pooled", np.nan)):
            return "-"
        return (f"{format_metric(name, row[f'{name}_pooled'])} [{format_metric(name, row[f'{name}_ci_low'])}, "
                f"{format_metric(name, row[f'{name}_ci_high'])}]")

    for row in rows:
        paper = format_metric(metric, row["paper"])
        if row.get("paper_std") is not None:
            paper += f" ± {format_metric(metric, row['paper_std'])}"
        if row["status"] == "ok":
            ours = (f"{format_metric(metric, row[f'{metric}_fold_mean'])} ± "
                    f"{format_metric(metric, row[f'{metric}_fold_std'])}")
            first = pooled(metric, row)
            rest = [pooled(m, row) for m in others]
            minutes = f"{row['seconds'] / 60:.1f}"
        else:
            ours = first = minutes = "-"
            rest = ["-"] * len(others)
        lines.append(f"| {row['dataset']} | {row['model']} | {row.get('n_items', '-')} | {paper} | {ours} | "
                     f"{first} | " + " | ".join(rest) + f" | {row.get('epochs') or '-'} | {minutes} | {row['status']} |")
    lines.append("")
    lines += deviation_lines(config.paper)
    table = reported_table(config)
    if table.get("rows"):
        columns = list(dict.fromkeys(k for r in table["rows"] for k in r))
        units = ", ".join(f"{k} in {v}" for k, v in (table.get("units") or {}).items())
        lines += [f"The paper's {config.reported_table} as published ({table.get('source', '')}; {units}):", "",
                  "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in table["rows"]]
        lines.append("")
    atomic_write_text(out / "table.md", "\n".join(lines))


def deviation_lines(paper: str) -> list[str]:
    """The paper's declared deviations (protocol.yaml), printed under every results table of it."""
    from mammo_keras.protocol import declared

    deviations = declared(paper)["deviations"]
    if not deviations:
        return []
    return ["Declared deviations from the paper's stated protocol (experiments/"
            f"{paper}/protocol.yaml; `--plan` shows the executed protocol):", "",
            *[f"- {d['stated']} ({d['cite']}): {d['reason']}" for d in deviations], ""]


def _describe_weights(weights) -> str:
    """How a row was initialised: "random", "imagenet" or a local file with its sha256 (for the record)."""
    if weights is None:
        return "random"
    path = Path(str(weights))
    if weights == "imagenet" or not path.is_file():
        return str(weights)
    return f"{path} (sha256 {sha256_file(path)[:16]})"


def comparison_plot(config: ExperimentConfig, rows: list[dict], out: Path) -> Path | None:
    """comparison.png: every finished row's pooled metric with its 95% CI, the paper's as markers.

    With one row per model and dataset this is Chougrad's Fig. 5 (random vs pretrained) or Fig. 6
    (fine-tuning depth) when the config lists those variants as models.
    """
    from mammo_keras.evaluation.plots import comparison_bars

    metric = config.reported_metric
    done = [row for row in rows if row["status"] == "ok"]
    if len(done) < 2:
        return None
    table = pd.DataFrame({"group": [row["dataset"] for row in done], "variant": [row["model"] for row in done],
                          "mean": [row[f"{metric}_pooled"] for row in done],
                          "low": [row[f"{metric}_ci_low"] for row in done],
                          "high": [row[f"{metric}_ci_high"] for row in done]})
    reported = {(row["dataset"], row["model"]): row["paper"] for row in done if row["paper"] is not None}
    return comparison_bars(table, out / "comparison.png", ylabel=f"{metric} (pooled, 95% CI)",
                           title=config.title, reported=reported or None)


def reproduce(config: ExperimentConfig, *, data_dir: str | Path | None = None,
              results_dir: str | Path = "results", progress: Callable[[str], None] = print) -> Path:
    """Run every (dataset, model) row of `config`; returns the results folder."""
    import keras
    import tensorflow as tf

    from mammo_keras.plan import compile_plan, write_plan

    started = time.perf_counter()
    commit = git_commit()  # the code that runs is the code at the start, not after edits during a run
    # The protocol every row will run, built before any data is read: a selector that matches
    # nothing or an input too small for a network stops the run here, not after hours.
    plan = compile_plan(config)
    write_plan(plan, Path(results_dir) / config.paper / config.table)
    progress(f"plan written to {Path(results_dir) / config.paper / config.table / 'plan.md'}")
    if config.kind == "detection":  # whole-image mass detection (Hamed 2020 Table 3) has its own runner
        from mammo_keras.detection.run import reproduce_detection

        return reproduce_detection(config, data_dir=data_dir, results_dir=results_dir, progress=progress,
                                   commit=commit)
    out = Path(results_dir) / config.paper / config.table
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    progress(f"{config.name} [{config.profile} profile]: {config.title}")
    if config.epoch_scale != 1.0:
        progress(f"epochs scaled by {config.epoch_scale} from the paper's protocol ({config.stages})")
    reported = reported_table(config)
    inputs: dict[str, DatasetInputs] = {}
    for dataset in config.datasets:
        if dataset != MERGED:
            inputs[dataset] = load_inputs(config, dataset, data_dir, out, progress)
    if MERGED in config.datasets:
        inputs[MERGED] = merge_inputs([v for k, v in inputs.items() if k != MERGED])
    test_inputs = None
    if config.kind == "transfer":
        test_inputs = load_inputs(config, config.test_dataset, data_dir, out, progress,
                                  options=config.test_dataset_options,
                                  tag="_test" if config.test_dataset_options else "",
                                  abnormality=config.test_abnormality)
    rows, fingerprints = [], {}
    for dataset in config.datasets:
        data = inputs[dataset]
        fingerprints[dataset] = data.fingerprint
        shown = dataset
        if test_inputs is not None:  # a transfer row: trained on `dataset`, tested on the test set
            fingerprints[f"test:{config.test_dataset}"] = test_inputs.fingerprint
            shown = f"{dataset} -> {config.test_dataset}"
            if test_inputs.absent and not data.absent:
                data = dataclasses.replace(data, absent=f"test set {test_inputs.absent}")
        finished: set[str] = set()
        split_source, split_missing = None, ""
        if config.kind == "holdout" and not data.absent:
            split_source, split_missing = table_split(config, dataset, data, out, results_dir, progress)
        for model_row in config.models:
            table = reported_table(config, name=model_row.paper_row["table"]) if "table" in model_row.paper_row \
                else reported
            paper, paper_std = reported_value(table, config, model_row,
                                              config.test_dataset if test_inputs is not None else dataset)
            options, unset = expand_options(model_row.options)
            options, pending = resolve_results(options, results_dir, dataset)
            waiting = sorted(set(model_row.ensemble.get("members", [])) - finished)
            status = (data.absent
                      or (f"skipped: {split_missing}" if split_missing else "")
                      or (f"skipped: set {', '.join(unset)} (a local weights file)" if unset else "")
                      or (f"skipped: {pending[0]}" if pending else "")
                      or (f"skipped: members without results: {', '.join(waiting)}" if waiting else "")
                      or "ok")
            row = {"dataset": shown + (" (synthetic)" if data.synthetic else ""), "model": model_row.label,
                   "paper": paper, "paper_std": paper_std, "status": status,
                   "weights": (f"ensemble of {', '.join(model_row.ensemble['members'])}" if model_row.ensemble
                               else _describe_weights(options.get("weights") or options.get("patch_weights")))}
            if status != "ok":
                progress(f"{dataset} / {model_row.label}: {status}")
            else:
                if model_row.ensemble:
                    progress(f"{dataset} / {model_row.label}: {model_row.ensemble['method']} of "
                             f"{', '.join(model_row.ensemble['members'])}")
                    result = run_ensemble(config, model_row, out / dataset)
                else:
                    progress(f"{dataset} / {model_row.label}: training ({config.kind}, {len(data.index)} items)")
                    result = run_model(config, model_row, data, out / dataset / model_row.label, progress,
                                       test_inputs=test_inputs, options=options, split_source=split_source)
                finished.add(model_row.label)
                row.update(n_items=result["n_items"], seconds=result["seconds"],
                           epochs=" ".join(str(e) for e in result.get("selected_epochs", [])))
                for metric in config.metrics:
                    row.update({f"{metric}_{k}": v for k, v in result[metric].items()})
            rows.append(row)
    synthetic = any(d.synthetic for d in inputs.values()) or bool(test_inputs and test_inputs.synthetic)
    header = [f"Profile `{config.profile}`; command: `mammo-keras reproduce {config.name} --profile {config.profile}`.",
              f"Protocol: {config.kind}{f' ({config.n_splits}-fold, patient-level)' if config.kind == 'cv' else ''}, "
              f"stages `{config.stages}` x{config.epoch_scale} epochs, augmentation `{config.augment}`, "
              f"input {config.input_size}px, seed {config.seed}; CIs: {config.n_bootstrap} bootstrap replicates "
              "of the pooled out-of-fold predictions.",
              f"Git commit {commit}; wall time of this invocation {(time.perf_counter() - started) / 60:.1f} "
              "min (folds finished earlier are reused; `minutes` per row is their recorded training time)."]
    if synthetic:
        header.insert(0, "**SYNTHETIC DATA**: these rows ran on the embedded phantom dataset, not on "
                         "mammograms; they show the pipeline works, not the paper's accuracy. Point the "
                         "command at real data with `--data DIR` (or MAMMO_DATA) and `--profile cpu|paper`.")
    if config.note:
        header.append(config.note)
    write_tables(config, rows, out, header)
    comparison_plot(config, rows, out)
    atomic_write_json(out / "run.json", {
        "config": config.to_dict(), "profile": config.profile, "seed": config.seed,
        "git_commit": commit, "data_fingerprints": fingerprints,
        "wall_seconds": round(time.perf_counter() - started, 1), "synthetic": synthetic,
        "versions": {"mammo_keras": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
                     "python": platform.python_version()},
        "rows": rows})
    return out
