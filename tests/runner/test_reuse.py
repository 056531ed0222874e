"""A results folder is resumed only under the protocol that made it: a run whose split settings or
row plan differ from a folder's record is refused before anything trains, naming the folder and the
keys; the same protocol (a killed run started again, or another subset of rows) goes on."""
from __future__ import annotations

import json

import pytest

from mammo_keras.cli import main
from mammo_keras.runner.reuse import check_reusable, record_dataset, record_row

PLAN = {"plan_version": 2, "kind": "cv", "datasets": ["mias"], "epoch_scale": 0.5, "deterministic": True,
        "split": {"kind": "cv", "seed": 0, "n_splits": 5}, "evaluation": {"tta": None, "metrics": ["auc"]},
        "rows": [{"label": "cnn", "paper_row": None, "model": "m", "stages": [{"name": "train", "epochs": 20}]},
                 {"label": "other", "model": "m2", "stages": [{"name": "train", "epochs": 3}]}]}


def _with(plan: dict, **changes) -> dict:
    return json.loads(json.dumps({**plan, **changes}))


def _finished(folder):
    (folder / "fold_0").mkdir(parents=True)
    (folder / "fold_0" / "predictions.csv").write_text("item_id\n")


def test_the_same_protocol_resumes_and_a_changed_row_or_split_is_refused(tmp_path):
    record_dataset(tmp_path / "mias", PLAN)
    record_row(tmp_path / "mias" / "cnn", PLAN["rows"][0], PLAN.get("plan_version"))
    _finished(tmp_path / "mias" / "cnn")
    check_reusable(tmp_path, PLAN)  # a killed run started again
    # the metrics and the row's paper number are read from the predictions later: not a change
    check_reusable(tmp_path, _with(PLAN, evaluation={"tta": None, "metrics": ["auc", "accuracy"]}))
    check_reusable(tmp_path, _with(PLAN, rows=[{**PLAN["rows"][0], "paper_row": "row 3"}]))
    longer = _with(PLAN, rows=[{**PLAN["rows"][0], "stages": [{"name": "train", "epochs": 40}]}, PLAN["rows"][1]])
    with pytest.raises(ValueError, match=r"mias/cnn: stages differ\); .*Use another --results folder"):
        check_reusable(tmp_path, longer)
    with pytest.raises(ValueError, match=r"mias: split differ"):
        check_reusable(tmp_path, _with(PLAN, split={"kind": "cv", "seed": 0, "n_splits": 3}))
    with pytest.raises(ValueError, match=r"mias: tta differ"):
        check_reusable(tmp_path, _with(PLAN, evaluation={"tta": "flips"}))
    # a row without results of its own may change: nothing of it would be reused
    changed_other = _with(PLAN, rows=[PLAN["rows"][0], {**PLAN["rows"][1], "model": "m3"}])
    check_reusable(tmp_path, changed_other)


def test_folders_made_before_the_records_are_held_against_the_previous_plan(tmp_path):
    _finished(tmp_path / "mias" / "cnn")
    check_reusable(tmp_path, PLAN)  # no record and no plan.json: nothing to hold it against
    (tmp_path / "plan.json").write_text(json.dumps(PLAN))
    check_reusable(tmp_path, PLAN)
    with pytest.raises(ValueError, match=r"mias: epoch_scale differ"):
        check_reusable(tmp_path, _with(PLAN, epoch_scale=1.0))
    (tmp_path / "plan.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"plan.json cannot be read"):
        check_reusable(tmp_path, PLAN)


@pytest.mark.usefixtures("isolated_cache")
def test_reproduce_refuses_to_resume_a_run_under_other_folds_and_keeps_its_results(tmp_path, monkeypatch, capsys):
    """Before: `--set n_splits=3` into a 2-fold run's folder reused its folds.csv and finished folds."""
    monkeypatch.delenv("MAMMO_DATA", raising=False)
    results = tmp_path / "results"
    args = ["reproduce", "coccomini2021/table2", "--profile", "tiny", "--results", str(results),
            "--set", "n_bootstrap=50", "--set", "grad_cam=false", "--set", "rows=[baseline_lr]",
            "--set", "baselines=[logistic_regression]"]
    assert main(args) == 0
    out = results / "coccomini2021" / "table2"
    assert json.loads((out / "phantom" / "protocol.json").read_text())["split"]["n_splits"] == 2
    assert (out / "phantom" / "baseline_lr" / "protocol.json").is_file()
    assert main(args) == 0  # the same protocol: every fold reused
    table = (out / "table.csv").read_text()
    capsys.readouterr()
    assert main([*args, "--set", "n_splits=3"]) != 0
    assert "phantom: split differ" in capsys.readouterr().err
    assert (out / "table.csv").read_text() == table  # nothing of the first run lost
    assert json.loads((out / "plan.json").read_text())["split"]["n_splits"] == 2


def test_plans_of_two_formats_are_compared_in_what_both_say(tmp_path):
    """A newer package's plan adds descriptions (keys) an older record lacks: not a protocol change; a
    value both say differently still is."""
    record_dataset(tmp_path / "mias", PLAN)
    record_row(tmp_path / "mias" / "cnn", PLAN["rows"][0], PLAN["plan_version"])
    _finished(tmp_path / "mias" / "cnn")
    described = {**PLAN["rows"][0], "stage_preset": "mias_scratch",
                 "stages": [{"name": "train", "epochs": 20, "batchnorm": {"precise": None}}]}
    newer = _with(PLAN, plan_version=3, rows=[described, PLAN["rows"][1]])
    check_reusable(tmp_path, newer)
    with pytest.raises(ValueError, match=r"mias/cnn: stages differ"):
        check_reusable(tmp_path, _with(newer, rows=[{**described, "stages": [{"name": "train", "epochs": 30}]}]))
    with pytest.raises(ValueError, match=r"mias/cnn: stage_preset, stages differ"):  # the same format: every key counts
        check_reusable(tmp_path, _with(PLAN, rows=[described, PLAN["rows"][1]]))


def test_keras_automatic_layer_numbers_are_not_a_protocol_change(tmp_path):
    """InceptionV3's layers are named conv2d_93 ... by a per-process counter: built again in the same
    session (the second `reproduce` of a notebook or a test) the numbers differ, the network does not."""
    row = {"label": "cnn", "model": "m", "stages": [{"name": "train", "layers": [{"name": "conv2d_12"},
                                                                             {"name": "block1_conv1"}]}]}
    plan = _with(PLAN, rows=[row])
    record_dataset(tmp_path / "mias", plan)
    record_row(tmp_path / "mias" / "cnn", row, plan["plan_version"])
    _finished(tmp_path / "mias" / "cnn")
    renumbered = {**row, "stages": [{"name": "train", "layers": [{"name": "conv2d_106"}, {"name": "block1_conv1"}]}]}
    check_reusable(tmp_path, _with(plan, rows=[renumbered]))
    renamed = {**row, "stages": [{"name": "train", "layers": [{"name": "conv2d_12"}, {"name": "block1_conv2"}]}]}
    with pytest.raises(ValueError, match="stages differ"):
        check_reusable(tmp_path, _with(plan, rows=[renamed]))


def test_a_random_row_recorded_in_format_2_resumes_under_format_3(tmp_path):
    """Format 3 renamed model_summary's initialisers (`kernel_init`: those that drew the kernels;
    format 2's `kernel_initializers` named the builder's GlorotUniform for Chougrad's N(0, 0.05) rows):
    a corrected description, not another protocol, so a format-2 folder of such a row resumes."""
    old_row = {**PLAN["rows"][0], "model_summary": {"params": 10, "kernel_initializers": {"GlorotUniform": 16}}}
    record_dataset(tmp_path / "mias", PLAN)
    record_row(tmp_path / "mias" / "cnn", old_row, 2)
    _finished(tmp_path / "mias" / "cnn")
    new_row = {**PLAN["rows"][0], "model_summary": {"params": 10, "kernel_init": {"RandomNormal": 16}}}
    check_reusable(tmp_path, _with(PLAN, plan_version=3, rows=[new_row, PLAN["rows"][1]]))
    with pytest.raises(ValueError, match=r"mias/cnn: model_summary differ"):  # what both say still counts
        check_reusable(tmp_path, _with(PLAN, plan_version=3, rows=[
            {**new_row, "model_summary": {"params": 11, "kernel_init": {"RandomNormal": 16}}}, PLAN["rows"][1]]))
