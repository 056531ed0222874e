"""The notebooks in experiments/notebooks/ run headless, top to bottom, at their smallest setting.

Each is executed by nbclient in a fresh kernel (the virtualenv's Python) on the phantom data, with
its outputs written to a temporary folder; a cell that raises fails the test with the cell's
traceback. The committed files carry no outputs, and the notebooks call only public names.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "experiments" / "notebooks"
NAMES = sorted(path.name for path in NOTEBOOKS.glob("*.ipynb"))
PRIVATE = re.compile(r"\bimport\s+_\w|\bimport\s+[^\n]*,\s*_\w|\b(?:mammo_keras|[a-z_]+)\.\_[a-z]\w*")


def code_of(notebook) -> str:
    return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")


def outputs_of(notebook) -> tuple[str, int]:
    """All text the cells printed or displayed, and the number of PNG images shown."""
    texts, images = [], 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                texts.append(output["text"])
            data = output.get("data", {})
            texts.append(data.get("text/plain", "") + data.get("text/markdown", ""))
            images += "image/png" in data
    return "\n".join(texts), images


def test_the_three_notebooks_are_there_and_stripped():
    assert NAMES == ["01_classify_a_mammogram.ipynb", "02_zoo_network.ipynb", "03_dataset.ipynb"]
    for name in NAMES:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(notebook)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert code and all(not cell.outputs and cell.execution_count is None for cell in code), \
            f"{name}: commit notebooks with their outputs stripped"
        assert not PRIVATE.search(code_of(notebook)), f"{name} uses a private name: {PRIVATE.search(code_of(notebook))}"


def test_private_name_check_catches_private_imports():
    assert PRIVATE.search("from mammo_keras.data.prepare import _run")
    assert PRIVATE.search("from mammo_keras.data import prepare, _groups")
    assert PRIVATE.search("x = prepare._finalise(spec)")
    assert not PRIVATE.search("from mammo_keras.data.prepare import load_prepared, prepare\nnp.__version__")


EXPECTED = {  # what each notebook must have shown (beyond running without an error)
    "01_classify_a_mammogram.ipynb": (1, [r"json \+ hdf5", r"\.keras ", r"zoo \+ hdf5", r"\.png \{'benign'",
                                          r"\.dcm \{'benign'", r"Grad-CAM map of 'malignant'"]),
    "02_zoo_network.ipynb": (2, [r"2FT\s+39\s+18", r"stage `fine_tune`", r"hold-out test: accuracy",
                                 r"auc: [\d.]+ \[95% CI"]),
    "03_dataset.ipynb": (1, [r"dataset: phantom", r"20 ROIs of shape \(224, 224\)", r"malignant fraction",
                             r"patients in more than one fold: 0"]),
}


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_headless_on_the_phantom(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_NOTEBOOK_SMALLEST", "1")
    monkeypatch.setenv("MAMMO_NOTEBOOK_DATA", "phantom")
    monkeypatch.setenv("MAMMO_NOTEBOOK_WORK", str(tmp_path))
    monkeypatch.delenv("MAMMO_MODEL", raising=False)
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    text, images = outputs_of(notebook)
    n_images, patterns = EXPECTED[name]
    assert images >= n_images, f"{name} showed {images} images"
    for pattern in patterns:
        assert re.search(pattern, text), f"{name}: no output matches {pattern!r}"
    written = sorted(p.name for p in tmp_path.rglob("*.png"))
    assert written, f"{name} wrote no figure under MAMMO_NOTEBOOK_WORK"
    assert not (NOTEBOOKS / "results").exists()
    json.dumps(notebook)  # the executed notebook is still plain JSON (no live objects in outputs)
