"""What a run reports: per-row metrics with CIs (ResultRow), table.md / table.csv, plots and run.json.

    results/<paper>/<table>/
        plan.json, plan.md    the protocol every row runs (mammo_keras.plan), written first
        table.md, table.csv   the paper's numbers and ours side by side, with 95% bootstrap CIs
        run.json              profile, resolved config, seeds, git commit, data fingerprints, times
        config.yaml           the resolved config
        comparison.png        every finished row's pooled metric with its CI
        learning_curve.csv, learning_curve.png   with `train_fractions`: each row's pooled metrics with
                              CIs per share of training patients (`<row>@<percent>%`), and the curve
        <dataset>/<row>/      the row's parts (folds), logs, predictions, ROC and learning curves
"""
from __future__ import annotations

import dataclasses
import json
import platform
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mammo_keras import __version__
from mammo_keras.config import ExperimentConfig
from mammo_keras.evaluation.collapse import collapse_summary
from mammo_keras.evaluation.metrics import bootstrap_ci, fold_summary
from mammo_keras.fileio import atomic_write_json, atomic_write_text
from mammo_keras.runner.paper import deviation_lines, reported_table
from mammo_keras.vocabulary import BREAST_METRIC, WHOLE_IMAGE_TASKS

NAN = float("nan")


@dataclasses.dataclass
class ResultRow:
    """One line of a results table: a row of the config on one dataset."""

    dataset: str
    model: str
    status: str = "ok"
    paper: float | None = None
    paper_std: float | None = None
    weights: str = ""
    n_items: int | None = None
    seconds: float | None = None
    epochs: str = ""  # the epoch each part scored
    collapsed: bool | None = None  # some part's scores (near) constant (evaluation.collapse); None: not scored
    metrics: dict = dataclasses.field(default_factory=dict)  # name -> {fold_mean, fold_std, pooled, ci_low, ci_high}
    extra: dict = dataclasses.field(default_factory=dict)  # kind-specific columns (detection counts, paper text)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def pooled(self, metric: str) -> float:
        return self.metrics.get(metric, {}).get("pooled", NAN)

    def flat(self) -> dict:
        """The table.csv / run.json columns: metric fields flattened as `<metric>_<field>`."""
        extra = dict(self.extra)
        paper = extra.pop("paper_text", self.paper)  # a survey's rows: the printed text, not a number
        row = {"dataset": self.dataset, "model": self.model, "status": self.status, "paper": paper,
               "paper_std": self.paper_std, "weights": self.weights, **extra}
        if self.n_items is not None:
            row.update(n_items=self.n_items, seconds=self.seconds, epochs=self.epochs)
        if self.collapsed is not None:
            row["collapsed"] = self.collapsed
        for metric, fields in self.metrics.items():
            if "fold_mean" in fields:  # classification: fold mean and sd, pooled, CI
                row.update({f"{metric}_{key}": value for key, value in fields.items()})
            else:  # one test set (detection): the value and its CI
                row.update({metric: fields["pooled"], f"{metric}_ci_low": fields["ci_low"],
                            f"{metric}_ci_high": fields["ci_high"]})
        return row


def git_commit() -> str:
    """The repository's HEAD commit (with '+dirty' for local changes), or 'unknown'."""
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def recorded_seconds(out: Path) -> float:
    """Training seconds recorded in the metrics.json of every part (fold) under `out`; 0 if none."""
    return sum(json.loads(path.read_text()).get("seconds", 0.0) for path in out.glob("*/metrics.json"))


def curve_point(row, folder: Path) -> dict:
    """The learning-curve columns of a row run on a share of its training patients (`train_fraction`):
    the share, the row it is a point of, and each fold's training patients (validation included) as
    the folds' metrics.json recorded them; {} for an ordinary row."""
    if row.train_fraction is None:
        return {}
    records = sorted((json.loads(path.read_text()) for path in folder.glob("fold_*/metrics.json")),
                     key=lambda record: int(record.get("fold", 0)))
    patients = [int(r.get("n_train_patients", 0)) + int(r.get("n_val_patients", 0)) for r in records
                if "n_train_patients" in r]
    return {"curve_row": row.label.rpartition("@")[0], "train_fraction": row.train_fraction,
            "train_patients": " ".join(map(str, patients))}


def learning_curve_table(config: ExperimentConfig, rows: list[ResultRow]) -> pd.DataFrame:
    """learning_curve.csv: one line per (dataset, row, share) with every metric pooled [95% CI]."""
    lines = []
    for row in rows:
        if "train_fraction" not in row.extra:
            continue
        patients = [int(n) for n in str(row.extra.get("train_patients", "")).split()]
        line = {"dataset": row.dataset, "row": row.extra["curve_row"], "train_fraction": row.extra["train_fraction"],
                "label": row.model, "status": row.status, "n_items": row.n_items,
                "train_patients_per_fold": row.extra.get("train_patients", ""),
                "train_patients_mean": float(np.mean(patients)) if patients else NAN}
        for metric in config.metrics:
            fields = row.metrics.get(metric, {})
            line.update({f"{metric}_{key}": fields.get(key, NAN) for key in ("pooled", "ci_low", "ci_high")})
        lines.append(line)
    return pd.DataFrame(lines)


def learning_curve_outputs(config: ExperimentConfig, rows: list[ResultRow], out: Path) -> Path | None:
    """learning_curve.csv and learning_curve.png (the reported metric, pooled with its 95% CI, against the
    share of training patients; one line per row) of a run with `train_fractions`; None without them."""
    from mammo_keras.evaluation.plots import learning_curve_plot

    if not config.train_fractions:
        return None
    table = learning_curve_table(config, rows)
    atomic_write_text(out / "learning_curve.csv", table.to_csv(index=False))
    metric = config.reported_metric
    done = table[(table["status"] == "ok") & np.isfinite(table[f"{metric}_pooled"].astype(float))] \
        if len(table) else table
    if not len(done):
        return None
    several = done["dataset"].nunique() > 1
    shown = pd.DataFrame({"row": [f"{d} / {r}" if several else r for d, r in zip(done["dataset"], done["row"])],
                          "fraction": done["train_fraction"], "mean": done[f"{metric}_pooled"],
                          "low": done[f"{metric}_ci_low"], "high": done[f"{metric}_ci_high"],
                          "patients": [f"{m:.0f} patients" if np.isfinite(m) else ""
                                       for m in done["train_patients_mean"]]})
    return learning_curve_plot(shown, out / "learning_curve.png", ylabel=f"{metric} (pooled, 95% CI)",
                               title=profile_title(config),
                               chance=0.5 if metric in ("auc", "a_auc", BREAST_METRIC) else None)


def _learning_curve_lines(config: ExperimentConfig, rows: list[ResultRow]) -> list[str]:
    """table.md's learning-curve section: per row and share, the training patients of each fold and the
    reported metric pooled [95% CI]."""
    table = learning_curve_table(config, rows)
    if not len(table):
        return []
    metric = config.reported_metric
    lines = [f"## Learning curve (learning_curve.png, learning_curve.csv)", "",
             "Each fold's training part keeps the share of its patients (seeded per fold, nested: a smaller share's "
             "patients are among a larger one's; stratified by the labels a patient holds); validation is drawn from "
             "the kept patients, the test folds are the same for every share.", "",
             f"| dataset | row | share of training patients | training patients per fold (incl. validation) | "
             f"{metric} pooled [95% CI] |", "|---|---|---:|---|---:|"]
    for _, line in table.iterrows():
        value = line[f"{metric}_pooled"]
        cell = (f"{format_metric(metric, value)} [{format_metric(metric, line[f'{metric}_ci_low'])}, "
                f"{format_metric(metric, line[f'{metric}_ci_high'])}]") if np.isfinite(value) else line["status"]
        lines.append(f"| {line['dataset']} | {line['row']} | {100 * line['train_fraction']:g}% | "
                     f"{line['train_patients_per_fold'] or '-'} | {cell} |")
    return lines + [""]


def selected_epochs(out: Path) -> list[int]:
    """The epoch whose weights each part (fold) scored, from its metrics.json (Shen's "#Epochs")."""
    epochs = []
    for path in sorted(out.glob("*/metrics.json")):
        value = json.loads(path.read_text()).get("selected_epoch")
        if value is not None:
            epochs.append(int(value))
    return epochs


def summarise(config: ExperimentConfig, predictions: pd.DataFrame, out: Path, title: str,
              seconds: float, *, index: pd.DataFrame | None = None) -> dict:
    """Per-fold metrics, their mean and sd, pooled estimates with bootstrap CIs, and the plots.

    A whole-image table (task in WHOLE_IMAGE_TASKS) also gets the breast-level AUC (`auc_breast`):
    image scores averaged per patient and side, as `mammo-keras score` does, with a patient-bootstrap
    CI; the side of each item comes from the predictions or from `index` (item_id, laterality).
    """
    from mammo_keras.training.cv import metric_inputs

    per_fold: list[dict] = [{} for _ in predictions.groupby("fold")]
    metrics = {}
    for metric in config.metrics:
        inputs = metric_inputs(predictions, metric)
        if inputs is None:
            metrics[metric] = {"fold_mean": NAN, "fold_std": NAN, "pooled": NAN, "ci_low": NAN, "ci_high": NAN}
            continue
        labels, scores, function = inputs
        for values, (_, group) in zip(per_fold, predictions.groupby("fold")):
            with np.errstate(all="ignore"):
                values[metric] = function(labels[group.index], scores[group.index])
        estimate, low, high = bootstrap_ci(labels, scores, function, n_replicates=config.n_bootstrap,
                                           seed=config.seed)
        summary = fold_summary([{metric: v[metric]} for v in per_fold])[metric]
        metrics[metric] = {"fold_mean": summary[0], "fold_std": summary[1], "pooled": estimate,
                           "ci_low": low, "ci_high": high}
    if config.task in WHOLE_IMAGE_TASKS:
        breast = breast_metric(config, predictions, index)
        if breast is not None:
            metrics[BREAST_METRIC] = breast
    plots(predictions, out, title)
    collapse = collapse_summary(predictions)
    atomic_write_json(out / "collapse.json", collapse)
    return {"n_items": int(len(predictions)), "seconds": round(seconds, 1), "metrics": metrics,
            "epochs": " ".join(str(e) for e in selected_epochs(out)), "folds": per_fold,
            "collapsed": collapse["collapsed"],
            "extra": {"collapsed_folds": " ".join(map(str, collapse["collapsed_folds"])),
                      "majority_rate": majority_rate(predictions)}}


def majority_rate(predictions: pd.DataFrame) -> float | None:
    """The share of the most frequent label: the accuracy of a constant prediction (the chance line)."""
    if "label" not in predictions or not len(predictions):
        return None
    return round(float(predictions["label"].value_counts(normalize=True).max()), 6)


def breast_metric(config: ExperimentConfig, predictions: pd.DataFrame, index: pd.DataFrame | None) -> dict | None:
    """The breast-level AUC of a whole-image row (fold mean and sd, pooled with its CI), or None without sides."""
    from mammo_keras.evaluation.scoring import breast_auroc

    if "laterality" not in predictions and index is not None and "laterality" in index:
        sides = index.assign(item_id=index["item_id"].astype(str)).drop_duplicates("item_id") \
            .set_index("item_id")["laterality"]
        predictions = predictions.assign(laterality=predictions["item_id"].astype(str).map(sides).fillna("").to_numpy())
    result = breast_auroc(predictions, n_replicates=config.n_bootstrap, seed=config.seed)
    if result is None:
        return None
    return {key: result[key] for key in ("fold_mean", "fold_std", "pooled", "ci_low", "ci_high")}


def detection_result(summary: dict) -> dict:
    """A detector's metrics.json summary as a row's result (AP and FROC points with their CIs)."""
    from mammo_keras.runner.detection import METRIC_COLUMNS

    metrics = {key: {"pooled": summary["metrics"][key], "ci_low": summary["ci"][key][0],
                     "ci_high": summary["ci"][key][1]} for key in METRIC_COLUMNS}
    return {"n_items": summary["n_test_images"], "seconds": summary["seconds"], "metrics": metrics,
            "epochs": str(summary["best_epoch"] or ""),
            "extra": {"n_test_images": summary["n_test_images"], "n_test_lesions": summary["n_test_lesions"],
                      "minutes": round(summary["seconds"] / 60, 2)}}


def grad_cam_writer(report: Callable[[str], None]):
    """An explainer writing grad_cam.png (the most malignant-looking test items of each class) per fold."""
    from mammo_keras.evaluation.saliency import grad_cam_sheet
    from mammo_keras.models.inputs import as_model_input

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


def plots(predictions: pd.DataFrame, out: Path, title: str) -> None:
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
    return f"{value:.3f}" if metric in ("auc", "a_auc", BREAST_METRIC) else f"{100 * value:.1f}"


def command_line(config: ExperimentConfig) -> str:
    """The command that reproduces the run, every --set included, quoted for a POSIX shell so that it can
    be pasted as it is (`--set 'rows=["vgg16", "resnet50"]'`); a string that YAML would read as another
    type (`"null"`, `"3"`) keeps its quotes."""
    def value_text(value) -> str:
        plain = isinstance(value, str) and yaml.safe_load(value) == value
        return value if plain else json.dumps(value)

    sets = "".join(f" --set {shlex.quote(f'{key}={value_text(value)}')}" for key, value in config.overrides.items())
    return f"mammo-keras reproduce {shlex.quote(config.name)} --profile {config.profile}{sets}"


def profile_title(config: ExperimentConfig) -> str:
    """The config's title, with what a non-paper profile changed said beside it.

    A title states the paper's protocol ("5-fold CV", "2FT fine-tuning"); a tiny or cpu run says in
    brackets what it ran instead: its split, input size, epoch scale, and the rows whose initial
    weights differ from the paper profile's (e.g. random init where the paper loads ImageNet).
    """
    if config.profile == "paper":
        return config.title + (" [official train/test split]" if config.split == "official" else "")
    paper = _paper_profile(config)
    split = _split_text(config)
    if paper is not None and _split_text(paper) != split:
        same_kind = paper.kind == config.kind and paper.split == config.split  # the number that differs alone
        theirs = (str(paper.n_splits) if paper.kind == "cv" else "/".join(str(f) for f in paper.fractions)) \
            if same_kind else _split_text(paper)
        split += f" (paper profile: {theirs})"
    size = "x".join(str(s) for s in config.input_hw)
    if paper is not None and paper.input_hw != config.input_hw:
        size += f" px (paper profile: {'x'.join(str(s) for s in paper.input_hw)})"
    else:
        size += " px"
    parts = [split, size, f"epochs x{config.epoch_scale:g}"]
    if paper is not None:
        theirs = {row.label: row.options.get("weights", "as built") for row in paper.models}
        changed: dict[tuple[str, str], list[str]] = {}  # (our weights, the paper profile's) -> row labels
        for row in config.models:
            ours = row.options.get("weights", "as built")
            if row.label in theirs and ours != theirs[row.label]:
                changed.setdefault((str(ours), str(theirs[row.label])), []).append(row.label)
        for (ours, published), labels in sorted(changed.items()):
            ours = "random init" if ours == "None" else f"weights {ours}"
            parts.append(f"{ours} for {', '.join(labels)} (paper profile: {published})")
    return f"{config.title} [{config.profile} profile: {', '.join(parts)}]"


def _split_text(config: ExperimentConfig) -> str:
    """How a config splits its patients, in a title's words."""
    if config.split == "official":
        return "official train/test split"
    if config.kind == "cv":
        return f"{config.n_splits}-fold CV"
    if config.kind in ("holdout", "detection"):
        return f"{'/'.join(str(f) for f in config.fractions)} split"
    return config.kind


def _paper_profile(config: ExperimentConfig) -> ExperimentConfig | None:
    """The same config at the paper profile (what the title describes), or None when it cannot be loaded."""
    from mammo_keras.config import load_config

    try:
        return load_config(config.name, "paper")
    except Exception:  # a config file outside experiments/, or one without a paper profile
        return None


def header_lines(config: ExperimentConfig, *, commit: str, started: float, synthetic: bool) -> list[str]:
    lines = [f"Profile `{config.profile}`; command: `{command_line(config)}`.",
             "The protocol every row ran is plan.md beside this table (per stage: trainable layers, learning "
             f"rates, epochs); CIs: {config.n_bootstrap} bootstrap replicates of the pooled "
             f"{'out-of-fold' if config.kind == 'cv' and config.split != 'official' else 'test'} predictions; "
             f"seed {config.seed}." + (" Test part: the dataset's official train/test split; validation drawn "
                                       "from its training patients." if config.split == "official" else ""),
             f"Git commit {commit}; wall time of this invocation {(time.perf_counter() - started) / 60:.1f} "
             "min (parts finished earlier are reused; `minutes` per row is their recorded training time)."]
    if synthetic:
        lines.insert(0, "**SYNTHETIC DATA**: these rows ran on the embedded phantom dataset, not on "
                        "mammograms; they show the pipeline works, not the paper's accuracy. Point the "
                        "command at real data with `--data DIR` (or MAMMO_DATA) and `--profile cpu|paper`.")
    from mammo_keras.vocabulary import grouping_caveats

    # "patient-level" is only as good as the ids the dataset has
    lines += [f"Patient-level on {dataset}: {caveat}." for dataset, caveat in grouping_caveats(config.datasets).items()]
    if config.note:
        lines.append(config.note)
    return lines


def write_tables(config: ExperimentConfig, rows: list[ResultRow], out: Path, header: list[str],
                 plan: dict | None = None) -> None:
    """table.csv (one line per row) and table.md (paper vs ours, with CIs; under it the deviations
    of `plan`'s protocol, or without a plan every deviation the paper declares)."""
    atomic_write_text(out / "table.csv", pd.DataFrame([row.flat() for row in rows]).to_csv(index=False))
    body = _detection_lines(rows) if config.kind == "detection" else _classification_lines(config, rows)
    lines = [f"# {profile_title(config)}", "", *header, "", *body, "", *_learning_curve_lines(config, rows),
             *deviation_lines(config.paper, plan)]
    table = reported_table(config)
    if table.get("rows"):
        columns = [c for c in dict.fromkeys(k for r in table["rows"] for k in r) if c != "reproduced_by"]
        units = ", ".join(f"{k} in {v}" for k, v in (table.get("units") or {}).items())
        lines += [f"The paper's {config.reported_table} as published ({table.get('source', '')}; {units}):", "",
                  "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in table["rows"]]
        lines.append("")
    atomic_write_text(out / "table.md", "\n".join(lines))


def _classification_lines(config: ExperimentConfig, rows: list[ResultRow]) -> list[str]:
    metric = config.reported_metric
    others = [m for m in config.metrics if m != metric]
    if config.task in WHOLE_IMAGE_TASKS or any(BREAST_METRIC in row.metrics for row in rows):
        others.append(BREAST_METRIC)
    unit = lambda m: "" if m in ("auc", "a_auc", BREAST_METRIC) else " (%)"  # noqa: E731
    heading = lambda m: "breast-level auc" if m == BREAST_METRIC else m  # noqa: E731
    lines = ["`epoch`: the epoch whose weights each part scored (selection rule in plan.md); "
             "`minutes`: recorded training time."
             + (" `breast-level auc`: image scores averaged per breast (patient and side), as `mammo-keras "
                "score` does; its CI resamples patients; '-' where the sides are unknown."
                if BREAST_METRIC in others else ""), "",
             f"| dataset | model | n | paper {metric}{unit(metric)} | ours {metric}{unit(metric)} (fold mean ± sd) | "
             f"ours {metric}{unit(metric)} pooled [95% CI] |"
             + "".join(f" ours {heading(m)}{unit(m)} pooled [95% CI] |" for m in others) + " epoch | minutes | status |",
             "|---|---|---:|---:|---:|---:|" + "---:|" * len(others) + "---:|---:|---|"]

    def pooled(name: str, row: ResultRow) -> str:
        fields = row.metrics.get(name, {})
        if not np.isfinite(fields.get("pooled", NAN)):
            return "-"
        return (f"{format_metric(name, fields['pooled'])} [{format_metric(name, fields['ci_low'])}, "
                f"{format_metric(name, fields['ci_high'])}]")

    for row in rows:
        paper = format_metric(metric, row.paper)
        if row.paper_std is not None:
            paper += f" ± {format_metric(metric, row.paper_std)}"
        if row.ok:
            fields = row.metrics[metric]
            ours = f"{format_metric(metric, fields['fold_mean'])} ± {format_metric(metric, fields['fold_std'])}"
            first, rest, minutes = pooled(metric, row), [pooled(m, row) for m in others], f"{row.seconds / 60:.1f}"
        else:
            ours = first = minutes = "-"
            rest = ["-"] * len(others)
        status = row.status
        if row.collapsed:
            parts = str(row.extra.get("collapsed_folds", "")).split()
            status += f", **collapsed** (constant scores in part{'s' if len(parts) != 1 else ''} {', '.join(parts)})"
        lines.append(f"| {row.dataset} | {row.model} | {row.n_items if row.n_items is not None else '-'} | {paper} | "
                     f"{ours} | {first} |" + "".join(f" {cell} |" for cell in rest)
                     + f" {row.epochs or '-'} | {minutes} | {status} |")
    return lines


def _fmt(value, ci=None) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    text = f"{value:.3f}"
    if ci and all(v is not None and np.isfinite(v) for v in ci):
        text += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
    return text


def _detection_lines(rows: list[ResultRow]) -> list[str]:
    lines = ["TP: IoU >= 0.5 with a ground-truth mass box; AP = mAP (one class); sensitivity at 0.5/1/2 false "
             "positives per image read off the FROC; 95% CIs from bootstrap resamples of test images.", "",
             "| dataset | model | status | AP@0.5 | sens@0.5 FP/img | sens@1 FP/img | sens@2 FP/img | "
             "mean IoU of TPs | test images (masses) | minutes | paper (as printed; other data and metric) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = [row.dataset, row.model, row.status]
        for key in ("ap", "sens_at_0.5fpi", "sens_at_1fpi", "sens_at_2fpi"):
            fields = row.metrics.get(key)
            cells.append(_fmt(fields["pooled"], (fields["ci_low"], fields["ci_high"])) if fields else "-")
        cells.append(_fmt(row.metrics.get("mean_iou_tp", {}).get("pooled")))
        cells.append(f"{row.extra['n_test_images']} ({row.extra['n_test_lesions']})" if "n_test_images" in row.extra
                     else "-")
        cells.append(f"{row.extra['minutes']:.1f}" if "minutes" in row.extra else "-")
        cells.append(row.extra.get("paper_text") or "-")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def comparison_plot(config: ExperimentConfig, rows: list[ResultRow], out: Path) -> Path | None:
    """comparison.png: every finished row's pooled metric with its 95% CI, the paper's as markers.

    With one row per model and dataset this is Chougrad's Fig. 5 (random vs pretrained) or Fig. 6
    (fine-tuning depth) when the config lists those variants as models.
    """
    from mammo_keras.evaluation.plots import comparison_bars

    if config.kind == "detection":
        return None
    metric = config.reported_metric
    done = [row for row in rows if row.ok]
    if len(done) < 2:
        return None
    table = pd.DataFrame({"group": [row.dataset for row in done], "variant": [row.model for row in done],
                          "mean": [row.pooled(metric) for row in done],
                          "low": [row.metrics[metric]["ci_low"] for row in done],
                          "high": [row.metrics[metric]["ci_high"] for row in done]})
    reported = {(row.dataset, row.model): row.paper for row in done if row.paper is not None}
    chance, chance_label = None, "chance"
    if metric in ("auc", "a_auc", BREAST_METRIC):
        chance, chance_label = {row.dataset: 0.5 for row in done}, "chance (AUC 0.5)"
    elif metric == "accuracy":  # a constant prediction of the most frequent class
        chance = {row.dataset: row.extra["majority_rate"] for row in done if row.extra.get("majority_rate") is not None}
        chance_label = "chance (majority rate)"
    return comparison_bars(table, out / "comparison.png", ylabel=f"{metric} (pooled, 95% CI)",
                           title=profile_title(config), reported=reported or None, chance=chance or None,
                           chance_label=chance_label)


def versions() -> dict:
    import keras
    import tensorflow as tf

    def installed(module: str) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(module)
        except PackageNotFoundError:
            return "not installed"

    return {"mammo_keras": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "keras_hub": installed("keras-hub"), "keras_cv": installed("keras-cv"), "numpy": installed("numpy"),
            "python": platform.python_version()}


def machine() -> dict:
    """The machine a run ran on: float rounding (and so a trained network) can differ between CPUs."""
    import os

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count()}


def write_run(config: ExperimentConfig, rows: list[ResultRow], out: Path, *, commit: str, started: float,
              fingerprints: dict, synthetic: bool, plan: dict | None = None) -> None:
    """table.md, table.csv, comparison.png, config.yaml and run.json of a finished run (and the learning
    curve's csv and png with `train_fractions`)."""
    write_tables(config, rows, out, header_lines(config, commit=commit, started=started, synthetic=synthetic), plan)
    comparison_plot(config, rows, out)
    learning_curve_outputs(config, rows, out)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    atomic_write_json(out / "run.json", {
        "config": config.to_dict(), "profile": config.profile, "seed": config.seed, "command": command_line(config),
        "deterministic": config.deterministic, "prepare_workers": config.prepare_worker_count,
        "git_commit": commit, "data_fingerprints": fingerprints,
        "wall_seconds": round(time.perf_counter() - started, 1), "synthetic": synthetic, "versions": versions(),
        "machine": machine(),
        "rows": [row.flat() for row in rows]})
