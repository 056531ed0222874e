"""Shared fixtures: paths to the real data shipped in ../shared (skipped when absent)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Under pytest-xdist with a worker per core (`make test`), each worker's TensorFlow would start a
# thread pool as wide as the machine: one op thread per worker keeps the cores from being
# oversubscribed. Set before any test imports TensorFlow.
if os.environ.get("PYTEST_XDIST_WORKER") and int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) >= (os.cpu_count() or 1):
    for _variable in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(_variable, "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_MIAS = REPO.parent / "shared" / "data" / "mini-mias"



def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow/gpu")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow/gpu test: run with --runslow")
    for item in items:
        if "slow" in item.keywords or "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_phantoms(tmp_path_factory) -> Path:
    """This test worker's folder of rendered phantom sets (`data.phantom.read` renders each set once)."""
    return tmp_path_factory.mktemp("phantoms")


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch, shared_phantoms) -> Path:
    """$MAMMO_CACHE in the test's own folder (nothing read from the user's cache), with its phantom/
    the worker's shared one: the end-to-end tests render the same phantom sets, each once per worker
    instead of once per test (5-15 s each)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "phantom").symlink_to(shared_phantoms, target_is_directory=True)
    monkeypatch.setenv("MAMMO_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def mini_mias() -> Path:
    """The real mini-MIAS folder beside the repository, or skip saying why."""
    if not (SHARED_MIAS / "Info.txt").is_file():
        pytest.skip(f"mini-MIAS not found at {SHARED_MIAS} (shipped in ../shared/data)")
    return SHARED_MIAS
