"""Plots: each writes one readable PNG atomically and returns the numbers it drew."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer
from PIL import Image

from mammo_keras.evaluation import metrics, plots


def _read_png(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def _only(folder, name) -> None:
    """The folder holds the PNG and no leftover temporary file."""
    assert sorted(p.name for p in folder.iterdir()) == [name]


@pytest.fixture
def predictions() -> pd.DataFrame:
    # fold 0: scores rank 3 of 4 (positive, negative) pairs right; fold 1: all 4 right.
    return pd.DataFrame({"fold": [0, 0, 0, 0, 1, 1, 1, 1],
                         "label": [0, 0, 1, 1, 0, 0, 1, 1],
                         "score": [0.1, 0.6, 0.4, 0.9, 0.2, 0.3, 0.7, 0.8]})


def test_roc_curves_pooled_and_fold_auc(tmp_path, predictions):
    result = plots.roc_curves(predictions, tmp_path / "roc.png", title="test", reported_auc=0.9)
    assert result["path"] == tmp_path / "roc.png"
    width, height = _read_png(result["path"])
    assert width > 0 and height > 0
    _only(tmp_path, "roc.png")
    assert result["pooled_auc"] == metrics.auc(predictions["label"], predictions["score"])
    # pooled: 16 pairs, wrong ones (0.6 > 0.4) only -> 15/16
    assert result["pooled_auc"] == 15 / 16
    assert result["fold_auc"] == {0: 0.75, 1: 1.0}


def test_roc_curves_needs_fold_label_score(tmp_path, predictions):
    with pytest.raises(ValueError, match=r"missing \['fold'\]"):
        plots.roc_curves(predictions.drop(columns="fold"), tmp_path / "roc.png")


def test_learning_curves_writes_png(tmp_path):
    rows = []
    for fold in (0, 1):
        for stage, epochs in (("head", 3), ("fine_tune", 2)):
            for epoch in range(epochs):
                rows.append({"fold": fold, "stage": stage, "epoch": epoch, "loss": 1.0 / (epoch + 1),
                             "val_loss": 1.2 / (epoch + 1), "accuracy": 0.5 + 0.1 * epoch,
                             "val_accuracy": 0.45 + 0.1 * epoch})
    path = plots.learning_curves(pd.DataFrame(rows), tmp_path / "curves.png", title="two stages")
    assert path == tmp_path / "curves.png"
    width, height = _read_png(path)
    assert width > height > 0  # two panels side by side
    _only(tmp_path, "curves.png")


def test_learning_curves_without_validation_columns_draws_training_only(tmp_path):
    logs = pd.DataFrame({"fold": [0, 0, 0], "stage": ["head"] * 3, "epoch": [0, 1, 2],
                         "loss": [1.0, 0.8, 0.6], "accuracy": [0.5, 0.6, 0.7]})
    path = plots.learning_curves(logs, tmp_path / "curves.png")
    assert _read_png(path)[0] > 0
    with pytest.raises(ValueError, match=r"missing \['loss'\]"):
        plots.learning_curves(logs.drop(columns="loss"), tmp_path / "bad.png")


@pytest.fixture
def drawn_figures(monkeypatch) -> list:
    """The figures the plotting functions save, kept for inspection (save_figure closes them)."""
    figures = []
    save = plots.save_figure

    def keep(figure, out_png):
        figures.append(figure)
        return save(figure, out_png)

    monkeypatch.setattr(plots, "save_figure", keep)
    return figures


def _comparison_drawn(axes) -> tuple[dict, dict]:
    """What comparison_bars drew: {(group, variant): (bar height, CI low, CI high)} of the visible
    bars and {(group, variant): value} of the paper's markers (black diamonds over the bars)."""
    ticks = dict(zip(axes.get_xticks(), (label.get_text() for label in axes.get_xticklabels())))

    def group_at(x):
        tick = min(ticks, key=lambda t: abs(t - x))
        assert abs(tick - x) < 0.4, x  # a bar lies in its group's slot
        return ticks[tick]

    bars, slots = {}, {}
    for container in axes.containers:
        if not isinstance(container, BarContainer):
            continue
        whiskers = {round(float(segment[0][0]), 6): (segment[0][1], segment[1][1])
                    for segment in container.errorbar.lines[2][0].get_segments() if len(segment)}
        for patch in container.patches:
            x = round(patch.get_x() + patch.get_width() / 2, 6)
            slots[x] = (group_at(x), container.get_label())
            if np.isfinite(patch.get_height()):
                bars[slots[x]] = (patch.get_height(), *whiskers[x])
    markers = {}
    for line in axes.lines:
        if line.get_marker() == "D":
            assert line.get_color() == "black" and line.get_linestyle() == "None"
            markers.update({slots[round(float(x), 6)]: y for x, y in zip(line.get_xdata(), line.get_ydata())
                            if np.isfinite(y)})
    return bars, markers


def test_comparison_bars_draw_the_table_and_the_papers_markers(tmp_path, drawn_figures):
    table = pd.DataFrame({"group": ["DDSM", "DDSM", "DDSM", "BCDR", "BCDR"],  # no BCDR "random" result
                          "variant": ["random", "pretrained", "2FT", "pretrained", "2FT"],
                          "mean": [0.80, 0.95, 0.90, 0.96, 0.91], "low": [0.75, 0.93, 0.85, 0.94, 0.88],
                          "high": [0.85, 0.97, 0.94, 0.98, 0.93]})
    reported = {("DDSM", "pretrained"): 0.972, ("BCDR", "pretrained"): 0.964, ("BCDR", "2FT"): 0.9}
    path = plots.comparison_bars(table, tmp_path / "bars.png", ylabel="accuracy", title="Fig. 5", reported=reported)
    assert _read_png(path)[0] > 0
    _only(tmp_path, "bars.png")
    (figure,) = drawn_figures
    (axes,) = figure.axes
    bars, markers = _comparison_drawn(axes)
    assert bars == {(r.group, r.variant): pytest.approx((r.mean, r.low, r.high)) for r in table.itertuples()}
    assert ("BCDR", "random") not in bars  # a missing result draws no bar
    assert markers == pytest.approx(reported)
    assert [label.get_text() for label in axes.get_xticklabels()] == ["DDSM", "BCDR"]
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["paper", "random", "pretrained", "2FT"]
    assert (axes.get_title(), axes.get_ylabel()) == ("Fig. 5", "accuracy")
    # Within a group the variants stand side by side in the table's order.
    for container, following in zip(axes.containers[1::2], axes.containers[3::2]):
        assert all(a.get_x() < b.get_x() for a, b in zip(container.patches, following.patches))


def test_comparison_bars_without_reported_values_draw_no_markers(tmp_path, drawn_figures):
    table = pd.DataFrame({"group": ["MIAS", "MIAS"], "variant": ["a", "b"], "mean": [0.6, 0.7],
                          "low": [0.5, 0.6], "high": [0.7, 0.8]})
    plots.comparison_bars(table, tmp_path / "bars.png", ylabel="auc")
    bars, markers = _comparison_drawn(drawn_figures[0].axes[0])
    assert bars == {("MIAS", "a"): pytest.approx((0.6, 0.5, 0.7)), ("MIAS", "b"): pytest.approx((0.7, 0.6, 0.8))}
    assert markers == {}
    assert [text.get_text() for text in drawn_figures[0].axes[0].get_legend().get_texts()] == ["a", "b"]


def test_comparison_plot_draws_finished_rows_only(tmp_path, drawn_figures):
    """The runner's comparison.png: finished rows' pooled metric and CI, the paper's value as a
    marker; a diverged or skipped row is left out."""
    from mammo_keras.config import load_config
    from mammo_keras.runner.report import ResultRow, comparison_plot

    config = load_config("chougrad2018/fig5", "paper")
    metric = config.reported_metric

    def row(dataset, model, pooled, paper=None, status="ok"):
        metrics = {} if pooled is None else {metric: {"pooled": pooled, "ci_low": pooled - 0.05,
                                                      "ci_high": pooled + 0.03}}
        return ResultRow(dataset, model, status=status, paper=paper, metrics=metrics)

    rows = [row("ddsm", "vgg16_random", 0.81), row("ddsm", "vgg16_pretrained", 0.93, paper=0.9712),
            # A diverged row may hold the metrics of its parts before the loss diverged: not drawn.
            row("bcdr", "vgg16_random", 0.5, paper=0.9650, status="diverged: loss nan at stage s, epoch 2"),
            row("bcdr", "vgg16_pretrained", 0.9, paper=0.965),
            row("inbreast", "vgg16_pretrained", None, paper=0.95, status="skipped: no data")]
    assert comparison_plot(config, rows, tmp_path) == tmp_path / "comparison.png"
    assert _read_png(tmp_path / "comparison.png")[0] > 0
    axes = drawn_figures[0].axes[0]
    bars, markers = _comparison_drawn(axes)
    assert bars == {("ddsm", "vgg16_random"): pytest.approx((0.81, 0.76, 0.84)),
                    ("ddsm", "vgg16_pretrained"): pytest.approx((0.93, 0.88, 0.96)),
                    ("bcdr", "vgg16_pretrained"): pytest.approx((0.90, 0.85, 0.93))}
    assert markers == pytest.approx({("ddsm", "vgg16_pretrained"): 0.9712, ("bcdr", "vgg16_pretrained"): 0.965})
    assert [label.get_text() for label in axes.get_xticklabels()] == ["ddsm", "bcdr"]  # inbreast has no result
    assert axes.get_ylabel() == f"{metric} (pooled, 95% CI)" and axes.get_title() == config.title
    # Fewer than two finished rows: nothing to compare, no file.
    assert comparison_plot(config, rows[2:4], tmp_path / "one") is None
    assert not (tmp_path / "one").exists()


def test_froc_interpolates_operating_points(tmp_path):
    # Given out of order on purpose: the function sorts by false positives per image.
    fp = [2.0, 0.0, 1.0, 4.0]
    sensitivity = [0.8, 0.2, 0.6, 1.0]
    at = plots.froc_curve(fp, sensitivity, tmp_path / "froc.png", operating_points=(0.5, 1, 3, 5))
    assert at == {0.5: 0.4, 1.0: 0.6, 3.0: 0.9, 5.0: 1.0}  # 5 lies past the end: last value
    width, height = _read_png(tmp_path / "froc.png")
    assert width > 0 and height > 0
    _only(tmp_path, "froc.png")


def test_froc_rejects_mismatched_lengths(tmp_path):
    with pytest.raises(ValueError, match="same nonzero length"):
        plots.froc_curve([0.0, 1.0], [0.5], tmp_path / "froc.png")


def test_comparison_bars_draw_the_chance_level_of_each_group(tmp_path, drawn_figures):
    """comparison.png says what a constant prediction scores (before: no chance line at all)."""
    table = pd.DataFrame({"group": ["MIAS", "MIAS", "BCDR"], "variant": ["a", "b", "a"], "mean": [0.6, 0.7, 0.8],
                          "low": [0.5, 0.6, 0.7], "high": [0.7, 0.8, 0.9]})
    plots.comparison_bars(table, tmp_path / "bars.png", ylabel="accuracy", chance={"MIAS": 0.571, "BCDR": 0.64},
                          chance_label="chance (majority rate)")
    axes = drawn_figures[0].axes[0]
    (segments,) = [c for c in axes.collections if c.get_label() == "chance (majority rate)"]
    drawn = sorted((round(float(s[0][0]), 2), round(float(s[1][0]), 2), float(s[0][1])) for s in segments.get_segments())
    assert drawn == [(-0.45, 0.45, pytest.approx(0.571)), (0.55, 1.45, pytest.approx(0.64))]  # over each group's slot
    assert "chance (majority rate)" in [t.get_text() for t in axes.get_legend().get_texts()]
    assert _comparison_drawn(axes)[0][("MIAS", "a")] == pytest.approx((0.6, 0.5, 0.7))  # the bars as before


@pytest.mark.parametrize("metric", ["auc", "accuracy"])
def test_comparison_plot_chance_is_auc_half_or_the_majority_rate(metric, tmp_path, drawn_figures):
    from mammo_keras.config import load_config
    from mammo_keras.runner.report import ResultRow, comparison_plot, majority_rate

    config = load_config("chougrad2018/mias_cv", "cpu", overrides={"reported_metric": metric})
    rate = majority_rate(pd.DataFrame({"label": [0, 0, 0, 1]}))
    assert rate == 0.75 and majority_rate(pd.DataFrame({"score": [0.1]})) is None
    rows = [ResultRow("mias", name, metrics={metric: {"pooled": 0.6, "ci_low": 0.5, "ci_high": 0.7}},
                      extra={"majority_rate": rate}) for name in ("a", "b")]
    comparison_plot(config, rows, tmp_path)
    axes = drawn_figures[0].axes[0]
    (segments,) = [c for c in axes.collections if str(c.get_label()).startswith("chance")]
    assert {float(s[0][1]) for s in segments.get_segments()} == {0.5 if metric == "auc" else 0.75}


def test_plotting_leaves_pyplot_alone(tmp_path):
    """A notebook's inline backend and open figures survive the package's plots (no `matplotlib.use`)."""
    import matplotlib
    import matplotlib.pyplot as plt
    import pandas as pd

    from mammo_keras.data.contact_sheet import contact_sheet
    from mammo_keras.evaluation import plots

    original = matplotlib.get_backend()
    matplotlib.use("svg")  # stands for a notebook's inline backend: anything but Agg
    try:
        open_figure = plt.figure()
        predictions = pd.DataFrame({"label": [0, 1, 0, 1], "score": [0.1, 0.8, 0.4, 0.6], "fold": [0, 0, 1, 1]})
        plots.roc_curves(predictions, tmp_path / "roc.png")
        index = pd.DataFrame({"item_id": ["a", "b"], "label": [0, 1], "class_name": ["benign", "malignant"]})
        contact_sheet(np.random.default_rng(0).random((2, 8, 8)), index, tmp_path / "sheet.png")
        assert matplotlib.get_backend() == "svg" and plt.get_fignums() == [open_figure.number]
    finally:
        plt.close("all")
        matplotlib.use(original)
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_contact_sheet_draws_every_item_kind_in_rows_per_class(tmp_path):
    """Grey (H, W), (H, W, 1), RGB and paired (2, H, W) items each make a sheet; a class's rows grow
    with its items (up to `per_class`), so a sheet of more items is taller."""
    import pandas as pd
    from PIL import Image

    from mammo_keras.data.contact_sheet import contact_sheet

    rng = np.random.default_rng(0)
    index = pd.DataFrame({"item_id": [f"i{k}" for k in range(8)], "label": [0] * 5 + [1] * 3})
    index["class_name"] = index["label"].map({0: "benign", 1: "malignant"})
    heights = {}
    for kind, items in {"grey": rng.random((8, 20, 20)), "channel": rng.random((8, 20, 20, 1)),
                        "rgb": rng.random((8, 20, 20, 3)), "pair": rng.random((8, 2, 20, 20))}.items():
        path = contact_sheet(items, index, tmp_path / f"{kind}.png", title=kind, columns=2)
        with Image.open(path) as sheet:
            heights[kind] = sheet.size[1]
            assert sheet.size[0] == round(2 * 1.8 * 110)
    assert len(set(heights.values())) == 1  # 3 + 2 rows of 2 columns, whatever the item's layout
    few = contact_sheet(rng.random((8, 20, 20)), index, tmp_path / "few.png", per_class=2, columns=2)
    with Image.open(few) as sheet:
        assert sheet.size[1] < heights["grey"]  # 1 + 1 rows


def test_learning_curve_plot_writes_a_png_and_names_missing_columns(tmp_path):
    from mammo_keras.evaluation.plots import learning_curve_plot

    table = pd.DataFrame({"row": ["cnn", "cnn", "lr", "lr"], "fraction": [0.5, 1.0, 0.5, 1.0],
                          "mean": [0.6, 0.7, 0.65, 0.68], "low": [0.55, 0.66, 0.6, 0.64], "high": [0.65, 0.74, 0.7, 0.72],
                          "patients": ["32 patients", "64 patients", "32 patients", "64 patients"]})
    path = learning_curve_plot(table, tmp_path / "learning_curve.png", ylabel="auc", title="t", chance=0.5)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"learning_curve_plot needs the columns .*missing \['fraction'\]"):
        learning_curve_plot(table.drop(columns="fraction"), tmp_path / "x.png", ylabel="auc")
