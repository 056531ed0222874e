"""`prepare`'s stacking: streamed into images.npy, the same bytes and fingerprint as stacking in memory,
bounded memory, and kept as it is when a run changes nothing."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from mammo_keras.data import mias
from mammo_keras.data.prepare import PrepareReport, TASKS, _finalise, _item_file, load_prepared, prepare
from mammo_keras.errors import DataError
from test_mias import write_folder  # noqa: E402  (tests/data is on sys.path under pytest)


def in_memory_stack(groups, out):
    """The stacking before it was streamed: every item in memory, then hashed (the reference)."""
    arrays, metadata = [], []
    for image_id, _ in groups:
        with np.load(_item_file(out, image_id), allow_pickle=False) as data:
            arrays.extend(data["arrays"])
            metadata.extend(json.loads(str(data["metadata"])))
    index = pd.DataFrame(metadata)
    stacked = np.stack(arrays).astype(np.float32) if arrays else np.zeros((0,), np.float32)
    digest = hashlib.sha256(stacked.tobytes())
    digest.update(index[["item_id", "label"]].to_csv(index=False).encode() if len(index) else b"")
    buffer = io.BytesIO()
    np.save(buffer, stacked, allow_pickle=False)
    return buffer.getvalue(), index.to_csv(index=False), digest.hexdigest()


def write_items(out, counts, shape=(8, 6), seed=0):
    """Item files as `_process_image` writes them: image i holds counts[i] items (0: none)."""
    rng = np.random.default_rng(seed)
    (out / "items").mkdir(parents=True, exist_ok=True)
    groups = []
    for number, count in enumerate(counts):
        image_id = f"img{number:03d}"
        arrays = rng.random((count, *shape), dtype=np.float32) if count else np.zeros((0,), np.float32)
        metadata = [{"item_id": f"{image_id}_{k}", "image_id": image_id, "label": int((number + k) % 2),
                     "class_name": ("benign", "malignant")[(number + k) % 2]} for k in range(count)]
        buffer = io.BytesIO()
        np.savez(buffer, arrays=arrays, metadata=np.array(json.dumps(metadata)))
        _item_file(out, image_id).write_bytes(buffer.getvalue())
        groups.append((image_id, None))
    return groups


def finalise(out, groups, changed=True):
    report = PrepareReport("test", "chougrad", {}, "", str(out))
    _finalise(TASKS["chougrad"], groups, out, report, changed=changed)
    return report


@pytest.mark.parametrize("counts", [(0, 0), ()])
def test_no_items_is_refused_not_stacked(tmp_path, counts):
    groups = write_items(tmp_path, counts)
    with pytest.raises(DataError, match="0 items cut from <table> for task 'chougrad'"):
        finalise(tmp_path, groups)
    assert not (tmp_path / "images.npy").exists() and not (tmp_path / "index.csv").exists()


@pytest.mark.parametrize("counts", [(2, 0, 3, 1), (1,)])
def test_streamed_stack_equals_the_in_memory_stack_bitwise(tmp_path, counts):
    groups = write_items(tmp_path, counts)
    npy, csv, fingerprint = in_memory_stack(groups, tmp_path)
    report = finalise(tmp_path, groups)
    assert (tmp_path / "images.npy").read_bytes() == npy
    assert (tmp_path / "index.csv").read_text() == csv
    assert report.data_fingerprint == fingerprint
    assert report.items == sum(counts) and report.item_shape == ([8, 6] if sum(counts) else [])
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_items_of_two_shapes_are_refused(tmp_path):
    groups = write_items(tmp_path, (1,)) + write_items(tmp_path / "x", (1,), shape=(4, 4))
    os.replace(_item_file(tmp_path / "x", "img000"), _item_file(tmp_path, "img001"))
    with pytest.raises(ValueError, match="one shape"):
        finalise(tmp_path, [("img000", None), ("img001", None)])
    assert not (tmp_path / "images.npy").exists()


def test_peak_memory_is_one_image_not_the_stack(tmp_path):
    groups = write_items(tmp_path, [1] * 50, shape=(256, 256))
    whole = 50 * 256 * 256 * 4  # the stack's bytes: 13.1 MB
    tracemalloc.start()
    try:
        finalise(tmp_path, groups)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.load(tmp_path / "images.npy", mmap_mode="r").shape == (50, 256, 256)
    assert peak < whole / 5, (peak, whole)


@pytest.fixture()
def mias_folder(tmp_path):
    return write_folder(tmp_path / "mias")


def run(folder, out, **kw):
    return prepare("mias", mias.read(folder), out, "chougrad", root=folder, progress=False,
                   options={"r": 60, "size": 32}, **kw)


def test_nothing_changed_keeps_images_npy_and_index_csv(mias_folder, tmp_path):
    out = tmp_path / "out"
    first = run(mias_folder, out)
    kept = {name: (out / name).stat().st_mtime_ns for name in ("images.npy", "index.csv", "contact_sheet.png")}
    again = run(mias_folder, out)
    assert first.stack_reused is False and again.stack_reused is True and again.resumed_images == again.images
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept
    assert again.data_fingerprint == first.data_fingerprint and again.items == first.items == 4
    assert again.counts_by_label == first.counts_by_label and again.item_shape == first.item_shape == [32, 32]
    saved = json.loads((out / "prepare.json").read_text())
    assert saved["stack_reused"] is True and saved["data_fingerprint"] == first.data_fingerprint
    assert run(mias_folder, out).stack_reused is True  # and so on, run after run
    images, index = load_prepared(out)
    assert images.shape == (4, 32, 32) and list(index["item_id"]) == ["mdb001_1", "mdb002_1", "mdb005_1", "mdb005_2"]


def _restacked(mias_folder, out, before):
    report = run(mias_folder, out)
    assert report.stack_reused is False
    assert report.data_fingerprint == before.data_fingerprint  # the same items: the same stack
    return report


def test_a_touched_removed_or_recut_item_restacks(mias_folder, tmp_path):
    out = tmp_path / "out"
    first = run(mias_folder, out)
    item = out / "items" / "mdb002.npz"
    stat = item.stat()
    os.utime(item, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # touched: the same bytes
    _restacked(mias_folder, out, first)
    assert run(mias_folder, out).stack_reused is True
    item.unlink()  # removed: cut again from its image
    again = _restacked(mias_folder, out, first)
    assert again.resumed_images == again.images - 1
    assert run(mias_folder, out).stack_reused is True


def test_a_changed_item_restacks_with_its_new_content(mias_folder, tmp_path):
    out = tmp_path / "out"
    first = run(mias_folder, out)
    item = out / "items" / "mdb005.npz"
    with np.load(item) as data:
        arrays, metadata, source = data["arrays"] * 0 + 0.5, data["metadata"], data["source"]
    # rewritten in place, the same size, its source key kept (without one it would be cut again)
    np.savez(item, arrays=arrays, metadata=metadata, source=source)
    changed = run(mias_folder, out)
    assert changed.stack_reused is False and changed.data_fingerprint != first.data_fingerprint
    images, _ = load_prepared(out)
    assert np.all(images[2:] == 0.5)


@pytest.mark.parametrize("damage", ["missing", "partial", "touched", "index"])
def test_a_missing_or_damaged_stack_is_made_again(mias_folder, tmp_path, damage):
    out = tmp_path / "out"
    first = run(mias_folder, out)
    whole = (out / "images.npy").read_bytes()
    if damage == "missing":
        (out / "images.npy").unlink()
    elif damage == "partial":
        (out / "images.npy").write_bytes(whole[: len(whole) // 2])
    elif damage == "touched":
        os.utime(out / "images.npy", ns=(0, 0))
    else:
        (out / "index.csv").write_text("item_id,label\n")
    _restacked(mias_folder, out, first)
    assert (out / "images.npy").read_bytes() == whole
    assert len(load_prepared(out)[1]) == 4


def test_other_options_or_no_previous_report_restack(mias_folder, tmp_path):
    out = tmp_path / "out"
    first = run(mias_folder, out)
    (out / "prepare.json").unlink()
    _restacked(mias_folder, out, first)
    other = prepare("mias", mias.read(mias_folder), out, "chougrad", root=mias_folder, progress=False,
                    options={"r": 60, "size": 16})
    assert other.stack_reused is False and other.item_shape == [16, 16]
