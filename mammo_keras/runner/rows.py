"""One result row of a config: its builder options, results references, stages and TrainSpec."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from mammo_keras import settings
from mammo_keras.config import ExperimentConfig, ModelRow
from mammo_keras.data.recipes import InputRecipe
from mammo_keras.fileio import sha256_file


def expand_options(options: dict) -> tuple[dict, list[str]]:
    """Options with `$VAR` / `${VAR}` strings expanded from the environment, and the unset names.

    Lets a config name a local weights file without hard-coding a path, e.g.
    `weights: ${MAMMO_VGG16_WEIGHTS}`; a row whose variable is unset is skipped, saying which.
    """
    expanded, unset = {}, []
    for key, value in options.items():
        if isinstance(value, str) and "$" in value:
            value, missing = settings.expand_variables(value)
            unset += missing
        expanded[key] = value
    return expanded, unset


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


def resolve_results(options: dict, results_dir: str | Path, dataset: str) -> tuple[dict, list[str]]:
    """Options whose value is `{results: <paper>/<table>, row: <label>}` -> that run's saved weights.

    This chains tables: Shen's whole-image rows start from the patch classifier a Table 1 run
    saved on the same dataset. Returns the options and a note per reference whose run has not been
    made yet.
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


def row_stages(config: ExperimentConfig, row: ModelRow) -> tuple:
    """The row's stage list at the config's profile: its preset, epochs scaled, batch size and precise_bn
    overridden where the config sets them."""
    from mammo_keras.training.stages import preset as stage_preset

    stages = [stage.scaled(config.epoch_scale) if config.epoch_scale != 1.0 else stage
              for stage in stage_preset(row.stages or config.stages)]
    if config.batch_size:
        stages = [dataclasses.replace(stage, batch_size=config.batch_size) for stage in stages]
    if config.precise_bn is not None:
        stages = [dataclasses.replace(stage, precise_bn=config.precise_bn) for stage in stages]
    return tuple(stages)


def row_pretraining(config: ExperimentConfig, row: ModelRow):
    """The row's self-supervised pretraining at the config's profile (epochs scaled as its stages'), or None."""
    from mammo_keras.training.contrastive import Pretraining

    spec = Pretraining.from_config(row.pretrain, f"row {row.label!r}: pretrain")
    return spec.scaled(config.epoch_scale) if spec is not None and config.epoch_scale != 1.0 else spec


def model_info(config: ExperimentConfig, row: ModelRow) -> dict:
    """The manifest sections a saved model of `row` carries (`io.save` keywords): the builder's name,
    the class names and the input recipe, so `predict` prepares a new image as training did."""
    recipe = InputRecipe.of(config, row)
    return {"architecture": row.name, "class_names": list(recipe.class_names), "preprocessing": recipe.to_manifest()}


def train_spec(config: ExperimentConfig, row: ModelRow, options: dict):
    """The TrainSpec (training.cv) of one result row: everything that trains and scores one part."""
    from mammo_keras.data.pipeline import preset as augment_preset
    from mammo_keras.data.recipes import Normalisation, OfflineAugment
    from mammo_keras.training.cv import TrainSpec

    recipe = InputRecipe.of(config, row)
    return TrainSpec(stages=row_stages(config, row),
                     augment=augment_preset(config.augment) if config.augment else None,
                     normalisation=Normalisation(config.normalisation),
                     offline=OfflineAugment(**config.offline_augment) if config.offline_augment else None,
                     eval_crop=recipe.eval_crop, fine_tune=options.get("fine_tune"), selection=config.selection,
                     snapshots=config.selection_snapshots, flip_tta=config.flip_tta,
                     cache_features=config.cache_features, deterministic=config.deterministic,
                     save_models=config.save_models or config.kind == "transfer",
                     model_info=model_info(config, row), progress=settings.progress_bars(),
                     pretrain=row_pretraining(config, row))


def describe_weights(weights) -> str:
    """How a row was initialised: "random", "imagenet" or a local file with its sha256 (for the record)."""
    if weights is None:
        return "random"
    path = Path(str(weights))
    if weights == "imagenet" or not path.is_file():
        return str(weights)
    return f"{path} (sha256 {sha256_file(path)[:16]})"
