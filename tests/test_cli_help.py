"""The CLI's help reads as user help (not the module docstrings), and `reproduce --help-config` lists every
config key with its type, default and meaning, generated from the ExperimentConfig dataclass."""
from __future__ import annotations

import dataclasses

import pytest

import mammo_keras.cli as cli
from mammo_keras.cli import main
from mammo_keras.config import ExperimentConfig, field_help

COMMANDS = [["data"], ["data", "info"], ["data", "prepare"], ["data", "download"], ["reproduce"], ["predict"],
            ["score"], ["models"], ["models", "pack"], ["models", "unpack"], ["serve"]]


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--help"])
    assert stopped.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_is_user_help_with_examples(capsys):
    text = _help([], capsys)
    assert "It only parses arguments and dispatches" not in text and cli.__doc__.splitlines()[0] not in text
    assert "Research use only: not a medical device." in text and "examples:" in text
    assert "mammo-keras reproduce --help-config" in text and "--data DIR or $MAMMO_DATA" in text


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_every_command_has_a_description(argv, capsys):
    text = _help(argv, capsys)
    usage, _, rest = text.partition("\n\n")
    description = rest.split("\n\n")[0]
    assert usage.startswith(f"usage: mammo-keras {' '.join(argv)}")
    assert not description.startswith(("positional arguments", "options")), f"{argv}: no description"
    assert "dispatch" not in text and '"""' not in text
    assert "%%" not in text, f"{argv}: a literal %% (argparse %-formats help strings, not descriptions)"


def test_help_config_lists_every_field_with_its_type_default_and_comment(capsys):
    assert main(["reproduce", "--help-config"]) == 0
    text = capsys.readouterr().out
    entries = {entry["name"]: entry for entry in field_help()}
    assert list(entries) == [field.name for field in dataclasses.fields(ExperimentConfig)]
    for name, entry in entries.items():
        assert entry["help"], f"ExperimentConfig.{name} has no comment in config.py"
        assert f"\n  {name}: {entry['type']} (" in text, name
        assert f"\n      {entry['help']}\n" in text, name
    assert "  save_models: true or false (default false)\n      save each trained model" in text
    assert "  split: a string (default patient)" in text and "  paper: a string (required)" in text
    assert "  profile: a string (required; set by --profile, not --set)" in text
    for key in ("rows", "row_options", "row_overrides"):
        assert f"\n  {key}\n" in text
