"""Experiment configs: YAML files under experiments/ parsed into frozen dataclasses.

A config names a paper's table, the data task, the models (one result row per model
and dataset), the protocol (stage preset, augmentation, CV or hold-out) and how to find
the paper's reported numbers. `base: <relative path>` composes a shared base file;
`profiles: {tiny: {...}, cpu: {...}, paper: {...}}` holds per-profile overrides, merged
over the rest. Configs are data: they never execute code.

    tiny   seconds to minutes, CI: the phantom dataset, small inputs, few epochs
    cpu    real data on a 2-core machine: reduced epochs (said in the output)
    paper  the published protocol (GPU)
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from mammo_keras.vocabulary import ABNORMALITIES, KINDS, METRIC_NAMES

PROFILES = ("tiny", "cpu", "paper")
PREPARE_WORKERS_MAX = 8  # the runner's default prepare processes: one per core up to this (memory per worker)
EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"


@dataclasses.dataclass(frozen=True)
class ModelRow:
    """One model of the table: a registry name, the row label and builder options."""

    name: str
    label: str
    options: dict = dataclasses.field(default_factory=dict)
    stages: str | None = None  # overrides the config's stage preset for this model
    paper_row: dict = dataclasses.field(default_factory=dict)  # keys that pick the paper's row
    input_scale: float | None = None  # overrides the config's input_scale for this model
    train_patients: int | None = None  # hold-out: train on this many training patients (Shen Table 4)
    train_fraction: float | None = None  # cv: train on this share of each fold's patients (`train_fractions` sets it)
    # {method: average|weighted_average|stack, members: [labels of earlier rows], column: score|score_tta}:
    # combines the members' saved scores instead of training a model (`name` is then "ensemble").
    ensemble: dict = dataclasses.field(default_factory=dict)
    # {classifier: logistic_regression|random_forest, lesion_boxes: bool, options: {...}, levels: int}:
    # the classical baseline (evaluation.baseline) on the same parts as the CNN rows (`name` is "baseline").
    baseline: dict = dataclasses.field(default_factory=dict)
    # {method: simclr, epochs, batch_size, ...} (training.contrastive.Pretraining): before each part
    # trains, its encoder is pretrained without labels on the part's own training items.
    pretrain: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.pretrain:
            from mammo_keras.vocabulary import PRETRAIN_KEYS

            if self.baseline or self.ensemble:
                raise ValueError(f"row {self.label!r}: `pretrain` is for a trained model's row, not a "
                                 f"{'baseline' if self.baseline else 'ensemble'} row")
            unknown = sorted(set(self.pretrain) - set(PRETRAIN_KEYS))
            if unknown:  # the values are checked by training.contrastive.Pretraining (plan and runner)
                raise ValueError(f"row {self.label!r}: pretrain: unknown keys {unknown}. Valid keys: "
                                 f"{sorted(PRETRAIN_KEYS)}")
        if self.train_fraction is not None:
            check_train_fraction(self.train_fraction, f"row {self.label!r}: train_fraction")
        if self.baseline:
            self._check_baseline()
        if self.ensemble:
            from mammo_keras.vocabulary import ENSEMBLE_METHODS as METHODS

            if self.ensemble.get("method") not in METHODS or len(self.ensemble.get("members") or []) < 2:
                raise ValueError(f"row {self.label!r}: `ensemble` needs `method` (one of {METHODS}) and two "
                                 f"or more `members` (labels of earlier rows). Received: {self.ensemble!r}")
            if self.ensemble["method"] == "weighted_average" and not self.ensemble.get("grid"):
                raise ValueError(f"row {self.label!r}: a weighted_average ensemble needs its `grid` (the candidate "
                                 f"weights per member, as the paper states them). Received: {self.ensemble!r}")
            unknown = sorted(set(self.ensemble) - {"method", "members", "column", "grid", "hidden"})
            if unknown:
                raise ValueError(f"row {self.label!r}: unknown `ensemble` keys {unknown}")

    def _check_baseline(self) -> None:
        from mammo_keras.vocabulary import BASELINE_CLASSIFIERS, BASELINE_DETECTORS, BLOB_OPTIONS

        if "detector" in self.baseline:  # a detection table's floor (runner.detection.run_baseline_row)
            if self.baseline["detector"] not in BASELINE_DETECTORS:
                raise ValueError(f"row {self.label!r}: `baseline: detector` must be one of {BASELINE_DETECTORS}. "
                                 f"Received: {self.baseline!r}")
            unknown = sorted(set(self.baseline) - {"detector", "grid", "options"})
            if unknown:
                raise ValueError(f"row {self.label!r}: unknown `baseline` keys {unknown}. Valid keys: "
                                 "['detector', 'grid', 'options']")
            grid, options = self.baseline.get("grid") or {}, self.baseline.get("options") or {}
            if not isinstance(grid, dict) or not isinstance(options, dict):
                raise ValueError(f"row {self.label!r}: `baseline: grid` and `options` are mappings. "
                                 f"Received: {self.baseline!r}")
            for what, keys in (("grid", grid), ("options", options)):
                wrong = sorted(set(keys) - set(BLOB_OPTIONS))
                if wrong:
                    raise ValueError(f"row {self.label!r}: `baseline: {what}` names options {wrong} the "
                                     f"detector does not take. Valid options: {list(BLOB_OPTIONS)}")
            empty = sorted(key for key, values in grid.items() if not isinstance(values, list) or not values)
            if empty:
                raise ValueError(f"row {self.label!r}: `baseline: grid` needs a non-empty list of candidate "
                                 f"values per option. Received: {({k: grid[k] for k in empty})!r}")
            both = sorted(set(grid) & set(options))
            if both:
                raise ValueError(f"row {self.label!r}: {both} are both searched (`grid`) and fixed (`options`)")
            return
        if self.baseline.get("classifier") not in BASELINE_CLASSIFIERS:
            raise ValueError(f"row {self.label!r}: `baseline` needs `classifier`, one of {BASELINE_CLASSIFIERS} "
                             f"(or, in a detection table, `detector`, one of {BASELINE_DETECTORS}). "
                             f"Received: {self.baseline!r}")
        unknown = sorted(set(self.baseline) - {"classifier", "lesion_boxes", "options", "levels"})
        if unknown:
            raise ValueError(f"row {self.label!r}: unknown `baseline` keys {unknown}")

    def paper_keys(self) -> dict:
        """What identifies this model's row in paper_tables.yaml (default: model = label).

        A `table` key in `paper_row` names another table of paper_tables.yaml to look in.
        """
        return {"model": self.label, **{k: v for k, v in self.paper_row.items() if k != "table"}}


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One experiment (a paper's table or figure) at one profile. Each field's comment is its help text
    (`mammo-keras reproduce --help-config` prints them with their types and defaults)."""

    paper: str  # the paper's folder under experiments/ (chougrad2018, shen2017, ...)
    table: str  # the table or figure this config reproduces (its file name)
    title: str  # the title of table.md and the plots
    profile: str  # tiny, cpu or paper (set by --profile)
    task: str  # the `data prepare` task that cuts the inputs (chougrad, jain_levy, shen, shen_s10, ...)
    datasets: tuple[str, ...]  # the datasets, one table row per model and dataset ("merged": their union)
    models: tuple[ModelRow, ...]  # the table's rows: registry name, label, options (edit with rows / row_overrides)
    kind: str = "cv"  # cv (patient-level K-fold), holdout (one train/val/test split), transfer, detection
    stages: str = "chougrad2018"  # the stage preset (training.stages.PRESETS): multi-stage training as data
    epoch_scale: float = 1.0  # multiplies every stage's epochs (the tiny and cpu profiles shorten training)
    augment: str | None = None  # online augmentation preset (data.pipeline), or null for none
    input_size: int | tuple[int, int] = 224  # side, or (height, width)
    input_channels: int = 1  # channels of the model input (grey = 1; the networks replicate it where needed)
    task_options: dict = dataclasses.field(default_factory=dict)  # the prepare task's options over its defaults (e.g. the shen task's {label: abnormal}); recorded in prepare.json and the plan
    label_map: dict = dataclasses.field(default_factory=dict)  # prepared label -> task label, e.g. {1: 0, 2: 1}
    item_part: int | None = None  # for paired items (Coccomini): which array of the pair to use
    grad_cam: bool = True  # grad_cam.png per fold: overlays on the top test items of each class
    flip_tta: bool = False  # also score the mean over four flips (Shen's A-AUC; metric "a_auc")
    cache_features: bool = True  # run a frozen, unaugmented prefix once and train the rest (faster, same results)
    deterministic: bool = True  # TF op determinism: repeatable kernels (slower on a GPU); recorded in run.json and the plan
    prepare_workers: int = 0  # processes of the runner's prepare step; 0: one per CPU core, at most 8 (same outputs; in run.json)
    save_models: bool = False  # save each trained model (JSON + HDF5 + .keras + MODEL_CARD.md) beside its predictions
    input_scale: float = 1.0  # prepared arrays are in [0, 1]; 255 for models with ImageNet scaling
    abnormality: str | None = None  # keep only this lesion type (mass, calcification) and normals; null: all
    max_items: int | None = None  # about this many items at most, whole patients drawn with the seed; null: all
    n_splits: int = 5  # kind cv: the number of patient-level folds
    val_fraction: float = 0.15  # cv and transfer: share of each training part's patients held out for validation
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # holdout and detection: train/val/test patient shares
    # "patient": the kind's patient-level folds or split; "official": the dataset's own train/test
    # assignment (CBIS-DDSM's CSVs, VinDr-Mammo) is the test part, validation from its training patients.
    split: str = "patient"  # patient (the kind's own split) or official (the dataset's train/test assignment)
    test_dataset: str | None = None  # kind "transfer": train on each of `datasets`, test on this one
    test_dataset_options: dict = dataclasses.field(default_factory=dict)  # reader options (phantom seed)
    # Reader options per training dataset, e.g. {inbreast: {subset: shen2017}} (Shen's INbreast images).
    dataset_options: dict = dataclasses.field(default_factory=dict)  # reader options per training dataset
    test_abnormality: str | None = None  # lesion type kept in the test set (None: every type)
    batch_size: int | None = None  # overrides every stage's batch size; null: the stages' own
    precise_bn: bool | None = None  # overrides every stage's precise_bn (PreciseBN after every epoch); null: the stages' own
    seed: int = 0  # seeds splits, initialisation, augmentation and the bootstrap (recorded in run.json)
    n_bootstrap: int = 2000  # bootstrap replicates of every 95% CI
    metrics: tuple[str, ...] = ("accuracy", "auc")  # the metrics in the table (accuracy, auc, a_auc, sensitivity, ...)
    reported_table: str = ""  # the table of paper_tables.yaml whose numbers are shown beside ours
    reported_metric: str = "accuracy"  # the metric compared with the paper's (first column, comparison.png)
    dataset_keys: dict = dataclasses.field(default_factory=dict)  # dataset -> its name in paper_tables.yaml
    note: str = ""  # a paragraph printed under the table's header (what a profile changed, and why)
    detection: dict = dataclasses.field(default_factory=dict)  # kind "detection": see runner/detection.py
    # Input steps fitted on each training part (data.recipes): "none", "train_mean_grey" (Shen),
    # "train_mean_image" (Jain & Levy); and offline augmentation of the training part
    # ({rotations, crops_per_rotation, fill}: Jain & Levy's x25).
    normalisation: str = "none"  # none, train_mean_grey (Shen) or train_mean_image (Jain & Levy), fitted per part
    offline_augment: dict = dataclasses.field(default_factory=dict)  # {rotations, crops_per_rotation, fill}: x25
    # Which epoch's weights are kept (training.fit.SELECTIONS), optionally among this many evenly
    # spaced snapshots (Jain & Levy took four).
    selection: str = "last"  # which epoch's weights are scored: last, best_val_auc, best_val_accuracy, ...
    selection_snapshots: int | None = None  # choose among this many evenly spaced snapshots (Jain & Levy: 4)
    # Chained tables: keep the patient split of this earlier run (`<paper>/<table>`) per dataset.
    split_from: str = ""  # holdout: keep the patient split of this earlier run (`<paper>/<table>`)
    balance_eval: bool = False  # hold-out: as many items of each class in val and in test (Jain & Levy)
    # Classical baseline rows appended after the models (evaluation.baseline; labels baseline_lr /
    # baseline_rf): the cpu and paper profiles add both to every classification table.
    baselines: tuple[str, ...] = ()  # classical baseline rows added: logistic_regression, random_forest
    # A learning curve (kind cv): every row runs once per share of each fold's training patients kept
    # (nested, patient-level; the test folds unchanged), as rows labelled `<label>@<percent>%`.
    train_fractions: tuple[float, ...] = ()  # cv: learning-curve shares of training patients, e.g. [0.25, 0.5, 1.0]
    overrides: dict = dataclasses.field(default_factory=dict)  # the --set values this config was loaded with
    source: str = ""  # the config file's path (set by the loader)

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}. Received: profile={self.profile!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}. Received: kind={self.kind!r}")
        if not self.models:
            raise ValueError(f"{self.source}: a config needs at least one model")
        labels = [row.label for row in self.models]
        if len(set(labels)) != len(labels):
            raise ValueError(f"{self.source}: model labels must be unique. Received: {labels}")
        for number, row in enumerate(self.models):
            missing = set(row.ensemble.get("members", [])) - set(labels[:number])
            if missing:
                raise ValueError(f"{self.source}: ensemble row {row.label!r} needs its members "
                                 f"{sorted(missing)} listed before it")
        if self.prepare_workers < 0:
            raise ValueError(f"{self.source}: `prepare_workers` must be an integer >= 0 (0: one per CPU core, at "
                             f"most 8). Received: prepare_workers={self.prepare_workers!r}")
        from mammo_keras.vocabulary import NORMALISATIONS, SELECTIONS

        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"{self.source}: `normalisation` must be one of {NORMALISATIONS}. "
                             f"Received: normalisation={self.normalisation!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"{self.source}: `selection` must be one of {SELECTIONS}. "
                             f"Received: selection={self.selection!r}")
        unknown = sorted(set(self.offline_augment) - {"rotations", "crops_per_rotation", "fill"})
        if unknown:
            raise ValueError(f"{self.source}: `offline_augment` takes rotations, crops_per_rotation and fill. "
                             f"Received: {sorted(self.offline_augment)}")
        from mammo_keras.vocabulary import OFFICIAL_SPLIT_KINDS, SPLIT_RULES

        if self.split not in SPLIT_RULES:
            raise ValueError(f"{self.source}: `split` must be one of {SPLIT_RULES}. Received: split={self.split!r}")
        if self.split == "official" and self.kind not in OFFICIAL_SPLIT_KINDS:
            raise ValueError(f"{self.source}: `split: official` takes the test part from the dataset's own "
                             f"train/test assignment; it applies to the kinds {OFFICIAL_SPLIT_KINDS} (a transfer "
                             f"row tests on another dataset). Received: kind={self.kind!r}")
        if self.train_fractions:
            for value in self.train_fractions:
                check_train_fraction(value)
            if len(set(self.train_fractions)) != len(self.train_fractions):
                raise ValueError(f"{self.source}: `{TRAIN_FRACTIONS_KEY}` lists a share twice. "
                                 f"Received: {TRAIN_FRACTIONS_KEY}={list(self.train_fractions)}")
        if (self.train_fractions or any(row.train_fraction is not None for row in self.models)) \
                and (self.kind != "cv" or self.split != "patient"):
            raise ValueError(f"{self.source}: `{TRAIN_FRACTIONS_KEY}` subsamples the training patients of each "
                             f"fold of a patient-level cross-validation; it needs kind 'cv' with split 'patient'. "
                             f"Received: kind={self.kind!r}, split={self.split!r}")
        if self.split_from and self.kind != "holdout":
            raise ValueError(f"{self.source}: `split_from` keeps an earlier hold-out split; it needs kind "
                             f"'holdout'. Received: kind={self.kind!r}")
        if self.kind == "transfer":
            if not self.test_dataset:
                raise ValueError(f"{self.source}: kind 'transfer' needs `test_dataset`")
            self._check_independent_test()

        self._check_ranges()

    def _check_independent_test(self) -> None:
        """A transfer's test set must be other women than its training sets: another dataset under any of
        its names (`mini-mias` is `mias`, `ddsm` is `cbis_ddsm`), or a generated one drawn with another
        seed. Another lesion type (`test_abnormality`) or other reader options of a real dataset keep the
        same women."""
        from mammo_keras.vocabulary import GENERATED_DATASETS, dataset_key

        test = dataset_key(self.test_dataset)
        trained = [name for name in self.datasets if dataset_key(name) == test]
        if not trained:
            return
        own = next((dict(options or {}) for key, options in self.dataset_options.items() if dataset_key(key) == test), {})
        default_seed = 0  # data.phantom.DEFAULTS
        if (test in GENERATED_DATASETS and "seed" in self.test_dataset_options
                and self.test_dataset_options["seed"] != own.get("seed", default_seed)):
            return
        raise ValueError(f"{self.source}: test_dataset {self.test_dataset!r} is also a training dataset "
                         f"({trained[0]!r}: the same women); an independent test needs other women: another "
                         f"dataset, or for a generated one ({', '.join(GENERATED_DATASETS)}) another `seed` in "
                         "`test_dataset_options`. Another lesion type (`test_abnormality`) or other reader options "
                         f"do not make other women. Received: datasets={list(self.datasets)}, "
                         f"test_dataset={self.test_dataset!r}, test_dataset_options={self.test_dataset_options!r}")

    def _check_ranges(self) -> None:
        """Numbers and names a run would otherwise meet only after reading and preparing the data (or
        never: `n_bootstrap=0` or `batch_size=0` ran, or failed deep inside)."""
        def bad(key: str, wanted: str):
            raise ValueError(f"{self.source}: `{key}` must be {wanted}. Received: {key}={getattr(self, key)!r}")

        def number(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        if not self.datasets:
            bad("datasets", "a non-empty list of datasets")
        if not (number(self.epoch_scale) and self.epoch_scale > 0):
            bad("epoch_scale", "a number > 0")
        if not (number(self.input_scale) and self.input_scale > 0):
            bad("input_scale", "a number > 0 (1 for items in [0, 1], 255 for ImageNet scaling)")
        if self.input_channels not in (1, 3):
            bad("input_channels", "1 (grey) or 3")
        if any(not (isinstance(side, int) and side >= 1) for side in self.input_hw):
            bad("input_size", "a positive side or (height, width)")
        if self.max_items is not None and not (isinstance(self.max_items, int) and self.max_items >= 1):
            bad("max_items", "an integer >= 1, or null for every item")
        if self.kind == "cv" and not (isinstance(self.n_splits, int) and self.n_splits >= 2):
            bad("n_splits", "an integer >= 2 (patient-level folds)")
        if not (number(self.val_fraction) and 0 <= self.val_fraction < 1):
            bad("val_fraction", "a share in [0, 1)")
        fractions = tuple(self.fractions)
        if (len(fractions) != 3 or not all(number(f) and 0 <= f <= 1 for f in fractions) or fractions[0] <= 0
                or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6)):
            bad("fractions", "three train/val/test shares in [0, 1] that sum to 1, with a training share > 0")
        if self.batch_size is not None and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            bad("batch_size", "an integer >= 1, or null for the stages' own")
        if self.precise_bn is not None and not isinstance(self.precise_bn, bool):
            bad("precise_bn", "true, false, or null for the stages' own")
        if not (isinstance(self.n_bootstrap, int) and self.n_bootstrap >= 1):
            bad("n_bootstrap", "an integer >= 1 (bootstrap replicates of the CIs)")
        if self.selection_snapshots is not None and not (isinstance(self.selection_snapshots, int)
                                                         and self.selection_snapshots >= 1):
            bad("selection_snapshots", "an integer >= 1, or null")
        if self.kind != "detection":
            known = (*METRIC_NAMES, "a_auc")
            unknown = [m for m in self.metrics if m not in known]
            if unknown or not self.metrics:
                raise ValueError(f"{self.source}: `metrics` must list some of {list(known)}. Received: "
                                 f"metrics={list(self.metrics)!r}")
        for key in ("abnormality", "test_abnormality"):
            value = getattr(self, key)
            if value is not None and value not in ABNORMALITIES:
                bad(key, f"one of {list(ABNORMALITIES)} or null")
        for row in self.models:  # a classifier baseline scores items, a detector baseline boxes
            if row.baseline and ("detector" in row.baseline) != (self.kind == "detection"):
                raise ValueError(f"{self.source}: row {row.label!r}: "
                                 + ("a detection table's baseline row takes `baseline: {detector: ...}`"
                                    if self.kind == "detection" else
                                    f"`baseline: detector` is for detection tables; this one is kind {self.kind!r}"))

    @property
    def prepare_worker_count(self) -> int:
        """The processes the runner prepares with: `prepare_workers`, or one per CPU core, at most 8."""
        return self.prepare_workers or min(os.cpu_count() or 1, PREPARE_WORKERS_MAX)

    @property
    def input_hw(self) -> tuple[int, int]:
        size = self.input_size
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    @property
    def official_val_fraction(self) -> float | None:
        """With `split: official`, the share of the official training patients drawn for validation (the
        config's val_fraction in cv, its val / (train + val) fractions otherwise); None without it."""
        if self.split != "official":
            return None
        if self.kind == "cv":
            return float(self.val_fraction)
        return float(self.fractions[1]) / (float(self.fractions[0]) + float(self.fractions[1]))

    @property
    def name(self) -> str:
        return f"{self.paper}/{self.table}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


TRAIN_FRACTIONS_KEY = "train_fractions"


def check_train_fraction(value, key: str = TRAIN_FRACTIONS_KEY) -> float:
    """`value` as a share of training patients in (0, 1], or a ValueError naming the config `key`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= 1:
        raise ValueError(f"`{key}` takes shares of each fold's training patients, numbers in (0, 1] "
                         f"(e.g. [0.25, 0.5, 0.75, 1.0]). Received: {key} entry {value!r}")
    return float(value)


def fraction_label(label: str, fraction: float) -> str:
    """The label of a row's learning-curve point: `scratch_cnn@25%` (`scratch_cnn@12.5%`)."""
    return f"{label}@{100 * fraction:g}%"


def _fraction_rows(models: tuple[ModelRow, ...], fractions, path: Path) -> tuple[ModelRow, ...]:
    """Every row once per learning-curve share (`train_fractions`), row by row; an ensemble combines its
    members' points of the same share."""
    if not fractions:
        return models
    if not isinstance(fractions, (list, tuple)):
        raise ValueError(f"{path}: `{TRAIN_FRACTIONS_KEY}` takes a list of shares in (0, 1], e.g. "
                         f"[0.25, 0.5, 0.75, 1.0]. Received: {TRAIN_FRACTIONS_KEY}={fractions!r}")
    shares = [check_train_fraction(value) for value in fractions]
    if len(set(shares)) != len(shares):
        raise ValueError(f"{path}: `{TRAIN_FRACTIONS_KEY}` lists a share twice. "
                         f"Received: {TRAIN_FRACTIONS_KEY}={list(fractions)}")
    rows = []
    for row in models:
        for share in shares:
            ensemble = dict(row.ensemble)
            if ensemble:
                ensemble["members"] = [fraction_label(member, share) for member in ensemble["members"]]
            rows.append(dataclasses.replace(row, label=fraction_label(row.label, share), train_fraction=share,
                                            ensemble=ensemble))
    return tuple(rows)


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path in seen:
        raise ValueError(f"{path}: `base` files include each other in a loop")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"experiment config not found: {path}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from None
    if "base" in raw:
        base = _read_yaml((path.parent / raw.pop("base")).resolve(), seen + (path,))
        raw = _merge(base, raw)
    return raw


def config_path(name: str, experiments_dir: Path = EXPERIMENTS_DIR) -> Path:
    """`chougrad2018/table2` -> experiments/chougrad2018/table2.yaml (a path is taken as is)."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    path = experiments_dir / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"No experiment config {name!r}. Available: {', '.join(list_configs(experiments_dir))}")
    return path


NOT_CONFIGS = ("paper_tables", "protocol", "results")


def list_configs(experiments_dir: Path = EXPERIMENTS_DIR) -> list[str]:
    """Every runnable config as `<paper>/<table>`.

    Not runs: the shared `base/` folder, a paper's `_base.yaml` (what its configs share),
    `paper_tables.yaml` (the paper's numbers), `protocol.yaml` (the paper's stated protocol) and
    `results.yaml` (our measured numbers).
    """
    return sorted(str(p.relative_to(experiments_dir).with_suffix(""))
                  for p in experiments_dir.glob("*/*.yaml")
                  if p.stem not in NOT_CONFIGS and not p.stem.startswith("_") and p.parent.name != "base")


def _model_row(raw: dict, path: Path) -> ModelRow:
    fields = {f.name for f in dataclasses.fields(ModelRow)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown} in model row {raw.get('label', raw.get('name'))!r}. "
                         f"Valid keys: {sorted(fields)}")
    values = dict(raw)
    values.setdefault("name", "ensemble" if values.get("ensemble") else "baseline" if values.get("baseline") else None)
    if not values["name"]:
        raise ValueError(f"{path}: every model row needs a `name` (a registry name). Received: {raw!r}")
    values.setdefault("label", values["name"])
    for key in ("options", "paper_row", "ensemble", "baseline", "pretrain"):
        values[key] = dict(values.get(key) or {})
    return ModelRow(**values)


def _baseline_rows(raw: dict, path: Path) -> tuple[ModelRow, ...]:
    """The rows a config's `baselines` adds (none for detection tables, which have their own floor)."""
    from mammo_keras.vocabulary import BASELINE_CLASSIFIERS, BASELINE_LABELS, LESION_BOX_TASKS

    if raw.get("kind") == "detection":
        return ()
    rows = []
    for classifier in raw.get("baselines", ()):
        if classifier not in BASELINE_CLASSIFIERS:
            raise ValueError(f"{path}: `baselines` take the classifiers {BASELINE_CLASSIFIERS}. "
                             f"Received: {classifier!r}")
        rows.append(ModelRow("baseline", BASELINE_LABELS[classifier], baseline={
            "classifier": classifier, "lesion_boxes": raw.get("task") in LESION_BOX_TASKS}))
    return tuple(rows)


def _select_rows(models: list[ModelRow], path: Path, *, rows, row_options: dict,
                 row_overrides: dict) -> tuple[ModelRow, ...]:
    """Profiles change rows, not whole model lists: a subset (`rows`), options merged into every
    row (`row_options`) and per-row field changes (`row_overrides: {label: {field: value}}`)."""
    labels = [row.label for row in models]
    if rows is not None and not (isinstance(rows, list) and all(isinstance(r, str) for r in rows)):
        raise ValueError(f"{path}: `rows` takes a list of row labels, e.g. --set 'rows=[{labels[0] if labels else 'vgg16'}]'. "
                         f"Received: rows={rows!r}")
    for what, names in (("rows", rows or []), ("row_overrides", list(row_overrides))):
        unknown = sorted(set(names) - set(labels))
        if unknown:
            raise ValueError(f"{path}: `{what}` names rows the config does not have: {unknown}. "
                             f"Rows: {labels}")
    chosen = [row for row in models if rows is None or row.label in rows]
    fields = {f.name for f in dataclasses.fields(ModelRow)}
    result = []
    for row in chosen:
        change = dict(row_overrides.get(row.label) or {})
        unknown = sorted(set(change) - fields)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown} in row_overrides[{row.label!r}]. "
                             f"Valid keys: {sorted(fields)}")
        options = {**row.options, **({} if row.ensemble or row.baseline else row_options),
                   **dict(change.pop("options", {}) or {})}
        for key in ("paper_row", "ensemble", "pretrain"):
            if key in change:
                change[key] = {**getattr(row, key), **dict(change[key] or {})}
        result.append(dataclasses.replace(row, options=options, **change))
    return tuple(result)


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               dict: "a mapping {key: value}", list: "a list", type(None): "null"}
_SET_ELSEWHERE = {"profile": "--profile", "source": "the config file's own path",
                  "overrides": "the loader (the --set values themselves)"}


def _type_text(kind) -> str:
    """How a field type reads in a message: `int | None` -> "an integer or null"."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(arg) for arg in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_text(args[0]).removeprefix('an ').removeprefix('a ')}s"
        return f"a list of {len(args)} {_type_text(args[0]).removeprefix('an ').removeprefix('a ')}s"
    return _TYPE_WORDS.get(origin or kind, getattr(kind, "__name__", str(kind)))


def _conforms(value, kind) -> bool:
    """Whether a YAML value fits a dataclass field type (an int fits a float field; a list a tuple)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in args)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is str:
        return isinstance(value, str)
    if kind is dict or origin is dict:
        return isinstance(value, dict)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_conforms(item, args[0]) for item in value)
        return len(value) == len(args) and all(_conforms(item, arg) for item, arg in zip(value, args))
    return True  # a type this check does not know (model rows): the dataclass judges it


def check_overrides(overrides: dict[str, Any], path: str | Path = "--set") -> dict[str, Any]:
    """Overrides checked against the ExperimentConfig field types before any work is done.

    A string that reads as a number is taken as one for a number field (YAML 1.1 reads "1e-3" as a
    string). Unknown keys are left to `load_config`, which lists the valid ones.

    Raises:
        ValueError: naming the key, the type it takes and the value received.
    """
    hints = typing.get_type_hints(ExperimentConfig)
    checked = dict(overrides)
    for key, value in overrides.items():
        if key in _SET_ELSEWHERE:
            raise ValueError(f"{path}: {key} cannot be overridden (it is set by {_SET_ELSEWHERE[key]}). "
                             f"Received: {key}={value!r}")
        if key not in hints or key == "models":
            continue
        kind = hints[key]
        if isinstance(value, str) and not _conforms(value, kind) and _conforms(1.0, kind):
            try:
                value = checked[key] = float(value)
            except ValueError:
                pass
        if not _conforms(value, kind):
            raise ValueError(f"{path}: override {key} takes {_type_text(kind)}. "
                             f"Received: {key}={value!r} ({_type_text(type(value))})")
    return checked


_ROW_KEYS = {  # the keys load_config takes besides the fields: they change rows, not the whole model list
    "rows": "a list of row labels: keep only these rows (e.g. --set 'rows=[vgg16]'); the profile's baseline rows "
            "(baseline_lr, baseline_rf) stay unless the list names one of them",
    "row_options": "a mapping: builder options merged into every row (e.g. --set 'row_options={weights: null}')",
    "row_overrides": "a mapping {row label: {ModelRow field: value}}: change one row (name, options, stages, "
                     "input_scale, train_patients, train_fraction, paper_row, ensemble, baseline, pretrain; options, "
                     "paper_row, ensemble and pretrain are merged into the row's key by key)",
}


def field_help() -> list[dict]:
    """Every ExperimentConfig field as {name, type, default, help}: the type in words, the default as YAML
    ("required" for fields every config sets), and the field's comment in this file (its trailing comment,
    else the comment lines just above it)."""
    import ast
    import io
    import tokenize

    source = Path(__file__).read_text()
    comments = {token.start[0]: token.string.lstrip("#").strip()
                for token in tokenize.generate_tokens(io.StringIO(source).readline)
                if token.type == tokenize.COMMENT}
    lines = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == "ExperimentConfig":
            lines = {item.target.id: item.lineno for item in node.body
                     if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)}
    hints = typing.get_type_hints(ExperimentConfig)
    entries = []
    for field in dataclasses.fields(ExperimentConfig):
        line = lines[field.name]
        text = comments.get(line)
        if text is None:  # a comment block directly above the field
            above, number = [], line - 1
            while number in comments:
                above.insert(0, comments[number])
                number -= 1
            text = " ".join(above)
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = dataclasses.MISSING
        shown = "required" if default is dataclasses.MISSING else yaml.safe_dump(
            list(default) if isinstance(default, tuple) else default, default_flow_style=True).strip()
        shown = shown.removesuffix("\n...").strip()
        entries.append({"name": field.name, "type": _type_text(hints[field.name]), "default": shown, "help": text})
    return entries


def config_help() -> str:
    """`mammo-keras reproduce --help-config`: every key a config file or `--set KEY=VALUE` can set."""
    lines = ["Config keys: the fields of a config file (experiments/<paper>/<table>.yaml); `--set KEY=VALUE` "
             "overrides any of them", "for one run (VALUE is YAML: --set n_splits=3, --set 'datasets=[mias]', "
             "--set save_models=true). A profile's", "section (`profiles: {tiny: ..., cpu: ..., paper: ...}`) "
             "is applied first, then --set; the values are checked", "against these types before any work.", ""]
    for entry in field_help():
        where = f"; set by {_SET_ELSEWHERE[entry['name']]}, not --set" if entry["name"] in _SET_ELSEWHERE else ""
        where += "; in the config file (rows, row_options, row_overrides change it)" if entry["name"] == "models" else ""
        default = "required" if entry["default"] == "required" else f"default {entry['default']}"
        lines.append(f"  {entry['name']}: {entry['type']} ({default}{where})")
        lines.append(f"      {entry['help']}")
    lines += ["", "Row keys (they change the `models` rows; in a config file or with --set):", ""]
    for name, text in _ROW_KEYS.items():
        lines += [f"  {name}", f"      {text}"]
    return "\n".join(lines)


def load_config(name: str, profile: str = "tiny", *, experiments_dir: Path = EXPERIMENTS_DIR,
                overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Parse a config for `profile`, applying its profile section and then `overrides`.

    Overrides are checked against the field types first (`check_overrides`).
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}. Received: profile={profile!r}")
    path = config_path(name, experiments_dir)
    overrides = check_overrides(overrides or {}, path)
    raw = _read_yaml(path)
    profiles = raw.pop("profiles", {}) or {}
    raw = _merge(raw, profiles.get(profile, {}) or {})
    raw = _merge(raw, overrides)
    baselines = list(_baseline_rows(raw, path))
    rows = raw.pop("rows", None)
    rows = [rows] if isinstance(rows, str) else rows
    if isinstance(rows, list) and not {row.label for row in baselines} & set(rows):
        rows = rows + [row.label for row in baselines]  # naming only models keeps the profile's baselines
    models = _select_rows([_model_row(m, path) for m in raw.pop("models", [])] + baselines, path,
                          rows=rows, row_options=raw.pop("row_options", None) or {},
                          row_overrides=raw.pop("row_overrides", None) or {})
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ValueError(f"{path}: unknown config keys {unknown}. Valid keys: {sorted(fields)}")
    if isinstance(raw.get("input_size"), list):
        raw["input_size"] = tuple(raw["input_size"])
    models = _fraction_rows(tuple(models), raw.get(TRAIN_FRACTIONS_KEY), path)
    if raw.get("kind") == "detection" and any(row.pretrain for row in models):
        raise ValueError(f"{path}: `pretrain` (self-supervised encoder pretraining) is for classification rows; "
                         f"detection rows take a backbone's `weights` instead")
    for key in ("datasets", "metrics", "fractions", "baselines", TRAIN_FRACTIONS_KEY):
        if key in raw:
            raw[key] = tuple(raw[key])
    config = ExperimentConfig(profile=profile, models=models, source=str(path), overrides=dict(overrides), **raw)
    if any(row.pretrain.get("unlabelled") for row in models) and (config.kind != "cv" or config.split == "official"):
        raise ValueError(f"{path}: `pretrain.unlabelled` is supported by cross-validation (kind cv) only. "
                         f"Received: kind={config.kind!r}, split={config.split!r}")
    return config
