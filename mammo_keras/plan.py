"""The executed protocol as data: compile a config into the plan of every row, without training.

    plan = compile_plan(load_config("shen2017/table2", "paper"))
    print(render_markdown(plan))            # what `mammo-keras reproduce shen2017/table2 --plan` prints

A plan holds, per result row:
    data        dataset, task and its preprocessing chain in order (crop rule, resize, GCN, intensity
                scale, training-set normalisation, offline augmentation, channels, the backbone's own
                input scaling), label mapping, lesion filter
    split       kind, folds or fractions, seed, grouping key, the earlier run whose split it keeps
    stages      per stage: optimizer with every hyperparameter, schedule, the effective learning rate
                of every layer after multipliers, loss, L2 penalties (value and kernels), trainable
                layers (names, counts of conv and dense layers, parameters), BatchNorm mode, epochs,
                batch size, steps per epoch, early stopping, augmentation, class weighting
    selection   which epoch's weights are scored
    evaluation  metrics, test-time augmentation, CI method

Each model is built (with random weights: the plan needs its layers, not its ImageNet values) and
put through the same `stages.apply_trainable` / `stages.apply_l2` calls `fit.fit_stages` makes, so
the plan describes what training does, not what a preset says. Nothing is trained or read from a
dataset; building takes seconds per model. `plan.json` and `plan.md` are written at the start of
every run, and tests/experiments/test_protocol.py holds every paper-profile plan against the
paper's stated facts in experiments/<paper>/protocol.yaml.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

from mammo_keras.config import ExperimentConfig, ModelRow
from mammo_keras.data.splits import GROUP_KEY
from mammo_keras.vocabulary import grouping_caveats

PLAN_VERSION = 5  # 2: each row names its stage preset; model_summary lists the kernel initialisers
# 3: they are those that drew the kernels (`kernel_init`; a re-initialised network, Chougrad's N(0, 0.05), named
# the builder's GlorotUniform in `kernel_initializers`); 4: a hold-out split names the whole folds it deals
# (`split.folds`: the fractions that run); 5: `split.group` / `split.stratify` are read from the splitting
# modules (a detection split stratifies on pathology), `split.stratify_kept` where a split is kept
UNTRAINED_WEIGHTS = ("weights", "patch_weights")


def _layer_kind(layer) -> str:
    import keras

    if isinstance(layer, keras.layers.Conv2D):
        return "conv"
    if isinstance(layer, keras.layers.Dense):
        return "dense"
    if isinstance(layer, keras.layers.BatchNormalization):
        return "batchnorm"
    return type(layer).__name__


def _params(layer, trainable: bool | None = None) -> int:
    weights = layer.weights if trainable is None else (layer.trainable_weights if trainable
                                                       else layer.non_trainable_weights)
    return int(sum(math.prod(w.shape) for w in weights))


def _prefixes(names) -> str:
    """'block4 (3), block5 (3), predictions (1)': layer names summarised by their first token."""
    counts = Counter(name.split("_")[0] for name in names)
    return ", ".join(f"{prefix} ({count})" for prefix, count in counts.items())


def describe_init(value) -> str:
    """How a row's weights start: random, imagenet, a local file, or an earlier run's saved model."""
    if value is None:
        return "random"
    if isinstance(value, dict) and "results" in value:
        return f"saved model of {value['results']} row {value.get('row')}"
    return str(value)


def _init_text(raw, expanded, unset: list[str]) -> str:
    """A weights option in the plan: `${VAR}` shown with the file it names now (or as unset)."""
    if not (isinstance(raw, str) and "$" in raw):
        return describe_init(raw)
    if unset:
        return f"{raw} (unset here: the row is skipped)"
    return f"{raw} = {describe_init(expanded)}"


def builder_defaults(name: str) -> dict:
    """The weights options a registered builder takes, with the value each defaults to."""
    import inspect

    from mammo_keras.models import registry

    try:
        parameters = inspect.signature(registry.entry(name).builder).parameters
    except (KeyError, ValueError):  # not a registered builder (the plan fails on it elsewhere)
        return {}
    return {key: parameters[key].default for key in UNTRAINED_WEIGHTS
            if key in parameters and parameters[key].default is not inspect.Parameter.empty}


def row_init(row: ModelRow, options: dict, unset: list[str]) -> dict:
    """Where a row's weights start: the weights options it sets, or, when it sets none, its builder's
    defaults (a row that passes no `weights` starts where its builder does, often at random)."""
    init = {key: _init_text(row.options[key], options[key], unset) for key in UNTRAINED_WEIGHTS if key in row.options}
    if not init:  # one weights option set is where the row starts (a whole-image row: its patch classifier)
        init = {key: f"{describe_init(default)} (the builder's default)"
                for key, default in builder_defaults(row.name).items()}
    return init


def build_for_plan(row: ModelRow, config: ExperimentConfig, options: dict, cache: dict | None = None):
    """The row's model with the weights it would load left at random (built offline, in seconds).

    A whole-image row is converted from a patch classifier whose layers it copies (the source is
    left unchanged); with `cache`, one random patch classifier per architecture and patch shape
    serves every such row, instead of a new ResNet50 / VGG16 built and dropped per row.
    """
    from mammo_keras import models
    from mammo_keras.models import shen, whole_image

    build_options = {k: (None if k in UNTRAINED_WEIGHTS else v) for k, v in options.items()}
    arch = whole_image.PATCH_ARCH.get(row.name)
    if cache is not None and arch is not None and "patch_model" not in build_options:
        shape = (*tuple(build_options.get("patch_input_shape", shen.PATCH_INPUT_SHAPE))[:2], config.input_channels)
        key = json.dumps(["patch classifier for the plan", arch, list(shape)])
        if key not in cache:
            cache[key] = shen.shen_patch_classifier(arch, shape, weights=None)
        build_options["patch_model"] = cache[key]
    return models.get(row.name, input_shape=(*config.input_hw, config.input_channels), **build_options)


def flat_weighted_layers(model, prefix: str = ""):
    """(name, layer) of every layer with its own weights, nested models' layers as 'model/layer'."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from flat_weighted_layers(layer, f"{prefix}{layer.name}/")
        elif layer.weights:
            yield f"{prefix}{layer.name}", layer


def _schedule(stage) -> dict:
    if stage.schedule == "plateau":
        return {"kind": "plateau", "factor": stage.plateau_factor, "patience": stage.plateau_patience,
                "monitor": stage.monitor, "what": f"learning rate x{stage.plateau_factor} when {stage.monitor} "
                                                  f"has not improved for {stage.plateau_patience} epochs"}
    if stage.schedule == "poly":
        return {"kind": "poly", "power": stage.poly_power, "decay_steps": "epochs x steps_per_epoch",
                "what": f"base x (1 - step / (epochs x steps_per_epoch)) ^ {stage.poly_power}"}
    if stage.schedule == "step":
        return {"kind": "step", "gamma": stage.step_gamma, "step_epochs": stage.step_epochs,
                "what": f"x{stage.step_gamma} every {stage.step_epochs} epochs"}
    return {"kind": "constant"}


def stage_plan(model, stage, *, n_classes_output: int, augment, offline_copies: int, fine_tune: str | None,
               built: dict[str, bool]) -> dict:
    """Apply `stage` to `model` as `fit_stages` does and describe the result."""
    from mammo_keras.training.stages import apply_l2, apply_trainable, make_optimizer, multiplier_of
    from mammo_keras.training.stages import optimizer_settings

    runs = stage.epochs > 0 and not (fine_tune and fine_tune in stage.skip_for)
    plan: dict = {"name": stage.name, "runs": runs}
    if not runs:
        plan["skipped"] = (f"not run for fine_tune={fine_tune!r}" if stage.epochs else "0 epochs")
        return plan
    apply_trainable(model, stage.trainable, built)
    apply_l2(model, stage)
    optimizer = make_optimizer(stage, 1, model)
    base_rate = stage.learning_rate
    layers = []
    groups: dict[tuple, list[str]] = {}
    trainable_ids = {id(w) for w in model.trainable_weights}  # what the optimizer will update
    for name, layer in flat_weighted_layers(model):
        trained = [w for w in layer.weights if id(w) in trainable_ids]
        trainable = bool(trained)
        entry = {"name": name, "kind": _layer_kind(layer), "trainable": trainable, "params": _params(layer)}
        if trainable:
            rates = {w.path.split("/")[-1]: base_rate * multiplier_of(w.path, stage.lr_multipliers)
                     for w in trained}
            entry["lr"] = rates
            groups.setdefault(tuple(sorted(rates.items())), []).append(layer.name)
        regularizer = getattr(layer, "kernel_regularizer", None)
        entry["l2"] = None if regularizer is None else float(getattr(regularizer, "l2", 0.0))
        if entry["kind"] == "batchnorm":
            entry["bn_mode"] = "batch statistics (training)" if trainable else "moving statistics (inference)"
        layers.append(entry)
    trainable_layers = [e for e in layers if e["trainable"]]
    penalties: dict[float, list[str]] = {}
    for entry in layers:
        if entry.get("l2"):
            penalties.setdefault(entry["l2"], []).append(entry["name"])
    batchnorm = [e for e in layers if e["kind"] == "batchnorm"]
    loss = "binary_crossentropy" if n_classes_output == 1 else "categorical_crossentropy"
    plan.update({
        "epochs": stage.epochs, "batch_size": stage.batch_size,
        "steps_per_epoch": f"ceil(n_train x {offline_copies} / {stage.batch_size})" if offline_copies > 1
        else f"ceil(n_train / {stage.batch_size})",
        # The base rate; its schedule is "schedule" (the built one has no steps_per_epoch yet).
        "optimizer": {"name": stage.optimizer, **optimizer_settings(optimizer), "learning_rate": base_rate},
        "schedule": _schedule(stage),
        "lr_multipliers": [list(pair) for pair in stage.lr_multipliers],
        "lr_groups": [{"learning_rate": dict(rates), "layers": _prefixes(names), "n_layers": len(names)}
                      for rates, names in groups.items()],
        "loss": loss,
        "regularisation": [{"type": "l2", "coefficient": value, "kernels": len(names), "layers": _prefixes(names),
                            "penalty": f"{value:g} x sum(kernel ** 2) added to the loss"}
                           for value, names in penalties.items()],
        "trainable": {"selector": stage.trainable, "n_layers": len(trainable_layers),
                      "n_conv": sum(e["kind"] == "conv" for e in trainable_layers),
                      "n_dense": sum(e["kind"] == "dense" for e in trainable_layers),
                      "params": int(sum(math.prod(w.shape) for w in model.trainable_weights)),
                      "frozen_params": int(sum(math.prod(w.shape) for w in model.non_trainable_weights)),
                      "layers": _prefixes(e["name"] for e in trainable_layers)},
        "batchnorm": {"training": sum(e["trainable"] for e in batchnorm),
                      "inference": sum(not e["trainable"] for e in batchnorm),
                      "precise": _precise_bn(model) if stage.precise_bn else None},
        "early_stopping": None if stage.early_stopping_patience is None else {
            "monitor": stage.monitor, "patience": stage.early_stopping_patience, "restore_best_weights": True},
        "class_weight": stage.class_weight,
        "augmentation": None if augment is None else {k: v for k, v in dataclasses.asdict(augment).items()},
        "layers": layers,
    })
    return plan


def _precise_bn(model) -> dict:
    from mammo_keras.training.batchnorm import recalibrated_layers

    layers = [layer.name for layer in recalibrated_layers(model)]
    if not layers:
        return {"layers": 0, "what": "no trainable BatchNorm layers: nothing to set"}
    return {"layers": len(layers), "what": f"after every epoch the statistics of {len(layers)} layers are set "
            "to their inputs' mean and variance over the training items (unaugmented, one pass with batch "
            "statistics as in training, dropout off: PreciseBN), before validation and early stopping"}


def data_plan(config: ExperimentConfig, row: ModelRow, model, dataset: str | None = None) -> dict:
    """The preprocessing chain of `row`, in order, from the file to the model's first layer."""
    from mammo_keras.data.prepare import TASKS
    from mammo_keras.data.recipes import InputRecipe

    task = TASKS.get(config.task)
    chain = task.steps(config.task_options) if task is not None else [{"step": "task", "name": config.task}]
    scale = row.input_scale if row.input_scale is not None else config.input_scale
    factor = InputRecipe.of(config, row).canvas
    if config.item_part is not None:
        chain.append({"step": "item_part", "part": config.item_part})
    chain.append({"step": "resize", "to": list(config.input_hw) if not factor else
                  [round(s * factor) for s in config.input_hw], "what": "prepared items to the profile's size"})
    if scale != 1.0:
        chain.append({"step": "intensity_scale", "factor": scale})
    if config.offline_augment:
        from mammo_keras.data.recipes import OfflineAugment

        spec = OfflineAugment(**config.offline_augment)
        chain.append({"step": "offline_augment", "rotations": spec.rotations,
                      "crops_per_rotation": spec.crops_per_rotation, "copies": spec.copies, "fill": spec.fill,
                      "crop": list(config.input_hw), "fitted_on": "the training part of each fold"})
    if factor:
        chain.append({"step": "eval_crop", "size": list(config.input_hw), "what": "centre crop of the canvas "
                                                                               "(validation, test, predict)"})
    if config.normalisation != "none":
        chain.append({"step": "normalise", "kind": config.normalisation,
                      "fitted_on": "the training part of each fold (after offline augmentation)"})
    chain += _in_model_steps(model)
    augment = None
    if config.augment:
        from mammo_keras.data.pipeline import preset

        augment = {"preset": config.augment, **dataclasses.asdict(preset(config.augment))}
    return {"datasets": [dataset] if dataset else list(config.datasets), "task": config.task,
            "task_options": task.recorded(task.resolve(config.task_options)) if task is not None else {},
            "abnormality": config.abnormality, "label_map": {str(k): v for k, v in config.label_map.items()},
            "max_items": config.max_items, "input": {"hw": list(config.input_hw), "channels": config.input_channels},
            "reader_options": {name: dict(options) for name, options in config.dataset_options.items()},
            "intensity_scale": scale, "normalisation": config.normalisation,
            "offline_augment": dict(config.offline_augment) or None, "online_augment": augment,
            "chain": chain}


CENTRING_STEPS = ("gcn", "normalise")
"""Data steps after which the items are mean-subtracted (the centred ImageNet scaling's precondition):
GCN (each item minus its own mean), and the training part's mean grey value or mean image subtracted
(`normalisation`, the only kinds of that step)."""


def scaling_problem(chain: list[dict]) -> str:
    """Why the chain's backbone scaling does not fit its inputs, or "".

    `ImageNetScaling(centred=True)` leaves out the backbone's mean because the items are already
    mean-subtracted (a `CENTRING_STEPS` step); on uncentred items it would feed the backbone values
    about 100-120 grey levels above the ones its weights were trained on. The uncentred scaling after
    such a step subtracts a mean twice.
    """
    centred = False
    for step in chain:
        if step["step"] in CENTRING_STEPS:
            centred = True
        elif step["step"] == "backbone_scaling":
            if step["centred"] and not centred:
                return (f"its backbone scaling ({step['layer']}: {step['mode']}, centred) expects mean-subtracted "
                        f"items, but no step before it centres them ({', '.join(CENTRING_STEPS)}); give the row "
                        "`options: {input_scaling: imagenet}` (the backbone's full scaling of 0-255 items) or "
                        "centre the items")
            if centred and not step["centred"]:
                return (f"its backbone scaling ({step['layer']}: {step['mode']}) subtracts the ImageNet mean from "
                        f"items already mean-subtracted ({', '.join(CENTRING_STEPS)}); give the row `options: "
                        "{input_scaling: imagenet_centred}`")
    return ""


def _nested_layers(model):
    """The model's layers in call order, with those of a nested model (a siamese encoder) in its place.

    Not `_flatten_layers(recursive=True)`: that walks the tracked attributes, which put a siamese
    ResNet50 encoder's ImageNet scaling before its grey-to-RGB layer.
    """
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _nested_layers(layer)
        else:
            yield layer


def _in_model_steps(model) -> list[dict]:
    """Input steps that are layers of the model (grey to RGB, ImageNet scaling)."""
    from mammo_keras.models.layers import GreyToRGB, ImageNetScaling

    steps = []
    for layer in _nested_layers(model):
        if isinstance(layer, GreyToRGB):
            steps.append({"step": "channels", "what": "grey replicated to 3 channels", "layer": layer.name})
        elif isinstance(layer, ImageNetScaling):
            steps.append({"step": "backbone_scaling", "mode": layer.mode, "centred": layer.centred,
                          "layer": layer.name})
    return steps


def _whole_folds(fractions) -> dict:
    """The whole folds a hold-out split deals (data.splits.folds_per_split), so the plan shows the
    fractions that run, not only those asked for: (0.765, 0.085, 0.15) is 10 / 1 / 2 folds of 13."""
    from mammo_keras.data.splits import MAX_SPLIT_FOLDS, folds_per_split

    k, counts = folds_per_split(list(fractions), MAX_SPLIT_FOLDS)
    return {"k": k, "per_part": counts, "fractions_run": [round(c / k, 4) for c in counts],
            "when": f"with at least {k} patients (fewer: k is capped by the number of patients)"}


def _stratify_key(config: ExperimentConfig) -> str:
    """The column the runner's split of this config stratifies on, read from the module that splits."""
    if config.kind == "detection":
        from mammo_keras.runner.detection import STRATIFY_KEY
    else:
        from mammo_keras.training.cv import STRATIFY_KEY
    return STRATIFY_KEY


def split_plan(config: ExperimentConfig) -> dict:
    split = {"kind": config.kind, "group": GROUP_KEY, "stratify": _stratify_key(config), "seed": config.seed}
    if config.kind == "cv":
        split.update(n_splits=config.n_splits, method="StratifiedGroupKFold",
                     inner_validation={"fraction": config.val_fraction, "group": GROUP_KEY},
                     test="the pooled out-of-fold predictions of every fold")
    elif config.kind in ("holdout", "detection"):
        split.update(fractions=list(config.fractions), method="whole StratifiedGroupKFold folds dealt to "
                                                              "test, val, train",
                     folds=_whole_folds(config.fractions))
        split["test"] = "the held-out test part"
        if config.balance_eval:
            split["balance_eval"] = "patients moved to train until val and test hold both classes equally"
    elif config.kind == "transfer":
        split.update(test_dataset=config.test_dataset, test_abnormality=config.test_abnormality,
                     inner_validation={"fraction": config.val_fraction, "group": GROUP_KEY},
                     test=f"every item of {config.test_dataset}, once")
    if config.split == "official":
        split.update(method="the dataset's own train/test assignment (its reader's `split` column: CBIS-DDSM's "
                            "description CSVs, VinDr-Mammo); a patient on both sides is an error",
                     test="the dataset's official test part",
                     inner_validation={"fraction": config.official_val_fraction, "group": GROUP_KEY,
                                       "drawn_from": "the official training part"})
        for key in ("n_splits", "fractions"):
            split.pop(key, None)
        if config.balance_eval:
            split["balance_eval"] = "patients moved to train until val holds both classes equally (test kept whole)"
    if config.train_fractions:
        split["train_fractions"] = {
            "shares": list(config.train_fractions),
            "per_fold": {f"{100 * share:g}%": train_patients_text(share, config.val_fraction)
                         for share in config.train_fractions},
            "what": "Each fold's training part keeps round(share x P) of its P non-test patients (at least one, "
                    "plus the first holder of a class it would lack), in one seeded stratified order per fold, so "
                    "the shares are nested; validation is drawn from the kept patients; the test folds are the "
                    "same for every share. P is about (n_splits - 1) / n_splits of the dataset's patients; the "
                    "run records each fold's count in learning_curve.csv and table.md"}
    if config.split_from:  # the earlier run's parts are kept: its stratification holds for its patients
        split["stratify_kept"] = (f"patients {config.split_from} saw keep its parts (stratified on its items' "
                                  f"{split['stratify']}); only patients new to it are split here")
    caveats = grouping_caveats(config.datasets)
    if caveats:  # "patient-level" is then only as good as the ids the dataset has
        split["group_caveats"] = caveats
    split["rule"] = config.split
    split["reuses"] = config.split_from or None
    return split


def evaluation_plan(config: ExperimentConfig) -> dict:
    if config.kind == "detection":  # boxes, not item scores: no threshold, TTA or Grad-CAM apply
        return {"metrics": ["ap", "sens_at_0.5fpi", "sens_at_1fpi", "sens_at_2fpi", "sensitivity_all", "mean_iou_tp"],
                "reported_metric": config.reported_metric,
                "matching": "IoU >= 0.5, a detection takes its best still-unmatched lesion",
                "ci": {"method": "percentile bootstrap over the test images", "replicates": config.n_bootstrap,
                       "seed": config.seed}}
    return {"metrics": list(config.metrics), "reported_metric": config.reported_metric,
            "threshold": 0.5, "tta": "mean score over four flips (score_tta; metric a_auc)" if config.flip_tta else None,
            "ci": {"method": "percentile bootstrap of the pooled out-of-fold (or test) predictions",
                   "replicates": config.n_bootstrap, "seed": config.seed},
            "grad_cam": config.grad_cam}


def selection_plan(config: ExperimentConfig) -> dict:
    what = {"last": "the weights after the last epoch (early stopping, where set, restores its best epoch)",
            "best_val_auc": "the epoch with the best validation AUC over all stages",
            "best_val_accuracy": "the epoch with the best validation accuracy over all stages",
            "best_val_loss": "the epoch with the lowest validation loss over all stages"}[config.selection]
    if config.selection_snapshots:
        what += f", among {config.selection_snapshots} evenly spaced snapshots"
    return {"rule": config.selection, "snapshots": config.selection_snapshots, "what": what}


def model_summary(model) -> dict:
    """Layer and parameter counts, output width, dropout rates, the kernels' initialisers and the spread
    of the initial kernels."""
    import keras

    # Kernels of at least 10,000 values: their sample std is within about 0.7% of the initialiser's
    # (one standard error), so a 5% tolerance on the paper's value is not crossed by chance.
    stds = [float(np.std(keras.ops.convert_to_numpy(layer.kernel))) for layer in model.layers
            if getattr(layer, "kernel", None) is not None and math.prod(layer.kernel.shape) >= 10_000]
    return {"layers": len(model.layers), "layers_with_weights": sum(1 for layer in model.layers if layer.weights),
            "params": int(model.count_params()), "inputs": [list(t.shape[1:]) for t in model.inputs],
            "output_units": int(model.outputs[0].shape[-1]),
            "output_activation": _output_activation(model),
            "dropout": {layer.name: float(layer.rate) for layer in model.layers
                        if isinstance(layer, keras.layers.Dropout)},
            "dense_units": [int(layer.units) for layer in model.layers if isinstance(layer, keras.layers.Dense)],
            "head_input": _head_input(model),
            "kernel_init": _kernel_initializers(model),
            "kernel_std_range": [round(min(stds), 5), round(max(stds), 5)] if stds else None}


def _kernel_initializers(model) -> dict[str, int]:
    """{initialiser class: layers} over the layers with a kernel (nested models included), as built:
    the initialisation a paper states (Xavier, Gaussian) is then a plan value, not only a spread."""
    counts: dict[str, int] = {}
    for layer in model._flatten_layers(include_self=False):
        initializer = getattr(layer, "kernel_initializer", None)
        if initializer is not None and getattr(layer, "kernel", None) is not None:
            name = type(initializer).__name__
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _head_input(model) -> str | None:
    """The layer that feeds the first dense layer (Flatten, GlobalAveragePooling2D, ...): how a head
    reads its features, which decides how many activations its first layer sums."""
    import keras

    dense = next((layer for layer in model.layers if isinstance(layer, keras.layers.Dense)), None)
    if dense is None:
        return None
    history = getattr(dense.input, "_keras_history", None)
    return type(history.operation).__name__ if history is not None else None


def _output_activation(model) -> str:
    layer = model.get_layer(model.outputs[0]._keras_history.operation.name)
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", type(layer).__name__.lower())


def _flags(model) -> dict:
    """What stages change on a model: trainable flags (nested layers too) and kernel regularisers."""
    from mammo_keras.training.stages import trainable_flags

    return {"built": trainable_flags(model),
            "regularizers": [(layer, layer.kernel_regularizer) for layer, _ in trainable_flags(model)
                             if getattr(layer, "kernel", None) is not None]}


def _restore(model, flags: dict) -> None:
    model.trainable = True
    for layer, trainable in flags["built"]:
        layer.trainable = trainable
    for layer, regularizer in flags["regularizers"]:
        layer.kernel_regularizer = regularizer
        layer.kernel.regularizer = regularizer


def _retuned(row: ModelRow, config: ExperimentConfig, options: dict, cache: dict):
    """A Chougrad model already built for another fine-tuning depth, set to this row's (or None).

    Depths other than "random" differ only in trainable flags (`chougrad.FAMILIES`), so the plans
    of a figure's rows (0FT ... AllFT of each backbone) share one build, with a fresh build's flags.
    """
    from mammo_keras.models.backbones import set_fine_tuning
    from mammo_keras.models.chougrad import FAMILIES

    fine_tune = options.get("fine_tune", "2FT")
    if row.name not in FAMILIES or fine_tune == "random" or options.get("feature_layer"):
        return None  # a cut backbone (`feature_layer`) has one depth, 0FT: nothing to share
    others = {k: v for k, v in options.items() if k != "fine_tune"}
    family_key = json.dumps(["any depth", row.name, others, list(config.input_hw), config.input_channels],
                            sort_keys=True, default=str)
    if family_key not in cache:
        model = build_for_plan(row, config, options, cache)
        cache[family_key] = (model, _flags(model))
        return model
    model, built = cache[family_key]
    _restore(model, built)  # the builder's state, undoing the stages of the last row planned on it
    return set_fine_tuning(model, fine_tune, FAMILIES[row.name])


def train_patients_text(share: float, val_fraction: float) -> str:
    """A learning-curve share's training patients per fold, in the plan's words."""
    return (f"round({share:g} x P) patients of the fold's P non-test patients"
            + (f", {val_fraction:g} of them for validation" if val_fraction > 0 else ""))


def row_plan(config: ExperimentConfig, row: ModelRow, cache: dict) -> dict:
    """The plan of one result row (a model, or an ensemble of earlier rows)."""
    from mammo_keras.runner.rows import expand_options, row_pretraining, row_stages

    plan = {"label": row.label, "model": row.name, "paper_row": dict(row.paper_row)}
    if row.train_fraction is not None:  # a learning curve's point (`train_fractions`)
        plan["train_fraction"] = row.train_fraction
        plan["train_patients_per_fold"] = train_patients_text(
            row.train_fraction, 0.0 if row.baseline else config.val_fraction)
    if row.ensemble:
        from mammo_keras.training.ensembling import describe

        plan["ensemble"] = describe(row.ensemble)
        plan["what"] = "combines the saved per-part scores of earlier rows; trains nothing of its own"
        return plan
    if row.baseline and config.kind == "detection":
        from mammo_keras.runner.detection import plan_baseline_row

        plan.update(plan_baseline_row(config, row))
        plan["what"] = "the trivial detector: the floor the trained detectors must clear"
        return plan
    if row.baseline:
        plan["baseline"] = {"classifier": row.baseline["classifier"], "options": dict(row.baseline.get("options") or {}),
                            "features": "scikit-image GLCM (levels %d), uniform LBP, intensity statistics, Otsu "
                                        "shape%s" % (int(row.baseline.get("levels", 32)),
                                                     ", lesion box" if row.baseline.get("lesion_boxes") else ""),
                            "parts": "the CNN rows' parts (the config's folds or split); trained on every "
                                     "non-test item of each part, nothing tuned"}
        plan["what"] = "the classical baseline: the floor the CNN rows must clear"
        return plan
    options, unset = expand_options(row.options)
    plan["options"] = json.loads(json.dumps(row.options, default=str))
    plan["init"] = row_init(row, options, unset)
    if unset:
        plan["needs"] = f"environment variables {', '.join(unset)} (a local weights file); skipped without them"
    if row.train_patients is not None:
        plan["train_patients"] = row.train_patients
    if config.kind == "detection":
        from mammo_keras.runner.detection import plan_row

        plan.update(plan_row(config, row if unset else dataclasses.replace(row, options=options)))
        return plan
    key = json.dumps([row.name, options, list(config.input_hw), config.input_channels], sort_keys=True, default=str)
    stages = row_stages(config, row)
    if key not in cache:
        import keras

        keras.utils.set_random_seed(config.seed)  # the same plan, initial kernels included, on every call
        try:
            model = _retuned(row, config, options, cache)
            if model is None:
                model = build_for_plan(row, config, options, cache)
        except ValueError as error:  # e.g. InceptionV3 at under 75 px: refused before any data is read
            raise ValueError(f"{config.source}: row {row.label!r} ({row.name}) cannot be built at the "
                             f"{config.profile} profile with input_size {list(config.input_hw)}: {error}") from None
        cache[key] = (model, _flags(model), model_summary(model))
    model, flags, summary = cache[key]
    _restore(model, flags)  # a model shared by rows starts each row as its builder left it
    offline = 1
    if config.offline_augment:
        from mammo_keras.data.recipes import OfflineAugment

        offline = OfflineAugment(**config.offline_augment).copies
    augment = None
    if config.augment:
        from mammo_keras.data.pipeline import preset

        augment = preset(config.augment)
    plan["model_summary"] = summary
    plan["data"] = data_plan(config, row, model)
    problem = scaling_problem(plan["data"]["chain"])
    if problem:
        raise ValueError(f"{config.source}: row {row.label!r} ({row.name}): {problem}")
    pretraining = row_pretraining(config, row)
    if pretraining is not None:
        from mammo_keras.training import contrastive

        plan["pretraining"] = contrastive.plan(model, pretraining)
    plan["stage_preset"] = row.stages or config.stages
    plan["stages"] = [stage_plan(model, stage, n_classes_output=int(model.outputs[0].shape[-1]), augment=augment,
                                 offline_copies=offline, fine_tune=options.get("fine_tune"), built=flags["built"])
                      for stage in stages]
    plan["total_epochs"] = sum(s.get("epochs", 0) for s in plan["stages"] if s["runs"])
    plan["selection"] = selection_plan(config)
    return plan


def compile_plan(config: ExperimentConfig, cache: dict | None = None) -> dict:
    """The plan of every row of `config` at its profile (see the module docstring).

    `cache` (a dict the caller keeps) shares built models between plans: a model with the same
    builder, options and input shape is built once.
    """
    cache = {} if cache is None else cache
    plan = {"plan_version": PLAN_VERSION, "config": config.name, "profile": config.profile, "title": config.title,
            "kind": config.kind, "source": config.source, "datasets": list(config.datasets),
            "epoch_scale": config.epoch_scale, "deterministic": config.deterministic,
            "split": split_plan(config), "evaluation": evaluation_plan(config),
            "rows": [row_plan(config, row, cache) for row in config.models]}
    from mammo_keras.protocol import declared

    plan["protocol"] = declared(config.paper, plan)
    return plan


def stage(plan_row: dict, name: str) -> dict:
    """The stage called `name` of a row's plan."""
    for entry in plan_row.get("stages", []):
        if entry["name"] == name:
            return entry
    raise KeyError(f"row {plan_row['label']!r} has no stage {name!r}; stages: "
                   f"{[s['name'] for s in plan_row.get('stages', [])]}")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _chain_line(step: dict) -> str:
    rest = {k: v for k, v in step.items() if k != "step"}
    return f"{step['step']}: {_fmt(rest)}"


def render_markdown(plan: dict) -> str:
    """plan.md: the plan for a person to read (plan.json holds every layer)."""
    lines = [f"# Plan: {plan['config']} ({plan['profile']} profile)", "", plan["title"], "",
             f"Config `{plan['source']}`; kind `{plan['kind']}`; datasets {', '.join(plan['datasets'])}; "
             f"epochs x{plan['epoch_scale']:g} of the paper's; TF op determinism "
             f"{'on' if plan.get('deterministic', True) else 'off'}.", "",
             "## Split", "", f"- {_fmt({k: v for k, v in plan['split'].items() if k != 'train_fractions'})}", ""]
    curve = plan["split"].get("train_fractions")
    if curve:
        lines += ["## Learning curve (train_fractions)", "", curve["what"] + ".", "",
                  "| share of training patients | training patients per fold (CNN rows) |", "|---:|---|",
                  *[f"| {share} | {text} |" for share, text in curve["per_fold"].items()], ""]
    lines += ["## Evaluation", "", f"- {_fmt(plan['evaluation'])}", ""]
    chains = {json.dumps(r.get("data", {}).get("chain")) for r in plan["rows"] if "data" in r}
    if len(chains) == 1 and plan["rows"] and "data" in plan["rows"][0]:
        data = plan["rows"][0]["data"]
        lines += ["## Data (every row)", "", f"- task `{data['task']}`, lesions `{data['abnormality']}`, "
                  f"label map {data['label_map'] or 'none'}, input {_fmt(data['input'])}",
                  *[f"  {n}. {_chain_line(s)}" for n, s in enumerate(data["chain"], 1)],
                  f"- online augmentation: {_fmt(data['online_augment']) if data['online_augment'] else 'none'}", ""]
    for row in plan["rows"]:
        lines += [f"## Row `{row['label']}`: {row['model']}", ""]
        if "train_fraction" in row:
            lines.append(f"- learning-curve point: {100 * row['train_fraction']:g}% of each fold's training "
                         f"patients: {row['train_patients_per_fold']}")
        if "ensemble" in row:
            lines += [f"- ensemble {_fmt(row['ensemble'])}: {row['what']}", ""]
            continue
        if "baseline" in row:
            lines += [f"- baseline {_fmt(row['baseline'])}: {row['what']}", ""]
            continue
        if "detection_baseline" in row:
            lines += [f"- detection baseline {_fmt(row['detection_baseline'])}: {row['what']}", ""]
            continue
        if row.get("init"):
            lines.append(f"- initial weights: {_fmt(row['init'])}")
        if row.get("needs"):
            lines.append(f"- needs {row['needs']}")
        if row.get("train_patients"):
            lines.append(f"- trains on {row['train_patients']} training patients")
        if "model_summary" in row:
            lines.append(f"- model: {_fmt(row['model_summary'])}")
        if "data" in row and len(chains) > 1:
            lines += ["- data:", *[f"  {n}. {_chain_line(s)}" for n, s in enumerate(row["data"]["chain"], 1)]]
        if "pretraining" in row:
            pre = row["pretraining"]
            lines += [f"- self-supervised pretraining ({pre['method']}) before the stages: {pre['epochs']} epochs, "
                      f"batch {pre['batch_size']}, {pre['objective']}, optimizer {_fmt(pre['optimizer'])}",
                      f"  - on {pre['unlabelled_items']}",
                      f"  - encoder: the layers up to `{pre['encoder_output']}` ({pre['encoder_layers']} weighted "
                      f"layers, {pre['encoder_params']:,} params); projection: {pre['projection']}",
                      f"  - views: {_fmt(pre['views'])}"]
        if "stage_preset" in row:
            lines.append(f"- stage preset `{row['stage_preset']}` (training.stages.PRESETS)")
        for entry in row.get("stages", []):
            if not entry["runs"]:
                lines.append(f"- stage `{entry['name']}`: {entry['skipped']}")
                continue
            optimizer = {k: v for k, v in entry["optimizer"].items() if k not in ("name",)}
            lines += [f"- stage `{entry['name']}`: {entry['epochs']} epochs, batch {entry['batch_size']}, "
                      f"steps/epoch {entry['steps_per_epoch']}, loss {entry['loss']}",
                      f"  - optimizer {entry['optimizer']['name']}: {_fmt(optimizer)}",
                      f"  - schedule: {entry['schedule'].get('what', entry['schedule']['kind'])}",
                      f"  - trainable ({entry['trainable']['selector']}): {entry['trainable']['n_layers']} layers "
                      f"({entry['trainable']['n_conv']} conv, {entry['trainable']['n_dense']} dense), "
                      f"{entry['trainable']['params']:,} params trainable, {entry['trainable']['frozen_params']:,} "
                      f"frozen: {entry['trainable']['layers']}",
                      *[f"  - learning rate {_fmt(g['learning_rate'])}: {g['n_layers']} layers ({g['layers']})"
                        for g in entry["lr_groups"]],
                      *[f"  - L2 {r['coefficient']:g} on {r['kernels']} kernels ({r['layers']})"
                        for r in entry["regularisation"]],
                      f"  - BatchNorm: {entry['batchnorm']['training']} layers with batch statistics, "
                      f"{entry['batchnorm']['inference']} frozen (moving statistics)"
                      + (f"; precise: {entry['batchnorm']['precise']['what']}"
                         if entry['batchnorm'].get('precise') else ""),
                      f"  - early stopping: {_fmt(entry['early_stopping']) if entry['early_stopping'] else 'none'}; "
                      f"class weights: {entry['class_weight'] or 'none'}; augmentation: "
                      f"{'online (see data)' if entry['augmentation'] else 'none'}"]
        if "selection" in row:
            lines.append(f"- selection: {row['selection']['what']}")
        if "detection" in row:
            lines.append(f"- detection: {_fmt(row['detection'])}")
        lines.append("")
    protocol = plan.get("protocol") or {}
    if protocol.get("deviations"):
        lines += ["## Declared deviations from the paper (protocol.yaml)", "",
                  *[f"- `{d['fact']}`: {d['reason']}" for d in protocol["deviations"]], ""]
    if protocol.get("decisions"):
        lines += ["## Decisions where the paper is silent or ambiguous (protocol.yaml)", "",
                  *[f"- `{d['id']}`: {d['text']}" for d in protocol["decisions"]], ""]
    return "\n".join(lines)


def card_lines(plan: dict, label: str) -> list[str]:
    """The protocol of one row in a few lines, for the model card of a model it saved (`io.save`)."""
    lines = [f"experiment `{plan['config']}` at the `{plan['profile']}` profile (epochs x{plan['epoch_scale']:g} of "
             f"the paper's): {plan['title']}", f"split: {_fmt(plan['split'])}"]
    rows = [row for row in plan.get("rows", []) if row.get("label") == label]
    if not rows:
        return lines + [f"row `{label}` is not in the plan"]
    row = rows[0]
    if "data" in row:
        data = row["data"]
        lines.append(f"data: task `{data['task']}`, lesions `{data['abnormality']}`, input {_fmt(data['input'])}; "
                     f"online augmentation {data['online_augment']['preset'] if data['online_augment'] else 'none'}")
    if row.get("init"):
        lines.append(f"initial weights: {_fmt(row['init'])}")
    if "pretraining" in row:
        pre = row["pretraining"]
        lines.append(f"self-supervised pretraining ({pre['method']}) of the encoder up to `{pre['encoder_output']}`: "
                     f"{pre['epochs']} epochs, batch {pre['batch_size']}, on {pre['unlabelled_items']}")
    for entry in row.get("stages", []):
        if not entry["runs"]:
            lines.append(f"stage `{entry['name']}`: {entry['skipped']}")
            continue
        rate = entry["optimizer"].get("learning_rate")
        lines.append(f"stage `{entry['name']}`: {entry['epochs']} epochs, batch {entry['batch_size']}, "
                     f"{entry['optimizer']['name']}" + (f" at learning rate {_fmt(rate)}" if rate is not None else "")
                     + f", trainable {entry['trainable']['selector']} ({entry['trainable']['n_layers']} layers, "
                       f"{entry['trainable']['params']:,} params)")
    if "selection" in row:
        lines.append(f"selection: {row['selection']['what']}")
    deviations = (plan.get("protocol") or {}).get("deviations") or []
    if deviations:
        lines.append(f"{len(deviations)} declared deviations from the paper's stated protocol (plan.md lists them)")
    return lines


def write_plan(plan: dict, out: str | Path) -> tuple[Path, Path]:
    """plan.json and plan.md in `out` (atomically)."""
    from mammo_keras.fileio import atomic_write_json, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return (atomic_write_json(out / "plan.json", _jsonable(plan)),
            atomic_write_text(out / "plan.md", render_markdown(plan)))


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
