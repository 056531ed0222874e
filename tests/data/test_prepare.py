"""`data prepare`: outputs, resume after a kill, bad input, workers, CLI."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from mammo_keras.cli import main
from mammo_keras.data import mias, prepare as prepare_module
from mammo_keras.data.prepare import load_prepared, prepare
from mammo_keras.errors import DataError
from test_mias import write_folder  # noqa: E402  (tests/data is on sys.path under pytest)


@pytest.fixture()
def mias_folder(tmp_path):
    return write_folder(tmp_path / "mias")


def run(folder, out, task="chougrad", **kw):
    return prepare("mias", mias.read(folder), out, task, root=folder, progress=False, **kw)


def test_chougrad_outputs(mias_folder, tmp_path):
    report = run(mias_folder, tmp_path / "out")
    images, index = load_prepared(tmp_path / "out")
    # Lesions with coordinates and a benign/malignant label: mdb001, mdb002, mdb005 (x2).
    assert images.shape == (4, 224, 224) and images.dtype == np.float32
    assert list(index["item_id"]) == ["mdb001_1", "mdb002_1", "mdb005_1", "mdb005_2"]
    assert list(index["label"]) == [0, 0, 0, 1]
    assert list(index["patient_id"]) == ["mias_p001", "mias_p001", "mias_p003", "mias_p003"]
    assert np.abs(images.mean(axis=(1, 2))).max() < 1e-5  # GCN: each ROI has zero mean
    saved = json.loads((tmp_path / "out" / "prepare.json").read_text())
    assert saved["items"] == 4 and saved["counts_by_label"] == {"benign": 3, "malignant": 1}
    assert saved["options"] == {"r": 300, "size": 224, "grow_to_fit": True}
    assert len(saved["data_fingerprint"]) == 64 and saved["data_fingerprint"] == report.data_fingerprint
    assert (tmp_path / "out" / "contact_sheet.png").stat().st_size > 1000


def test_resume_after_a_killed_run(mias_folder, tmp_path, monkeypatch):
    clean = run(mias_folder, tmp_path / "clean")
    real = prepare_module._process_image
    calls = {"n": 0}

    def dies_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C, or the job was killed
        return real(*args, **kwargs)

    monkeypatch.setattr(prepare_module, "_process_image", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        run(mias_folder, tmp_path / "killed")
    done = sorted(p.name for p in (tmp_path / "killed" / "items").iterdir())
    assert done == ["mdb001.npz", "mdb002.npz"] and not (tmp_path / "killed" / "images.npy").exists()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "killed" / "items").iterdir()}
    monkeypatch.setattr(prepare_module, "_process_image", real)
    resumed = run(mias_folder, tmp_path / "killed")
    assert resumed.resumed_images == 2
    assert {p: (tmp_path / "killed" / "items" / p).stat().st_mtime_ns for p in before} == before
    assert resumed.data_fingerprint == clean.data_fingerprint


def test_bad_image_stops_or_is_skipped(mias_folder, tmp_path):
    path = mias_folder / "mdb002.pgm"
    path.write_bytes(path.read_bytes()[:5000])  # truncated
    with pytest.raises(DataError, match=r"mdb002\.pgm: image data is truncated"):
        run(mias_folder, tmp_path / "out")
    assert (tmp_path / "out" / "items" / "mdb001.npz").is_file()  # what was written stays
    report = run(mias_folder, tmp_path / "out", skip_bad=True)
    assert [entry["image_id"] for entry in report.skipped] == ["mdb002"]
    assert "truncated" in report.skipped[0]["error"] and report.resumed_images == 1
    _, index = load_prepared(tmp_path / "out")
    assert list(index["item_id"]) == ["mdb001_1", "mdb005_1", "mdb005_2"]


def test_workers_give_identical_results(mias_folder, tmp_path):
    one = run(mias_folder, tmp_path / "one")
    two = run(mias_folder, tmp_path / "two", workers=2)
    assert one.data_fingerprint == two.data_fingerprint and one.items == two.items == 4


def test_shen_and_jain_levy_tasks(mias_folder, tmp_path):
    shen = run(mias_folder, tmp_path / "shen", task="shen")
    images, index = load_prepared(tmp_path / "shen")
    assert images.shape == (6, 1152, 896) and shen.images == 6
    assert dict(zip(index["image_id"], index["label"])) == {
        "mdb001": 0, "mdb002": 0, "mdb003": 0, "mdb004": 0, "mdb005": 1, "mdb006": 1}
    run(mias_folder, tmp_path / "jl", task="jain_levy", options={"context": "fixed"})
    images, index = load_prepared(tmp_path / "jl")
    assert images.shape == (4, 336, 336)  # the 224-side window kept on a 1.5 x canvas
    assert (index[["window_rows", "window_cols"]].min().min() >= 224 / 336 - 1e-9
            and index[["window_rows", "window_cols"]].max().max() <= 1.0)


def test_changed_options_recut_the_items(mias_folder, tmp_path):
    """Items cut with other options are not reused (before, r=300 items came back for r=200)."""
    run(mias_folder, tmp_path / "p", options={"r": 300})
    again = run(mias_folder, tmp_path / "p", options={"r": 300})
    assert again.resumed_images == 3
    report = run(mias_folder, tmp_path / "p", options={"r": 200})
    assert report.resumed_images == 0
    assert json.loads((tmp_path / "p" / "recipe.json").read_text())["options"]["r"] == 200
    with pytest.raises(ValueError, match=r"Received: \['radius'\]"):
        run(mias_folder, tmp_path / "x", options={"radius": 3})


def test_cli_info_and_prepare(mias_folder, tmp_path, capsys):
    assert main(["data", "info", "mias", "--root", str(mias_folder), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["images"] == 6 and facts["images_by_pathology"] == {"benign": 3, "malignant": 2, "normal": 1}
    out = tmp_path / "cli"
    assert main(["data", "prepare", "mias", "--root", str(mias_folder), "--task", "chougrad",
                 "--out", str(out), "--option", "r=200", "--no-progress"]) == 0
    assert "4 items from 3 images" in capsys.readouterr().out
    assert json.loads((out / "prepare.json").read_text())["options"]["r"] == 200
    assert main(["data", "info", "mias", "--root", str(tmp_path / "nowhere")]) == 1
    assert "dataset folder not found (looked in" in capsys.readouterr().err


def test_real_mini_mias_chougrad_rois(mini_mias, tmp_path):
    report = prepare("mias", mias.read(mini_mias), tmp_path / "real", "chougrad", root=mini_mias,
                     progress=False, contact_sheet=False, workers=2)
    assert report.items == 119 and report.counts_by_label == {"benign": 68, "malignant": 51}
    index = pd.read_csv(tmp_path / "real" / "index.csv")
    assert index["patient_id"].nunique() == 104  # 111 images of 104 women


def test_shen_patch_and_coccomini_tasks_on_phantom(tmp_path):
    from mammo_keras.data import phantom

    table = phantom.read(tmp_path / "phantom", n_patients=4, images_per_patient=2, image_size=(512, 416))
    lesion_images = table.loc[table["abnormality"].isin(["mass", "calcification"]), "image_id"].nunique()
    s10 = prepare("phantom", table, tmp_path / "s10", "shen_s10", progress=False, contact_sheet=False)
    images, index = load_prepared(tmp_path / "s10")
    assert images.shape[1:] == (224, 224) and s10.items == 20 * lesion_images  # 10 lesion + 10 background
    assert (index["label"] == 0).sum() == 10 * lesion_images
    assert set(index.loc[index["label"] > 0, "class_name"]) <= {
        "benign_calcification", "malignant_calcification", "benign_mass", "malignant_mass"}
    again = prepare("phantom", table, tmp_path / "s10b", "shen_s10", progress=False, contact_sheet=False,
                    workers=2)
    assert again.data_fingerprint == s10.data_fingerprint  # sampling is seeded per image
    pairs = prepare("phantom", table, tmp_path / "cocc", "coccomini", progress=False, contact_sheet=False)
    images, index = load_prepared(tmp_path / "cocc")
    assert images.shape[1:] == (2, 150, 150) and pairs.items == lesion_images
    assert set(index["label"]) <= {1, 2, 3, 4}
    expected = {("mass", "benign"): 1, ("mass", "malignant"): 2,
                ("calcification", "benign"): 3, ("calcification", "malignant"): 4}
    assert all(expected[(a, p)] == label
               for a, p, label in zip(index["abnormality"], index["pathology"], index["label"]))
