"""The experiment kinds behind one interface: each prepares a config's datasets and runs one row.

    kind = kind_of(config)                     # CrossValidation, HoldOut, Transfer or Detection
    data = kind.datasets(config, data_dir, out, progress)
    for row in config.models: kind_for_row(kind, row).run(RowRun(...)) -> (predictions, result)

`run` returns the row's predictions table (scores per item, or detections per box) and its
result (metrics with CIs, a `report.ResultRow`'s fields); an `Ensemble` row combines earlier rows'
saved scores instead of training.
"""
from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from mammo_keras.config import ExperimentConfig, ModelRow
from mammo_keras.errors import TrainingDiverged
from mammo_keras.runner import report
from mammo_keras.runner.inputs import MERGED, DatasetInputs, load_inputs, load_unlabelled, merge_inputs, scaled
from mammo_keras.runner.inputs import unlabelled_key
from mammo_keras.runner.rows import train_spec


@dataclasses.dataclass
class RowRun:
    """What one row needs to run on one dataset."""

    config: ExperimentConfig
    row: ModelRow
    dataset: str
    data: object  # DatasetInputs, or DetectionInputs for kind "detection"
    out: Path  # the dataset's folder: out / row.label holds the row
    options: dict  # builder options, $VARs expanded and results references resolved
    progress: Callable[[str], None]
    split_source: pd.DataFrame | None = None
    test_inputs: DatasetInputs | None = None

    @property
    def folder(self) -> Path:
        return self.out / self.row.label

    def say(self, message: str) -> None:
        self.progress(f"  {self.row.label}: {message}")

    def sides(self) -> pd.DataFrame | None:
        """item_id and laterality of every item the row may score (its dataset and the test set), for the
        breast-level AUC of whole-image tables."""
        parts = [inputs.index for inputs in (self.data, self.test_inputs)
                 if isinstance(inputs, DatasetInputs) and inputs.index is not None and "laterality" in inputs.index]
        return pd.concat([part[["item_id", "laterality"]] for part in parts], ignore_index=True) if parts else None


class Classification(abc.ABC):
    """Shared by the classification kinds: datasets read and prepared by `runner.inputs`."""

    name = ""

    def datasets(self, config: ExperimentConfig, data_dir, out: Path, progress) -> dict[str, DatasetInputs]:
        inputs: dict[str, DatasetInputs] = {}
        sources = {unlabelled_key(s): s for s in (row.pretrain.get("unlabelled") for row in config.models) if s}
        for dataset in config.datasets:
            if dataset != MERGED:
                inputs[dataset] = load_inputs(config, dataset, data_dir, out, progress,
                                              options=reader_options(config, dataset))
                if sources and not inputs[dataset].absent:  # load_config allows them for kind cv only
                    inputs[dataset].unlabelled = {
                        key: load_unlabelled(config, dataset, data_dir, out, progress, source,
                                             options=reader_options(config, dataset))
                        for key, source in sources.items()}
        if MERGED in config.datasets:
            inputs[MERGED] = merge_inputs([v for k, v in inputs.items() if k != MERGED])
        return inputs

    def test_inputs(self, config: ExperimentConfig, data_dir, out: Path, progress) -> DatasetInputs | None:
        return None

    def dataset_split(self, config, dataset: str, data, out: Path, results_dir, progress) -> tuple[object, str]:
        """A split the dataset's rows share (hold-out), and why it is missing; (None, "") for none."""
        return None, ""

    def run(self, job: RowRun) -> tuple[pd.DataFrame, dict]:
        from mammo_keras import models
        from mammo_keras.training.distribute import build_model

        config, row = job.config, job.row
        shape = (*config.input_hw, config.input_channels)
        spec = train_spec(config, row, job.options)
        spec = dataclasses.replace(spec, model_info={**spec.model_info, "card": card_facts(job)})
        recipe_scale = spec.model_info["preprocessing"]["input_scale"]

        def build():  # under the --strategy / --precision of an enclosing training_scope, if any
            return build_model(lambda: models.get(row.name, input_shape=shape, **job.options))

        started = time.perf_counter()
        data = scaled(job.data, recipe_scale)
        test = scaled(job.test_inputs, recipe_scale) if job.test_inputs is not None else None
        explain = report.grad_cam_writer(job.say) if config.grad_cam else None
        try:
            predictions = self.train(job, build, spec, data, test, explain)
        except TrainingDiverged as error:  # the protocol as configured gives no model: say so, go on
            job.say(f"diverged: {error}")
            return pd.DataFrame(), {"status": f"diverged: {error}"}
        # Training time from each fold's record, so a resumed run reports what the work cost.
        seconds = report.recorded_seconds(job.folder) or time.perf_counter() - started
        return predictions, report.summarise(config, predictions, job.folder, f"{row.label} on {data.name}", seconds,
                                             index=job.sides())

    @abc.abstractmethod
    def train(self, job: RowRun, build, spec, data, test, explain) -> pd.DataFrame:
        """Train and score the row's model(s) on `data` (scaled for the row); the predictions table."""


class CrossValidation(Classification):
    """Patient-level stratified K-fold: every item scored once, out of fold (Chougrad, Coccomini). With
    `split: official` one part instead: the dataset's own test part, shared by the rows like a hold-out."""

    name = "cv"

    def dataset_split(self, config, dataset, data, out, results_dir, progress):
        if config.split != "official" or data.absent:
            return None, ""
        return table_split(config, dataset, data, out, results_dir, progress)

    def train(self, job, build, spec, data, test, explain):
        from mammo_keras.training.cv import cross_validate, holdout

        config = job.config
        if config.split == "official":
            return holdout(build, data.images, data.index, spec, job.folder, seed=config.seed,
                           split_source=job.split_source, progress=job.say, explain=explain)
        source = job.row.pretrain.get("unlabelled")
        if source and unlabelled_key(source) not in data.unlabelled:
            raise ValueError(f"{config.source}: row {job.row.label!r} pretrains on `{source['task']}` items, which "
                             f"the {data.name} dataset does not provide (a merged dataset has none of its own)")
        extra = data.unlabelled[unlabelled_key(source)] if source else None
        return cross_validate(build, data.images, data.index, spec, job.folder, n_splits=config.n_splits,
                              val_fraction=config.val_fraction, train_fraction=job.row.train_fraction,
                              seed=config.seed, progress=job.say, explain=explain,
                              unlabelled=(extra.images, extra.index) if extra is not None else None)


class HoldOut(Classification):
    """One patient-level train/val/test split shared by the table's rows (Shen, Jain & Levy); a chained
    table keeps the earlier run's split (`split_from`)."""

    name = "holdout"

    def dataset_split(self, config, dataset, data, out, results_dir, progress):
        if data.absent:
            return None, ""
        return table_split(config, dataset, data, out, results_dir, progress)

    def train(self, job, build, spec, data, test, explain):
        from mammo_keras.training.cv import holdout

        config = job.config
        return holdout(build, data.images, data.index, spec, job.folder, fractions=config.fractions, seed=config.seed,
                       train_patients=job.row.train_patients, split_source=job.split_source, progress=job.say,
                       explain=explain)


class Transfer(Classification):
    """Train on each dataset, test once on another (Chougrad's independent MIAS test); the model is saved."""

    name = "transfer"

    def test_inputs(self, config, data_dir, out, progress):
        return load_inputs(config, config.test_dataset, data_dir, out, progress, options=config.test_dataset_options,
                           tag="_test" if config.test_dataset_options else "", abnormality=config.test_abnormality)

    def train(self, job, build, spec, data, test, explain):
        from mammo_keras.training.cv import transfer

        config = job.config
        return transfer(build, data.images, data.index, test.images, test.index, spec, job.folder,
                        val_fraction=config.val_fraction, seed=config.seed, progress=job.say, explain=explain)


class Ensemble:
    """A row that combines the saved scores of earlier rows on the same dataset (training.ensembling)."""

    name = "ensemble"

    def run(self, job: RowRun) -> tuple[pd.DataFrame, dict]:
        from mammo_keras.training.ensembling import combine

        spec = job.row.ensemble
        members = {label: job.out / label for label in spec["members"]}
        job.progress(f"{job.dataset} / {job.row.label}: {spec['method']} of {', '.join(spec['members'])}")
        predictions = combine(members, spec["method"], job.folder, column=spec.get("column", "score"),
                              grid=tuple(spec.get("grid") or ()), hidden=tuple(spec.get("hidden", (16,))),
                              seed=job.config.seed)
        seconds = sum(report.recorded_seconds(folder) for folder in members.values())
        return predictions, report.summarise(job.config, predictions, job.folder,
                                             f"{job.row.label} on {job.out.name}", seconds, index=job.sides())


class Detection:
    """Whole-image mass detection (Hamed 2020 Table 3): detections per box, AP and FROC per row."""

    name = "detection"

    def datasets(self, config, data_dir, out, progress):
        from mammo_keras.runner.detection import load_split

        return {dataset: load_split(config, dataset, data_dir, out, progress) for dataset in config.datasets}

    def test_inputs(self, config, data_dir, out, progress):
        return None

    def dataset_split(self, config, dataset, data, out, results_dir, progress):
        return None, ""

    def run(self, job: RowRun) -> tuple[pd.DataFrame, dict]:
        from mammo_keras.runner.detection import run_baseline_row, run_row

        if job.row.baseline:  # the table's trivial detector: nothing to train, nothing optional to import
            detections, summary = run_baseline_row(job.config, job.row, job.data.split, job.folder, job.progress)
            job.say(f"AP {summary['metrics']['ap']:.3f}, sensitivity at 1 FP/image "
                    f"{summary['metrics']['sens_at_1fpi']:.3f}")
            return detections, report.detection_result(summary)
        try:
            # job.options has the row's $VARs expanded (a local weights file): build from those.
            row = dataclasses.replace(job.row, options=job.options)
            detections, summary = run_row(job.config, row, job.data.split, job.folder, job.progress)
        except ImportError as error:  # an optional library (keras-cv for YOLOv8) is missing
            job.say(f"not run: {error}")
            return pd.DataFrame(), {"status": f"not run: {str(error).split('. ')[0]}"}
        except TrainingDiverged as error:  # as for classification rows: say so, go on with the next row
            job.say(f"diverged: {error}")
            return pd.DataFrame(), {"status": f"diverged: {error}"}
        job.say(f"AP {summary['metrics']['ap']:.3f}, sensitivity at 1 FP/image {summary['metrics']['sens_at_1fpi']:.3f}")
        return detections, report.detection_result(summary)


class Baseline:
    """The classical floor beside the CNN rows (evaluation.baseline): scikit-image features of the same
    items, a scikit-learn classifier trained and scored on exactly the parts the CNN rows use (the
    config's patient folds, its shared hold-out split, or train-on-one / test-on-another)."""

    name = "baseline"

    def run(self, job: RowRun) -> tuple[pd.DataFrame, dict]:
        import numpy as np

        from mammo_keras.evaluation.baseline import baseline_features, fit_predict
        from mammo_keras.training.cv import assign_folds, holdout_split

        config, spec, data = job.config, job.row.baseline, job.data
        started = time.perf_counter()
        index, images = data.index, data.images  # lazy rows: the features read them a chunk at a time
        if config.kind == "cv" and config.split != "official":  # the folds cross_validate draws for every row
            folds = assign_folds(index, config.n_splits, config.seed, job.folder / "folds.csv")
            items = index.assign(fold=folds["fold"].to_numpy())
        elif config.kind in ("holdout", "cv"):  # the table's shared split (official: the dataset's own test part)
            split, _ = holdout_split(index, fractions=config.fractions, seed=config.seed, source=job.split_source,
                                     balance_eval=config.balance_eval, official_val=config.official_val_fraction,
                                     origin=job.dataset)
            items = index.assign(split=split["split"].to_numpy())
        elif config.kind == "transfer":
            test = job.test_inputs
            images = np.concatenate([np.asarray(images, np.float32), np.asarray(test.images, np.float32)])  # ROI sets
            items = pd.concat([index.assign(split="train"), test.index.assign(split="test")], ignore_index=True)
        else:
            raise ValueError(f"a baseline row runs in classification kinds (cv, holdout, transfer). "
                             f"Received: kind={config.kind!r}")
        features, _ = baseline_features(images, items, levels=int(spec.get("levels", 32)),
                                        lesion_boxes=bool(spec.get("lesion_boxes", False)))
        feature_seconds = time.perf_counter() - started  # computed again on every run (seconds)
        predictions = fit_predict(spec["classifier"], features, items, seed=config.seed, out=job.folder,
                                  options=spec.get("options"), train_fraction=job.row.train_fraction,
                                  progress=job.say)
        seconds = feature_seconds + report.recorded_seconds(job.folder)  # + each part's recorded fit
        return predictions, report.summarise(config, predictions, job.folder, f"{job.row.label} on {data.name}",
                                             seconds, index=job.sides())


KINDS = {kind.name: kind for kind in (CrossValidation(), HoldOut(), Transfer(), Detection())}


def card_facts(job: RowRun) -> dict:
    """What the runner knows for the model card of a model this row saves (`io.save(card=...)`): the data
    with fingerprints and licences, the row's protocol lines from the results folder's plan.json, the
    part (its text takes {fold}), the command and profile; training adds the part's metrics."""
    import json

    from mammo_keras import data as readers
    from mammo_keras.plan import card_lines

    config, data = job.config, job.data
    parts = [name for name in config.datasets if name != MERGED] if data.name == MERGED else [data.name]
    entries = [{"name": data.name if data.name != MERGED else f"merged ({' + '.join(parts)})", "role": "training",
                "fingerprint": data.fingerprint, "synthetic": data.synthetic,
                "licence": "; ".join(f"{name}: {readers.licence(name)}" if len(parts) > 1 else readers.licence(name)
                                     for name in parts)}]
    if job.test_inputs is not None:
        entries.append({"name": job.test_inputs.name, "role": "test", "fingerprint": job.test_inputs.fingerprint,
                        "synthetic": job.test_inputs.synthetic, "licence": readers.licence(job.test_inputs.name)})
    plan_path = job.out.parent / "plan.json"
    protocol = (card_lines(json.loads(plan_path.read_text()), job.row.label) if plan_path.is_file()
                else [f"no plan.json in {job.out.parent} (the model was trained outside `mammo-keras reproduce`)"])
    if config.kind == "transfer":
        what = f"trained on {data.name}, tested once on {config.test_dataset}"
    elif config.split == "official":
        what = "the dataset's official train/test split"
    elif config.kind == "cv":
        what = f"fold {{fold}} of the patient-level {config.n_splits}-fold cross-validation"
    else:
        what = f"the patient-level hold-out split (train/val/test {'/'.join(f'{f:g}' for f in config.fractions)})"
    return {"title": f"{config.name}, row {job.row.label} on {data.name}", "data": entries, "protocol": protocol,
            "part_what": what, "command": report.command_line(config), "profile": config.profile}


def reader_options(config: ExperimentConfig, dataset: str) -> dict | None:
    """The config's reader options for a training dataset (`dataset_options`, keyed by any of its names)."""
    from mammo_keras import data

    name = data.canonical_name(dataset)
    chosen = [options for key, options in config.dataset_options.items() if data.canonical_name(key) == name]
    return dict(chosen[0]) if chosen else None


def kind_of(config: ExperimentConfig):
    """The protocol object of a config's `kind`."""
    if config.kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}. Received: kind={config.kind!r}")
    return KINDS[config.kind]


def kind_for_row(kind, row: ModelRow):
    """The row's own kind: an ensemble of earlier rows, the classical baseline, or the config's."""
    if row.ensemble:
        return Ensemble()
    if row.baseline and "detector" not in row.baseline:  # a detector baseline runs in the Detection kind
        return Baseline()
    return kind


def table_split(config: ExperimentConfig, dataset: str, data: DatasetInputs, out: Path,
                results_dir, progress) -> tuple[pd.DataFrame | None, str]:
    """The hold-out patient split every row of this table shares on `dataset`, saved as split.csv.

    With `split: official` it is the dataset's own train/test assignment (validation drawn from its
    training patients); a patient on both sides raises `LeakageError` naming the patients.

    With `split_from`, the earlier run's split of the same dataset is kept (chained tables: a
    whole-image test patient may not sit in the part the patch classifier trained on). Returns
    (patient_id, split) or None with the reason when the earlier run has not been made.

    A saved split.csv that the new draw contradicts (a patient in another part) is not overwritten
    while rows made with it are kept beside it (`lineage.check_split_kept` raises, naming them).
    """
    from mammo_keras.data.splits import load_assignments, save_assignments
    from mammo_keras.runner.lineage import check_split_kept
    from mammo_keras.training.cv import holdout_split

    source = None
    if config.split_from:
        path = Path(results_dir) / config.split_from / dataset / "split.csv"
        if not path.is_file():
            return None, (f"the patient split of {config.split_from} is needed ({path}): run `mammo-keras "
                          f"reproduce {config.split_from}` first (same profile and data)")
        source = load_assignments(path)
    split, new = holdout_split(data.index, fractions=config.fractions, seed=config.seed, source=source,
                               balance_eval=config.balance_eval, official_val=config.official_val_fraction,
                               origin=dataset)
    check_split_kept(out / dataset / "split.csv", split)  # finished rows were made with the saved one
    save_assignments(split, out / dataset / "split.csv")
    if source is not None:
        progress(f"{dataset}: patient split kept from {config.split_from} ({new} patients new to it)")
    elif config.split == "official":
        counts = split.groupby("split")["patient_id"].nunique().to_dict()
        progress(f"{dataset}: the dataset's official train/test split, validation from its training patients "
                 f"(patients: {counts})")
    return split[["patient_id", "split"]], ""
