"""`data prepare`: outputs, resume after a kill, bad input, workers, CLI."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from mammo_keras.cli import main
from mammo_keras.data import mias, patches, prepare as prepare_module
from mammo_keras.data.imageio import read_normalised
from mammo_keras.data.prepare import TASKS, load_prepared, prepare
from mammo_keras.data.roi import shen_whole_image
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


def _item_times(out):
    return {path.name: path.stat().st_mtime_ns for path in (out / "items").iterdir()}


def test_unchanged_records_are_reused(mias_folder, tmp_path):
    """Same rows and image files: every item file is kept, even when a line above the table moves the
    rows' line numbers."""
    first = run(mias_folder, tmp_path / "p")
    before = _item_times(tmp_path / "p")
    info = mias_folder / "Info.txt"
    info.write_bytes(b"a note added above the table\r\n" + info.read_bytes())
    again = run(mias_folder, tmp_path / "p")
    assert (again.resumed_images, again.changed_images) == (3, 0) and again.stack_reused
    assert _item_times(tmp_path / "p") == before and again.data_fingerprint == first.data_fingerprint


def test_changed_record_is_cut_again_with_its_new_label(mias_folder, tmp_path, capsys):
    """Before, items were reused by image id alone: mdb001 relabelled malignant at another place still
    came back benign, with the old box, counts and data fingerprint."""
    out = tmp_path / "p"
    command = ["data", "prepare", "mias", "--root", str(mias_folder), "--task", "chougrad", "--out", str(out),
               "--workers", "1", "--no-progress"]
    assert main(command) == 0
    first = json.loads((out / "prepare.json").read_text())
    before = _item_times(out)
    info = mias_folder / "Info.txt"
    info.write_bytes(info.read_bytes().replace(b"mdb001 G CIRC B 535 425 197", b"mdb001 G CIRC M 400 600 100"))
    capsys.readouterr()
    assert main(command) == 0
    assert "2 images reused from an earlier run, 1 cut again as their records or image file changed" \
        in capsys.readouterr().out
    _, index = load_prepared(out)
    row = index[index["item_id"] == "mdb001_1"].iloc[0]
    assert (row.label, row.pathology, json.loads(row.box)) == (1, "malignant", [300.0, 324.0, 500.0, 524.0])
    saved = json.loads((out / "prepare.json").read_text())
    assert saved["counts_by_label"] == {"benign": 2, "malignant": 2} != first["counts_by_label"]
    assert saved["data_fingerprint"] != first["data_fingerprint"] and not saved["stack_reused"]
    after = _item_times(out)
    assert after["mdb001.npz"] != before["mdb001.npz"]
    assert {name: after[name] for name in ("mdb002.npz", "mdb005.npz")} == \
        {name: before[name] for name in ("mdb002.npz", "mdb005.npz")}
    fresh = run(mias_folder, tmp_path / "fresh")
    assert fresh.data_fingerprint == saved["data_fingerprint"]


def test_changed_image_file_is_cut_again(mias_folder, tmp_path):
    """An image file replaced under the same name (other pixels, same size) gives new items."""
    run(mias_folder, tmp_path / "p")
    path = mias_folder / "mdb002.pgm"
    size = path.stat().st_size
    pixels = np.full((1024, 1024), 200, np.uint8)
    pixels[:, :512] = 10
    from PIL import Image
    Image.fromarray(pixels).save(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert path.stat().st_size == size
    again = run(mias_folder, tmp_path / "p")
    assert (again.resumed_images, again.changed_images) == (2, 1)
    assert again.data_fingerprint == run(mias_folder, tmp_path / "fresh").data_fingerprint


def test_item_file_without_a_source_key_is_cut_again(mias_folder, tmp_path):
    """Items written before the source key was kept cannot be told current: they are cut again once."""
    run(mias_folder, tmp_path / "p")
    item = tmp_path / "p" / "items" / "mdb002.npz"
    with np.load(item) as data:
        arrays, metadata = data["arrays"], data["metadata"]
    np.savez(item, arrays=arrays, metadata=metadata)
    again = run(mias_folder, tmp_path / "p")
    assert (again.resumed_images, again.changed_images) == (2, 1)
    assert run(mias_folder, tmp_path / "p").resumed_images == 3


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


# The shen_s10 recipe and items on the phantom below as the code cut them before `normal_images`
# existed (commit 43cb0d5): sha256 of index.csv's item_id, label and box columns.
S10_RECIPE_BEFORE = {"task": "shen_s10", "format_version": 2, "options": {
    "height": 1152, "width": 896, "patch_size": 224, "per_roi": 10, "min_overlap": 0.9, "seed": 0}}
S10_ITEMS_BEFORE = "b27254d9718c23ebd8182fc6b9c6408f3ceaea015e8bf3a1531d11be2c389453"


@pytest.fixture(scope="module")
def phantom_table(tmp_path_factory):
    """3 women, 6 images: 5 with a mass or calcification, phantom_P002_R_CC normal."""
    from mammo_keras.data import phantom

    return phantom.read(tmp_path_factory.mktemp("phantom"), n_patients=3, images_per_patient=2,
                        image_size=(512, 416))


def _s10(table, out, **options):
    return prepare("phantom", table, out, "shen_s10", options=options, progress=False, contact_sheet=False)


def _items_digest(index: pd.DataFrame) -> str:
    import hashlib

    return hashlib.sha256(index[["item_id", "label", "box"]].to_csv(index=False).encode()).hexdigest()


def test_s10_default_options_cut_the_items_of_before(phantom_table, tmp_path):
    report = _s10(phantom_table, tmp_path / "s10")
    _, index = load_prepared(tmp_path / "s10")
    assert report.items == 100 and _items_digest(index) == S10_ITEMS_BEFORE
    assert "phantom_P002_R_CC" not in set(index["image_id"])  # the normal image is not read
    # the recorded options leave normal_images out at its default: folders cut before it are reused
    assert json.loads((tmp_path / "s10" / "recipe.json").read_text()) == S10_RECIPE_BEFORE
    assert json.loads((tmp_path / "s10" / "prepare.json").read_text())["options"] == S10_RECIPE_BEFORE["options"]
    again = _s10(phantom_table, tmp_path / "s10", normal_images=0)
    assert again.resumed_images == report.images == 5 and again.data_fingerprint == report.data_fingerprint
    assert TASKS["shen_s10"].steps() == TASKS["shen_s10"].steps({"normal_images": 0})
    assert "normal_images" not in [step["step"] for step in TASKS["shen_s10"].steps()]


def test_s10_normal_images_add_background_patches_from_normal_breasts(phantom_table, tmp_path):
    before = _s10(phantom_table, tmp_path / "s10")
    images_before, index_before = load_prepared(tmp_path / "s10", mmap=False)
    report = _s10(phantom_table, tmp_path / "s10", normal_images=4)
    assert report.resumed_images == 0  # the option is recorded, so the folder is cut again
    assert json.loads((tmp_path / "s10" / "recipe.json").read_text())["options"]["normal_images"] == 4
    images, index = load_prepared(tmp_path / "s10", mmap=False)
    assert report.items == before.items + 4 and report.images == 6
    normal = index["image_id"] == "phantom_P002_R_CC"
    assert normal.sum() == 4 and (index.loc[normal, "label"] == 0).all()
    assert set(index.loc[normal, "class_name"]) == {"background"} and set(index.loc[normal, "pathology"]) == {"normal"}
    assert set(index.loc[normal, "patient_id"]) == {"phantom_P002"} and (index.loc[normal, "lesion_id"] == "").all()
    # the images with a lesion give exactly the items of before; Shen's 5 labels are kept
    kept = index[~normal].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept[["item_id", "label", "class_name", "box"]],
                                  index_before[["item_id", "label", "class_name", "box"]])
    np.testing.assert_array_equal(images[~normal.to_numpy()], images_before)
    lesion = kept[kept["label"] > 0]
    assert list(lesion["label"]) == [patches.shen_label(a, p) for a, p in zip(lesion["abnormality"], lesion["pathology"])]
    assert set(kept["class_name"]) == set(patches.SHEN_CLASSES)
    # the background rule: 224 x 224 inside the 1152 x 896 image, at least 75% breast tissue
    path = phantom_table.loc[phantom_table["image_id"] == "phantom_P002_R_CC", "path"].iloc[0]
    resized = shen_whole_image(read_normalised(path), size=(1152, 896))
    tissue = patches.tissue_mask(resized)
    for array, box in zip(images[normal.to_numpy()], index.loc[normal, "box"]):
        x0, y0, x1, y1 = (int(v) for v in json.loads(box))
        assert (x1 - x0, y1 - y0) == (224, 224) and x0 >= 0 and y0 >= 0 and x1 <= 896 and y1 <= 1152
        assert tissue[y0:y1, x0:x1].mean() >= 0.75
        np.testing.assert_array_equal(array, resized[y0:y1, x0:x1])
    last = TASKS["shen_s10"].steps({"normal_images": 4})[-1]
    assert (last["step"], last["per_image"]) == ("normal_images", 4)
    for bad in (-1, True, 2.5):
        with pytest.raises(ValueError, match=f"normal_images={bad!r}"):
            _s10(phantom_table, tmp_path / "bad", normal_images=bad)


def test_only_images_without_any_finding_count_as_normal(mias_folder):
    """mdb004 and mdb006 carry calcifications without coordinates: their background could not avoid
    them, so they are not normal images; mdb003 (NORM) is."""
    table = mias.read(mias_folder)
    task = TASKS["shen_s10"]
    assert set(task.select(table, task.resolve())["image_id"]) == {"mdb001", "mdb002", "mdb005"}
    assert set(task.select(table, task.resolve({"normal_images": 2}))["image_id"]) == {
        "mdb001", "mdb002", "mdb003", "mdb005"}


def test_shen_whole_image_label_option(mias_folder, tmp_path):
    """`label: abnormal` labels any finding 1 (benign ones and those without coordinates too), normal 0;
    the default (malignancy) is unchanged and not recorded."""
    default = run(mias_folder, tmp_path / "m", task="shen", options={"height": 64, "width": 48})
    assert default.options == {"height": 64, "width": 48}
    assert default.counts_by_label == {"malignant": 2, "not malignant": 4}
    report = run(mias_folder, tmp_path / "m", task="shen", options={"height": 64, "width": 48, "label": "abnormal"})
    assert report.resumed_images == 0 and report.options["label"] == "abnormal"
    _, index = load_prepared(tmp_path / "m")
    assert dict(zip(index["image_id"], index["label"])) == {
        "mdb001": 1, "mdb002": 1, "mdb003": 0, "mdb004": 1, "mdb005": 1, "mdb006": 1}
    assert report.counts_by_label == {"abnormal": 5, "normal": 1}
    assert TASKS["shen"].classes() == ("not malignant", "malignant")
    assert TASKS["shen"].classes({"label": "abnormal"}) == ("normal", "abnormal")
    with pytest.raises(ValueError, match="Received: label='benign'"):
        run(mias_folder, tmp_path / "x", task="shen", options={"label": "benign"})
