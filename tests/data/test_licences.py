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
