"""The command line's failures: one line `error: <what>: <why>`, a non-zero exit, no traceback,
before any work; quiet exit into a closed pipe."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_fixtures import errors_before_tensorflow
from mammo_keras import cli
from mammo_keras.cli import main
from mammo_keras.config import check_overrides, list_configs, load_config
from mias_fixtures import write_folder

REPO = Path(__file__).resolve().parents[1]


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


@pytest.mark.parametrize("name, expected", [
    ("chougrad2018/nosuch", "error: chougrad2018/nosuch: no such experiment config (close matches: chougrad2018/"),
    ("chougrad2018/tabel2", "(close matches: chougrad2018/table2"),
    ("nosuch", "error: nosuch: no such experiment config (the experiment folders are chougrad2018, "),
    ("chougrad2081/table2", "close matches: chougrad2018/table2"),
])
def test_an_unknown_experiment_lists_close_matches(capsys, tmp_path, name, expected):
    assert main(["reproduce", name, "--results", str(tmp_path / "results")]) == 1
    line = _one_error_line(capsys)
    assert expected in line and f"lists all {len(list_configs())})" in line
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("setting, message", [
    ("epoch_scale=banana", "override epoch_scale takes a number. Received: epoch_scale='banana' (a string)"),
    ("n_splits=abc", "override n_splits takes an integer. Received: n_splits='abc' (a string)"),
    ("n_splits=2.5", "override n_splits takes an integer. Received: n_splits=2.5 (a number)"),
    ("fractions=[0.8,0.2]", "override fractions takes a list of 3 numbers. Received: fractions=[0.8, 0.2] (a list)"),
    ("input_size=big", "override input_size takes an integer or a list of 2 integers"),
    ("profile=cpu", "profile cannot be overridden (it is set by --profile)"),
    ("no_such_key=1", "unknown config keys ['no_such_key']"),
])
def test_overrides_are_checked_against_the_field_types_before_any_work(capsys, tmp_path, setting, message):
    assert main(["reproduce", "chougrad2018/table2", "--set", setting, "--results", str(tmp_path / "r")]) == 1
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_well_typed_overrides_pass_and_numbers_written_as_strings_are_read():
    assert check_overrides({"n_splits": 3, "epoch_scale": 1, "batch_size": None, "input_size": [32, 48],
                            "flip_tta": True}) == {"n_splits": 3, "epoch_scale": 1, "batch_size": None,
                                                   "input_size": [32, 48], "flip_tta": True}
    config = load_config("chougrad2018/table2", "tiny", overrides={"epoch_scale": "1e-3", "n_splits": 3})
    assert config.epoch_scale == 0.001 and config.n_splits == 3


def test_an_unexpected_exception_is_one_line_with_a_hint_and_verbose_shows_it(capsys, monkeypatch):
    def broken(args):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(cli, "cmd_reproduce", broken)
    assert main(["reproduce", "--list"]) == 1
    assert _one_error_line(capsys) == ("error: reproduce: RuntimeError: the disk caught fire (run "
                                       "`mammo-keras --verbose reproduce ...` for the traceback)")
    with pytest.raises(RuntimeError, match="caught fire"):
        main(["--verbose", "reproduce", "--list"])


def test_max_pixels_must_be_a_whole_number(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "a.png", "--model", "m", "--max-pixels", "-3"])
    assert exit_.value.code == 2 and "--max-pixels takes a whole number >= 0" in capsys.readouterr().err


# argparse itself ignores a failed write of --help (exit 0); a command's output exits 141
@pytest.mark.parametrize("argv, status", [(["reproduce", "--list"], 141), (["--help"], 0)])
def test_a_closed_pipe_ends_the_command_quietly(argv, status):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written, as after `| head -0`
    try:
        done = subprocess.run([sys.executable, "-m", "mammo_keras.cli", *argv], stdout=write_end,
                              stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)},
                              timeout=60, cwd=REPO)
    finally:
        os.close(write_end)
    assert done.returncode == status, done.stderr.decode()
    assert done.stderr == b""


@pytest.mark.parametrize("profile", ["tiny", "cpu"])
def test_a_data_folder_without_any_dataset_folder_is_an_error_at_every_profile(capsys, tmp_path, profile):
    """Before: at the tiny profile (phantom data) a wrong --data was silently ignored and the table ran."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no dataset here")
    for data, why in ((tmp_path / "empty", "holds none of the dataset folders"),
                      (tmp_path / "missing", "there is no such folder")):
        assert main(["reproduce", "chougrad2018/table2", "--profile", profile, "--data", str(data),
                     "--results", str(tmp_path / "results")]) == 1
        error = capsys.readouterr().err.strip()
        assert error.startswith("error: ") and len(error.splitlines()) == 1, error
        assert str(data) in error and why in error, error
    assert not (tmp_path / "results").exists()  # refused before any work


def test_a_bad_name_or_override_is_refused_before_tensorflow_loads():
    """Before: `reproduce` imported TensorFlow (10-20 s on 2 busy cores) before it read the config."""
    errors = errors_before_tensorflow([["reproduce", "nosuch"], ["reproduce", "chougrad2018/table2", "--set", "n_splits=abc"],
                                       ["reproduce", "chougrad2018/table2", "--plan", "--set", "epoch_scale=banana"]])
    assert "nosuch: no such experiment config" in errors[0] and "override n_splits takes an integer" in errors[1]


def test_plan_and_data_commands_check_data_too(capsys, tmp_path):
    """Before: `reproduce --plan --data EMPTY` printed the plan and exited 0, and `data info` had no --data."""
    (tmp_path / "empty").mkdir()
    for argv in (["reproduce", "chougrad2018/table2", "--plan"], ["data", "info", "mias"],
                 ["data", "prepare", "mias", "--task", "chougrad", "--out", str(tmp_path / "prepared")]):
        assert main([*argv, "--data", str(tmp_path / "empty")]) == 1
        assert "--data holds none of the dataset folders" in _one_error_line(capsys)
    assert not (tmp_path / "prepared").exists()
    write_folder(tmp_path / "data" / "mini-mias")  # the folder name of ../shared/data
    assert main(["data", "info", "mias", "--data", str(tmp_path / "data"), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert (facts["images"], facts["files"]["image_files_found"]) == (6, 6)
    with pytest.raises(SystemExit):  # one folder or the other, not both
        main(["data", "info", "mias", "--data", str(tmp_path / "data"), "--root", str(tmp_path / "data")])
