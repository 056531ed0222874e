"""weights/manifest.json follows the release format documented in weights/README.md."""
from __future__ import annotations

import json
from pathlib import Path

from mammo_keras import models

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
RELEASE_KEYS = {"name", "architecture", "paper", "experiment", "dataset", "profile", "metrics", "url",
                "archive_sha256", "files_sha256", "git_commit"}
FILES = {"model.json", "model.weights.h5", "model.keras"}


def test_manifest_format_and_releases_name_registered_models():
    manifest = json.loads((WEIGHTS / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert isinstance(manifest["releases"], list)
    names = [release["name"] for release in manifest["releases"]]
    assert len(names) == len(set(names)), "release names must be unique"
    for release in manifest["releases"]:
        assert set(release) == RELEASE_KEYS, release["name"]
        assert release["architecture"] in models.list(), release["name"]
        assert set(release["files_sha256"]) == FILES, release["name"]
        assert all(len(digest) == 64 for digest in release["files_sha256"].values())


def test_no_weight_files_are_committed():
    assert not [p for p in WEIGHTS.rglob("*") if p.suffix in {".h5", ".keras", ".gz"}]
