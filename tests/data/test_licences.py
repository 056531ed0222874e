"""Every dataset reader states the terms its data come with, and the README's licence table says the same."""
from __future__ import annotations

from pathlib import Path

from mammo_keras import data

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_reader_states_its_licence_and_the_readme_lists_it():
    section = README.read_text().split("## Licences of the data", 1)[1]
    for name in data.names():
        assert data.licence(name), name
        assert f"| `{name}` | {data.licence(name)} |" in section, name


def test_every_reader_says_its_layout_how_to_get_it_and_cites_its_source():
    """The README's datasets table lists every reader; each reader module states the folder layout it expects,
    how to obtain the data, and the public description it was written from (a `Reference:` in its docstring)."""
    table = README.read_text().split("## Datasets", 1)[1].split("\n## ", 1)[0]
    for name in data.names():
        module = data.reader_module(name)
        assert module.LAYOUT.strip() and module.HOW_TO_GET.strip(), name
        assert name == "phantom" or "Reference" in module.__doc__, name  # the phantom is the package's own
        assert f"| `{name}` | `data/" in table, name
