"""Two run settings as config keys: `deterministic` (TF op determinism, to the TrainSpec, run.json and the
plan) and `prepare_workers` (the runner's prepare processes, recorded in run.json; the same items)."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from mammo_keras.cli import main
from mammo_keras.config import PREPARE_WORKERS_MAX, load_config
from mammo_keras.plan import compile_plan, render_markdown
from mammo_keras.runner import inputs as runner_inputs
from mammo_keras.runner import report
from mammo_keras.runner.rows import train_spec


def test_deterministic_goes_to_the_train_spec_and_the_plan():
    config = load_config("chougrad2018/table2", "tiny")
    assert config.deterministic is True and train_spec(config, config.models[0], {}).deterministic is True
    off = load_config("chougrad2018/table2", "tiny", overrides={"deterministic": False, "rows": [config.models[0].label]})
    assert train_spec(off, off.models[0], {}).deterministic is False
    plan = compile_plan(off)
    assert plan["deterministic"] is False
    assert "TF op determinism off." in render_markdown(plan)
    assert "TF op determinism on." in render_markdown({**plan, "deterministic": True})
    with pytest.raises(ValueError, match="deterministic"):
        load_config("chougrad2018/table2", "tiny", overrides={"deterministic": "yes"})


def test_help_config_documents_both_keys(capsys):
    assert main(["reproduce", "--help-config"]) == 0
    text = capsys.readouterr().out
    assert "deterministic" in text and "TF op determinism" in text
    assert "prepare_workers" in text and "one per CPU core, at most 8" in text


def test_run_json_records_determinism_and_the_prepare_workers(tmp_path):
    config = load_config("chougrad2018/table2", "tiny", overrides={"deterministic": False, "prepare_workers": 3})
    report.write_run(config, [], tmp_path, commit="abc", started=time.perf_counter(), fingerprints={}, synthetic=True)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["deterministic"] is False and run["prepare_workers"] == 3
    default = load_config("chougrad2018/table2", "tiny")
    assert default.prepare_worker_count == min(os.cpu_count() or 1, PREPARE_WORKERS_MAX)
    with pytest.raises(ValueError, match="Received: prepare_workers=-1"):
        load_config("chougrad2018/table2", "tiny", overrides={"prepare_workers": -1})


@pytest.mark.usefixtures("isolated_cache")
def test_the_runner_prepares_with_the_configured_workers_and_the_same_items(tmp_path, monkeypatch):
    monkeypatch.delenv("MAMMO_DATA", raising=False)
    seen = []
    real = runner_inputs.prepare
    monkeypatch.setattr(runner_inputs, "prepare", lambda *a, **k: seen.append(k["workers"]) or real(*a, **k))
    loaded = {}
    for workers in (1, 2):
        config = load_config("chougrad2018/table2", "tiny", overrides={"prepare_workers": workers})
        loaded[workers] = runner_inputs.load_inputs(config, "phantom", None, tmp_path / f"w{workers}", lambda _: None)
    assert seen == [1, 2]
    assert loaded[1].fingerprint == loaded[2].fingerprint
    np.testing.assert_array_equal(np.asarray(loaded[1].images), np.asarray(loaded[2].images))
    prepared = json.loads(next((tmp_path / "w2" / "prepared").glob("*/prepare.json")).read_text())
    assert prepared["workers"] == 2


def test_precise_bn_overrides_every_stage_of_every_row_and_only_where_set():
    """mias_cv sets it at the cpu profile only (its folds train 6 steps an epoch); the paper profile
    keeps the presets' own flag, and `--set precise_bn=...` takes a boolean or null."""
    from mammo_keras.runner.rows import row_stages

    cpu, paper = (load_config("chougrad2018/mias_cv", profile) for profile in ("cpu", "paper"))
    assert cpu.precise_bn is True and paper.precise_bn is None
    for row in cpu.models:
        assert all(stage.precise_bn for stage in row_stages(cpu, row)), row.label
        assert not any(stage.precise_bn for stage in row_stages(paper, row)), row.label
    off = load_config("chougrad2018/mias_cv", "cpu", overrides={"precise_bn": False})
    assert not any(stage.precise_bn for row in off.models for stage in row_stages(off, row))
    with pytest.raises(ValueError, match="precise_bn"):
        load_config("chougrad2018/mias_cv", "cpu", overrides={"precise_bn": "yes"})


def test_the_plan_says_where_patient_level_means_less():
    """The cocc course arrays have no patient ids (a split groups lesion pairs) and VinDr-Mammo only study
    ids: the plan's split says so for those datasets, and for no other."""
    from mammo_keras.plan import split_plan

    cocc = load_config("coccomini2021/table2", "paper", overrides={"datasets": ["cocc"]})
    assert "no patient ids" in split_plan(cocc)["group_caveats"]["cocc"]
    assert "group_caveats" not in split_plan(load_config("coccomini2021/table2", "paper"))
    plan = render_markdown(compile_plan(load_config("chougrad2018/table2", "tiny", overrides={"rows": ["vgg16"]})))
    assert "group_caveats" not in plan
    # and the results table says it too, under its header, where a reader of the numbers looks
    lines = report.header_lines(cocc, commit="abc", started=time.perf_counter(), synthetic=False)
    assert [line for line in lines if line.startswith("Patient-level on cocc: the course arrays carry no patient ids")]
    assert not [line for line in report.header_lines(load_config("coccomini2021/table2", "paper"), commit="abc",
                                                     started=time.perf_counter(), synthetic=False)
                if line.startswith("Patient-level on")]


def test_the_plans_grouping_and_stratification_are_those_the_splitters_use(monkeypatch):
    """`split.group` / `split.stratify` are read from the modules that split (a fact on them could not fail
    while they were constants of the plan): a detection split stratifies on pathology, the others on the
    item label, and a kept split (`split_from`) says that its patients keep the earlier run's parts."""
    from mammo_keras.data import splits
    from mammo_keras.plan import split_plan
    from mammo_keras.runner import detection
    from mammo_keras.training import cv

    table2 = load_config("chougrad2018/table2", "paper")
    hamed = load_config("hamed2020/table3", "paper")
    assert split_plan(table2)["group"] == splits.GROUP_KEY == "patient_id"
    assert split_plan(table2)["stratify"] == cv.STRATIFY_KEY == "label"
    assert split_plan(hamed)["stratify"] == detection.STRATIFY_KEY == "pathology"
    assert "stratify_kept" not in split_plan(table2)
    kept = split_plan(load_config("shen2017/table2", "paper"))["stratify_kept"]
    assert kept.startswith("patients shen2017/table1 saw keep its parts")
    monkeypatch.setattr(cv, "STRATIFY_KEY", "abnormality")
    monkeypatch.setattr(splits, "GROUP_KEY", "study_id")
    monkeypatch.setattr("mammo_keras.plan.GROUP_KEY", "study_id")
    assert (split_plan(table2)["group"], split_plan(table2)["stratify"]) == ("study_id", "abnormality")


def test_the_splitter_groups_on_its_group_key():
    """The column named GROUP_KEY is the one kept whole: two rows of one patient never part."""
    import pandas as pd

    from mammo_keras.data.splits import GROUP_KEY, patient_kfold

    table = pd.DataFrame({GROUP_KEY: [f"p{i // 2}" for i in range(40)], "label": [i // 2 % 2 for i in range(40)]})
    folds = patient_kfold(table, n_splits=5, seed=0, label="label")
    assert (folds.groupby(GROUP_KEY)["fold"].nunique() == 1).all() and folds["fold"].nunique() == 5
