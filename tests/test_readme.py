"""The README's Python examples run as written and its config table is complete (so the README stays true)."""
from __future__ import annotations

import ast
import fnmatch
import re

from conftest import REPO

from mammo_keras import models


def python_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_model_snippet_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = [b for b in python_blocks() if "io.save" in b]
    assert len(blocks) == 1
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["probabilities"].shape == (1, 2)
    assert (tmp_path / "inceptionv3_2ft" / "manifest.json").is_file()


def _expression_values(block: str) -> list:
    """Run a README block statement by statement; the value of each bare expression, in order."""
    namespace: dict = {}
    values = []
    for statement in ast.parse(block).body:
        if isinstance(statement, ast.Expr):
            code = compile(ast.Expression(statement.value), "README.md", "eval")
            values.append(eval(code, namespace))  # noqa: S307 - our own README
        else:
            exec(compile(ast.Module([statement], type_ignores=[]), "README.md", "exec"), namespace)  # noqa: S102
    return values


def test_readme_listing_snippet_shows_the_registry():
    """The listing block's `models.list()` / `models.list(paper=...)` give what the registry holds,
    its comment's pattern filters as it says, and the table under it names every registered network."""
    text = (REPO / "README.md").read_text()
    blocks = [b for b in python_blocks() if "models.list()" in b]
    assert len(blocks) == 1
    everything, by_paper = _expression_values(blocks[0])
    registered = {entry.name: entry.paper for entry in models.entries()}
    assert everything == sorted(registered) and "chougrad_inceptionv3" in everything
    paper = re.search(r'models\.list\(paper="(\w+)"\)', blocks[0]).group(1)
    assert by_paper == sorted(n for n, p in registered.items() if p == paper)
    assert by_paper == ["chougrad_inceptionv3", "chougrad_resnet50", "chougrad_vgg16"]
    pattern = re.search(r'models\.list\("([^"]+)"\) filters by pattern', blocks[0]).group(1)
    assert models.list(pattern) == sorted(n for n in registered if n.startswith(pattern.rstrip("*")))
    assert "shen_patch_resnet50" in models.list(pattern) and "chougrad_vgg16" not in models.list(pattern)

    # The table after the block: each name (or pattern) in backticks that looks like a model name
    # matches registered networks, and together they are every network of the papers listed.
    table = text[text.index(blocks[0]) + len(blocks[0]):].split("\n\n", 2)[1]
    assert table.startswith("| paper | registered names |"), table[:80]
    prefixes = ("chougrad_", "shen_", "jain_levy_", "coccomini_")
    named = [n for n in re.findall(r"`([a-z0-9_*]+)`", table) if n.startswith(prefixes)]
    matched = set()
    for name in named:
        found = fnmatch.filter(registered, name)
        assert found, f"README's model table names {name!r}, which no registered model matches"
        matched.update(found)
    papers = {registered[n] for n in matched}
    assert papers == {"chougrad2018", "shen2017", "jain_levy", "coccomini2021"}
    assert matched == {n for n, p in registered.items() if p in papers}


def test_readme_config_table_names_every_config():
    """The README's table of configs names each one `mammo-keras reproduce --list` lists, and no other."""
    from mammo_keras.config import list_configs

    text = (REPO / "README.md").read_text()
    start = text.index("| paper | configs (`experiments/<paper>/`)")
    table = text[start:text.index("\n\n", start)]
    named = set()
    for line in table.splitlines()[2:]:
        paper = line.split("|")[1].split()[0]
        named.update(f"{paper}/{name}" for name in re.findall(r"`([a-z0-9_]+)`", line.split("|", 2)[2]))
    assert named == set(list_configs())
