"""The classical baseline rows: trained and scored on exactly the CNN rows' patient folds, reported
beside them with the same pooled metrics, CIs and collapse flag, and described in the plan."""
from __future__ import annotations

import dataclasses
import json

import keras
import pandas as pd
import pytest

from mammo_keras.cli import main
from mammo_keras.config import load_config
from mammo_keras.runner import kinds
from mammo_keras.runner.report import ResultRow, write_tables
from mammo_keras.training.stages import Stage


def _tiny_cnn(shape):
    inputs = keras.Input(shape)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inputs))
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="predictions")(x))


@pytest.mark.usefixtures("isolated_cache")
def test_baselines_use_the_cnn_rows_folds_and_are_reported(tmp_path, monkeypatch):
    monkeypatch.delenv("MAMMO_DATA", raising=False)

    def one_epoch(self, job, build, spec, data, test, explain):  # the real cross_validate, a tiny network
        from mammo_keras.training.cv import cross_validate

        config = job.config
        spec = dataclasses.replace(spec, stages=(Stage("fit", 1, optimizer="adam", learning_rate=1e-3),))
        return cross_validate(lambda: _tiny_cnn((*config.input_hw, config.input_channels)), data.images,
                              data.index, spec, job.folder, n_splits=config.n_splits,
                              val_fraction=config.val_fraction, seed=config.seed)

    monkeypatch.setattr(kinds.CrossValidation, "train", one_epoch)
    results = tmp_path / "results"
    assert main(["reproduce", "coccomini2021/table2", "--profile", "tiny", "--results", str(results),
                 "--set", "n_bootstrap=100", "--set", "grad_cam=false",
                 "--set", "baselines=[logistic_regression, random_forest]"]) == 0
    out = results / "coccomini2021" / "table2"
    rows = out / "phantom"
    cnn_folds = pd.read_csv(rows / "scratch_cnn" / "folds.csv")
    for label in ("baseline_lr", "baseline_rf"):
        pd.testing.assert_frame_equal(pd.read_csv(rows / label / "folds.csv"), cnn_folds)
        for fold in sorted(cnn_folds["fold"].unique()):
            cnn = pd.read_csv(rows / "scratch_cnn" / f"fold_{fold}" / "predictions.csv")
            mine = pd.read_csv(rows / label / f"fold_{fold}" / "predictions.csv")
            assert sorted(mine["item_id"]) == sorted(cnn["item_id"])  # the same test items in each part
        assert json.loads((rows / label / "collapse.json").read_text())["collapsed"] is False
    table = pd.read_csv(out / "table.csv").set_index("model")
    assert list(table.index) == ["scratch_cnn", "baseline_lr", "baseline_rf"]
    assert (table["status"] == "ok").all() and table["collapsed"].notna().all()
    # the phantom's lesions differ in brightness: texture and intensity features separate them
    assert table.loc["baseline_lr", "auc_pooled"] > 0.9 and table.loc["baseline_rf", "auc_pooled"] > 0.9
    assert table.loc["baseline_lr", "auc_ci_low"] <= table.loc["baseline_lr", "auc_pooled"]
    plan = (out / "plan.md").read_text()
    assert "## Row `baseline_lr`: baseline" in plan and "logistic_regression" in plan


def test_cpu_and_paper_profiles_add_the_baselines_to_classification_tables_only():
    for profile in ("cpu", "paper"):
        labels = [row.label for row in load_config("chougrad2018/table2", profile).models]
        assert labels[-2:] == ["baseline_lr", "baseline_rf"]
        assert load_config("chougrad2018/table2", profile).models[-1].baseline == {
            "classifier": "random_forest", "lesion_boxes": True}
        assert load_config("shen2017/table1", profile).models[-1].baseline["lesion_boxes"] is False
        # Detection tables get no classifier baseline; their floor is the explicit detector row.
        detection_baselines = [row.baseline for row in load_config("hamed2020/table3", profile).models
                               if row.baseline]
        assert [baseline["detector"] for baseline in detection_baselines] == ["brightest_blobs"]
        assert not any("classifier" in baseline for baseline in detection_baselines)
    assert not any(row.baseline for row in load_config("chougrad2018/table2", "tiny").models)
    with pytest.raises(ValueError, match="`baselines` take the classifiers"):
        load_config("chougrad2018/table2", "tiny", overrides={"baselines": ["svm"]})


def test_a_collapsed_row_is_marked_in_the_table(tmp_path):
    config = load_config("coccomini2021/table2", "tiny")
    metrics = {name: {"fold_mean": 0.5, "fold_std": 0.0, "pooled": 0.5, "ci_low": 0.4, "ci_high": 0.6}
               for name in config.metrics}
    rows = [ResultRow("mias", "scratch_cnn", n_items=10, seconds=60.0, metrics=metrics, collapsed=True,
                      extra={"collapsed_folds": "0 2"}),
            ResultRow("mias", "baseline_lr", n_items=10, seconds=1.0, metrics=metrics, collapsed=False,
                      extra={"collapsed_folds": ""})]
    write_tables(config, rows, tmp_path, [])
    markdown = (tmp_path / "table.md").read_text()
    assert "| ok, **collapsed** (constant scores in parts 0, 2) |" in markdown
    assert markdown.count("**collapsed**") == 1
    table = pd.read_csv(tmp_path / "table.csv")
    assert table["collapsed"].tolist() == [True, False]


@pytest.mark.parametrize("experiment", ["coccomini2021/table2", "shen2017/table1"])  # 2 metrics; accuracy alone
def test_every_line_of_the_results_table_has_the_headers_cells(experiment, tmp_path):
    config = load_config(experiment, "tiny")
    metrics = {name: {"fold_mean": 0.5, "fold_std": 0.0, "pooled": 0.5, "ci_low": 0.4, "ci_high": 0.6}
               for name in config.metrics}
    write_tables(config, [ResultRow("mias", "row", n_items=10, seconds=60.0, metrics=metrics)], tmp_path, [])
    lines = (tmp_path / "table.md").read_text().splitlines()
    start = next(number for number, line in enumerate(lines) if line.startswith("| dataset | model |"))
    # dataset, model, n, paper, fold mean, pooled; the other metrics; epoch, minutes, status
    columns = 6 + (len(config.metrics) - 1) + 3
    assert [line.count("|") for line in lines[start:start + 3]] == [columns + 1] * 3, lines[start:start + 3]
