"""The README's Python examples run as written (so the README stays true)."""
from __future__ import annotations

import re

from conftest import REPO


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


def test_readme_listing_snippet_runs():
    block = [b for b in python_blocks() if "models.list()" in b][0]
    exec(compile(block, "README.md", "exec"), {})  # noqa: S102
