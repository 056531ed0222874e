"""Result plots as PNG files: ROC curves, learning curves, comparison bars, FROC.

Each function draws one figure, writes it atomically (a killed run never leaves a
half-written PNG) and returns what it wrote. Figures are `matplotlib.figure.Figure` objects
drawn without pyplot: neither importing nor calling this module changes pyplot's backend or
its figure list, so a notebook's inline plots keep working beside it (show a written PNG
with `IPython.display.Image(path)`).
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from mammo_keras.evaluation.metrics import auc
from mammo_keras.fileio import atomic_write_bytes


def new_figure(nrows: int = 1, ncols: int = 1, **options):
    """A figure and its axes, as `pyplot.subplots` returns them, outside pyplot's global state.

    `options` go to `Figure` (figsize, dpi, ...) except `sharex`, `sharey`, `squeeze` and
    `gridspec_kw`, which go to `Figure.subplots`.
    """
    from matplotlib.figure import Figure

    layout = {key: options.pop(key) for key in ("sharex", "sharey", "squeeze", "gridspec_kw") if key in options}
    figure = Figure(**options)
    return figure, figure.subplots(nrows, ncols, **layout)


def save_figure(figure, out_png: str | Path, *, dpi: int = 100) -> Path:
    """Render `figure` to PNG bytes and write them atomically (no half-written PNG after a kill)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(out_png, buffer.getvalue())


def _require_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise ValueError(f"{what} needs the columns {list(columns)}. "
                         f"Received: columns={list(table.columns)} (missing {missing})")


def roc_curves(predictions: pd.DataFrame, out_png: str | Path, *, title: str = "",
               reported_auc: float | None = None) -> dict:
    """Per-fold ROC curves (thin) and the pooled out-of-fold ROC curve (thick).

    Args:
        predictions: one row per test item with columns label (0/1), score and fold.
        out_png: where to write the figure.
        title: figure title.
        reported_auc: the paper's AUC, shown in the legend for comparison.

    Returns:
        {"path": Path, "pooled_auc": float, "fold_auc": {fold: float}}.

    Reference: Chougrad et al. 2018, Fig. 8 (ROC on the MIAS independent test).
    """
    _require_columns(predictions, ("label", "score", "fold"), "roc_curves")
    figure, axes = new_figure(figsize=(5, 5))
    fold_auc = {}
    for fold, group in predictions.groupby("fold", sort=True):
        if group["label"].nunique() < 2:
            continue  # ROC is undefined for a one-class fold
        fpr, tpr, _ = skm.roc_curve(group["label"], group["score"])
        fold_auc[fold] = auc(group["label"], group["score"])
        axes.plot(fpr, tpr, linewidth=0.8, alpha=0.6, label=f"fold {fold} (AUC {fold_auc[fold]:.3f})")
    pooled_auc = auc(predictions["label"], predictions["score"])
    fpr, tpr, _ = skm.roc_curve(predictions["label"], predictions["score"])
    axes.plot(fpr, tpr, color="black", linewidth=2.5, label=f"pooled (AUC {pooled_auc:.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
    if reported_auc is not None:
        axes.plot([], [], " ", label=f"paper AUC {reported_auc:.3f}")
    axes.set(xlabel="False positive rate", ylabel="True positive rate", xlim=(0, 1), ylim=(0, 1.01),
             title=title)
    axes.legend(loc="lower right", fontsize=8)
    path = save_figure(figure, out_png)
    return {"path": path, "pooled_auc": pooled_auc, "fold_auc": fold_auc}


def learning_curves(logs: pd.DataFrame, out_png: str | Path, *, title: str = "") -> Path:
    """Loss and accuracy against cumulative epoch, one line per fold, stage boundaries dashed.

    Args:
        logs: the fold logs concatenated, with columns fold, stage, epoch, loss, accuracy
            and, when a validation split was used, val_loss and val_accuracy (epoch counts
            from 0 within each stage). Without validation columns only training curves are drawn.
    """
    _require_columns(logs, ("fold", "stage", "epoch", "loss", "accuracy"), "learning_curves")
    import matplotlib

    figure, (loss_axes, accuracy_axes) = new_figure(1, 2, figsize=(10, 4))
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    boundaries: set[int] = set()
    for number, (fold, group) in enumerate(logs.groupby("fold", sort=True)):
        group = group.reset_index(drop=True)  # rows are in training order
        step = np.arange(1, len(group) + 1)
        stage_change = group["stage"].ne(group["stage"].shift()).to_numpy()
        boundaries.update(int(s) - 1 for s in step[stage_change][1:])
        color = colors[number % len(colors)]
        for axes, key in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
            axes.plot(step, group[key], color=color, label=f"fold {fold} train")
            if f"val_{key}" in group and group[f"val_{key}"].notna().any():
                axes.plot(step, group[f"val_{key}"], color=color, linestyle="--", label=f"fold {fold} val")
    for axes, key in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        for boundary in sorted(boundaries):
            axes.axvline(boundary + 0.5, color="grey", linestyle=":", linewidth=1)
        axes.set(xlabel="epoch (all stages)", ylabel=key)
        axes.legend(fontsize=7)
    figure.suptitle(title)
    return save_figure(figure, out_png)


def comparison_bars(table: pd.DataFrame, out_png: str | Path, *, ylabel: str, title: str = "",
                    reported: Mapping[tuple[str, str], float] | None = None,
                    chance: Mapping[str, float] | None = None, chance_label: str = "chance") -> Path:
    """Grouped bars with 95% CI error bars; the paper's values, when given, as black markers.

    Args:
        table: columns group (e.g. dataset), variant (e.g. 0FT ... AllFT), mean, low, high.
        reported: {(group, variant): value} published by the paper.
        chance: {group: value} what a constant prediction scores (AUC 0.5; accuracy: the majority
            rate), drawn as a dashed grey segment across the group's bars.

    Reference: Chougrad et al. 2018, Fig. 5 (random vs pretrained) and Fig. 6 (fine-tuning depth).
    """
    _require_columns(table, ("group", "variant", "mean", "low", "high"), "comparison_bars")
    groups = list(dict.fromkeys(table["group"]))
    variants = list(dict.fromkeys(table["variant"]))
    width = 0.8 / len(variants)
    figure, axes = new_figure(figsize=(max(5, 1.2 * len(groups) * len(variants) / 2 + 2), 4))
    for number, variant in enumerate(variants):
        rows = table[table["variant"] == variant].set_index("group").reindex(groups)
        x = np.arange(len(groups)) + (number - (len(variants) - 1) / 2) * width
        error = np.vstack([rows["mean"] - rows["low"], rows["high"] - rows["mean"]])
        axes.bar(x, rows["mean"], width, yerr=error, capsize=3, label=str(variant))
        if reported:
            paper = [reported.get((group, variant), np.nan) for group in groups]
            axes.plot(x, paper, linestyle="none", marker="D", color="black", markersize=5,
                      label="paper" if number == 0 else None)
    slots = [(slot, chance[group]) for slot, group in enumerate(groups)
             if chance and chance.get(group) is not None and np.isfinite(chance[group])]
    if slots:
        axes.hlines([value for _, value in slots], [slot - 0.45 for slot, _ in slots], [slot + 0.45 for slot, _ in slots],
                    colors="grey", linestyles="--", linewidth=1, label=chance_label)
    axes.set_xticks(np.arange(len(groups)), [str(group) for group in groups])
    axes.set(ylabel=ylabel, title=title)
    axes.legend(fontsize=8)
    return save_figure(figure, out_png)


def froc_curve(fp_per_image: Sequence[float], sensitivity: Sequence[float], out_png: str | Path, *,
               operating_points: Sequence[float] = (0.5, 1, 2), title: str = "") -> dict:
    """FROC curve (sensitivity vs false positives per image) with its operating points marked.

    Returns:
        {operating point: sensitivity linearly interpolated there}; points outside the
        measured range take the nearest end value (np.interp).
    """
    fp = np.asarray(fp_per_image, dtype=np.float64)
    sens = np.asarray(sensitivity, dtype=np.float64)
    if fp.ndim != 1 or fp.shape != sens.shape or fp.size == 0:
        raise ValueError(f"fp_per_image and sensitivity must be 1-D of the same nonzero length. "
                         f"Received: shapes {fp.shape} and {sens.shape}")
    order = np.argsort(fp, kind="stable")
    fp, sens = fp[order], sens[order]
    sensitivity_at = {float(point): float(np.interp(point, fp, sens)) for point in operating_points}
    figure, axes = new_figure(figsize=(5, 4))
    axes.plot(fp, sens, linewidth=2)
    axes.plot(list(sensitivity_at), list(sensitivity_at.values()), "o", color="black")
    for point, value in sensitivity_at.items():
        axes.annotate(f"{value:.2f}", (point, value), textcoords="offset points", xytext=(4, -12), fontsize=8)
    axes.set(xlabel="False positives per image", ylabel="Sensitivity", ylim=(0, 1.01), title=title)
    save_figure(figure, out_png)
    return sensitivity_at


def loss_curves(log: pd.DataFrame, out_png: str | Path, *, title: str = "") -> Path:
    """Training and validation loss per epoch on a log scale (a detector's summed box + class losses)."""
    figure, axes = new_figure(figsize=(5, 3.5))
    epochs = log["total_epoch"] if "total_epoch" in log else log["epoch"]
    for column in ("loss", "val_loss"):
        if column in log:
            axes.plot(epochs, log[column], marker="o", label=column)
    axes.set(xlabel="epoch", ylabel="loss", yscale="log", title=title)
    axes.legend(fontsize=8)
    return save_figure(figure, out_png)


def froc_figure(fp_per_image, sensitivity, out_png: str | Path, *, title: str, max_fp: float = 8.0) -> dict:
    """The FROC plot up to `max_fp` false positives per image, where CAD operating points lie.

    A weak detector keeps boxes down to confidence 0.01 and reaches tens of FPs per image; drawn to
    the end, the 0.5/1/2 FP/image points would be squeezed against the axis.
    """
    fp_per_image, sensitivity = np.asarray(fp_per_image), np.asarray(sensitivity)
    keep = fp_per_image <= max_fp
    return froc_curve(fp_per_image[keep], sensitivity[keep], out_png,
                      title=f"{title}\nto {max_fp:g} FP/image (all boxes: {fp_per_image[-1]:.1f} FP/image, "
                            f"sensitivity {sensitivity[-1]:.2f})")


def learning_curve_plot(table: pd.DataFrame, out_png: str | Path, *, ylabel: str, title: str = "",
                        chance: float | None = None) -> Path:
    """A learning curve: the pooled metric with its 95% CI against the share of training patients kept.

    Args:
        table: one line per (row, share): columns row (one line per row), fraction (in (0, 1]),
            mean, low, high, and optionally patients (training patients per fold, shown under the
            share's tick for the first row that has them).
        chance: a constant prediction's value (AUC 0.5), drawn dashed grey.

    Reference: issue 14, the learning curve of task (a).
    """
    _require_columns(table, ("row", "fraction", "mean", "low", "high"), "learning_curve_plot")
    rows = list(dict.fromkeys(table["row"]))
    shares = sorted(set(float(f) for f in table["fraction"]))
    span = (max(shares) - min(shares)) or 1.0
    figure, axes = new_figure(figsize=(6.5, 4.2))
    for number, row in enumerate(rows):
        points = table[table["row"] == row].sort_values("fraction")
        x = 100 * (points["fraction"].to_numpy(float) + (number - (len(rows) - 1) / 2) * 0.012 * span)
        error = np.vstack([points["mean"] - points["low"], points["high"] - points["mean"]])
        axes.errorbar(x, points["mean"], yerr=error, marker="o", capsize=3, label=str(row))
    ticks = [f"{100 * share:g}%" for share in shares]
    if "patients" in table:
        counts = table.dropna(subset=["patients"]).drop_duplicates("fraction").set_index("fraction")["patients"]
        ticks = [f"{tick}\n{counts[share]}" if share in counts.index and str(counts[share]) else tick
                 for tick, share in zip(ticks, shares)]
    axes.set_xticks([100 * share for share in shares], ticks, fontsize=8)
    if chance is not None:
        axes.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    import textwrap

    axes.set_xlim(0, 105)
    axes.set(xlabel="share of each fold's training patients kept (mean patients per fold below)", ylabel=ylabel)
    axes.set_title(textwrap.fill(title, 80), fontsize=9)
    axes.legend(fontsize=8)
    return save_figure(figure, out_png)
