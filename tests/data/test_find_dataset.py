"""`data.find_dataset`: real data when it is there, None otherwise (the notebooks' switch)."""
from __future__ import annotations

from mammo_keras import data


def test_first_data_dir_holding_the_dataset_wins_then_mammo_data(tmp_path, monkeypatch):
    empty, holding, env = tmp_path / "empty", tmp_path / "holding", tmp_path / "env"
    empty.mkdir()
    (holding / "mini-mias").mkdir(parents=True)
    (env / "mias").mkdir(parents=True)
    monkeypatch.delenv("MAMMO_DATA", raising=False)
    assert data.find_dataset("mias", None, empty, holding) == holding / "mini-mias"
    assert data.find_dataset("mias", empty) is None
    (empty / "mias").write_text("a file, not a dataset folder")
    assert data.find_dataset("mias", empty) is None
    monkeypatch.setenv("MAMMO_DATA", str(env))
    assert data.find_dataset("mias", empty) == env / "mias"
    assert data.find_dataset("MIAS", holding) == holding / "mini-mias"  # names as the CLI takes them
