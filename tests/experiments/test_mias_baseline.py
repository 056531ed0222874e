"""experiments/baselines: the README is what the results data say, and a real row reproduces its numbers."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BASELINES = Path(__file__).resolve().parents[2] / "experiments" / "baselines"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("mias_baseline", BASELINES / "mias_baseline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mias_baseline"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("mias_baseline", None)


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads((BASELINES / "mias_results.json").read_text())


def test_readme_and_csv_are_generated_from_the_results_data(script, committed, tmp_path):
    script.write_outputs(committed["rows"], committed["detection"], committed["meta"], tmp_path)
    assert (tmp_path / "README.md").read_text() == (BASELINES / "README.md").read_text()
    assert (tmp_path / "mias_results.csv").read_text() == (BASELINES / "mias_results.csv").read_text()
    rows = {(r["row"], r["classifier"], r["features"]) for r in committed["rows"]}
    assert {name for name, _, _ in rows} == {row.name for row in script.ROWS}
    assert not any(r["collapsed"] for r in committed["rows"])


def test_a_real_row_reproduces_its_committed_numbers(script, committed, mini_mias, tmp_path):
    from mammo_keras.data import read_dataset

    row = next(r for r in script.ROWS if r.name == "mass_vs_calc_pairs")
    results = script.run_row(row, read_dataset("mias", mini_mias), mini_mias, tmp_path, lambda message: None,
                             classifiers=("logistic_regression",), other_splits=False, n_bootstrap=10)
    expected = {r["features"]: r for r in committed["rows"]
                if r["row"] == row.name and r["classifier"] == "logistic_regression"}
    assert {r["features"] for r in results} == set(expected) == {"texture+box", "texture"}
    for result in results:
        want = expected[result["features"]]
        assert (result["n_items"], result["n_patients"]) == (want["n_items"], want["n_patients"])
        assert result["data_fingerprint"] == want["data_fingerprint"]
        for metric in ("auc", "accuracy"):  # point estimates and per-fold values; the CIs only need the seed
            for key in ("pooled", "fold_mean", "fold_std"):
                assert result["metrics"][metric][key] == pytest.approx(want["metrics"][metric][key], abs=1e-12)
