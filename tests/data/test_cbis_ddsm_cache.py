"""The reader's cache of DICOM headers and ROI mask boxes (`file_cache.FileCache`): a second reading of
an unchanged CBIS-DDSM tree reads no header and decodes no mask; a changed file is read again."""
from __future__ import annotations

import collections
import json
import os

import numpy as np
import pandas as pd
import pydicom
import pytest

from mammo_keras.cli import main
from mammo_keras.data import cbis_ddsm, prepare as prepare_module
from mammo_keras.data.file_cache import FileCache
from test_cbis_ddsm import build_tree  # noqa: E402  (tests/data is on sys.path under pytest)


@pytest.fixture()
def reads(monkeypatch):
    """Counts of the reader's header reads and pixel decodes (the mask boxes)."""
    counts = collections.Counter()
    for name in ("read_header", "read_dicom"):
        original = getattr(cbis_ddsm, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)
        monkeypatch.setattr(cbis_ddsm, name, counted)
    return counts


def test_second_reading_reads_no_header_and_decodes_no_mask(tmp_path, reads):
    build_tree(tmp_path / "data", "tcia")
    cache = tmp_path / "cache.json"
    plain = cbis_ddsm.read(tmp_path / "data")
    uncached = dict(reads)
    reads.clear()
    first = cbis_ddsm.read(tmp_path / "data", cache=cache)
    assert dict(reads) == uncached  # the first reading with a cache reads what the plain one does
    assert uncached["read_header"] == len(list((tmp_path / "data").rglob("*.dcm"))) and uncached["read_dicom"] > 0
    reads.clear()
    second = cbis_ddsm.read(tmp_path / "data", cache=cache)
    assert dict(reads) == {}
    pd.testing.assert_frame_equal(first, plain)
    pd.testing.assert_frame_equal(second, plain)
    assert second.attrs == plain.attrs
    saved = json.loads(cache.read_text())
    assert len(saved["entries"]["header"]) == uncached["read_header"]
    assert len(saved["entries"]["mask_box"]) == uncached["read_dicom"]


def test_a_changed_mask_is_read_again(tmp_path, reads):
    build_tree(tmp_path / "data", "tcia")
    cache = tmp_path / "cache.json"
    lesion = "Mass-Training_P_00001_LEFT_CC_1"
    before = cbis_ddsm.read(tmp_path / "data", cache=cache).set_index("lesion_id")
    mask_path = before.loc[lesion, "mask_path"]
    dataset = pydicom.dcmread(mask_path)
    moved = np.zeros_like(dataset.pixel_array)
    moved[30:40, 20:26] = 255  # the lesion's box moved: x 20-26, y 30-40; the same file size
    dataset.PixelData = moved.tobytes()
    size = os.path.getsize(mask_path)
    dataset.save_as(mask_path)
    stat = os.stat(mask_path)
    os.utime(mask_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000))  # past the timestamp granularity
    assert os.path.getsize(mask_path) == size
    reads.clear()
    after = cbis_ddsm.read(tmp_path / "data", cache=cache).set_index("lesion_id")
    assert dict(reads) == {"read_header": 1, "read_dicom": 1}  # that file alone
    assert after.loc[lesion, ["x0", "y0", "x1", "y1"]].tolist() == [20.0, 30.0, 26.0, 40.0]
    others = before.index != lesion
    pd.testing.assert_frame_equal(after[others], before[others])


def test_file_cache_entries_follow_size_and_mtime(tmp_path):
    source = tmp_path / "file.bin"
    source.write_bytes(b"abc")
    calls = []

    def compute():
        calls.append(1)
        return {"value": len(source.read_bytes())}

    cache = FileCache(tmp_path / "cache.json")
    assert cache.get("kind", source, compute) == {"value": 3}
    cache.save()
    assert FileCache(tmp_path / "cache.json").get("kind", source, compute) == {"value": 3} and len(calls) == 1
    stat = source.stat()
    source.write_bytes(b"abcd")  # another size, the mtime put back: still read again
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = FileCache(tmp_path / "cache.json")
    assert again.get("kind", source, compute) == {"value": 4} and len(calls) == 2 and again.misses == 1
    again.save()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # the same bytes, touched: read again
    touched = FileCache(tmp_path / "cache.json")
    assert touched.get("kind", source, compute) == {"value": 4} and len(calls) == 3
    assert touched.get("other kind", source, compute) == {"value": 4} and len(calls) == 4
    assert touched.get("kind", source, compute) == {"value": 4} and touched.hits == 1


def test_file_cache_writes_only_when_changed_and_survives_a_damaged_file(tmp_path):
    source = tmp_path / "file.bin"
    source.write_bytes(b"abc")
    path = tmp_path / "cache.json"
    cache = FileCache(path)
    cache.get("kind", source, lambda: 1)
    cache.save()
    written = path.stat().st_mtime_ns
    unchanged = FileCache(path)
    assert unchanged.get("kind", source, lambda: 2) == 1
    unchanged.save()
    assert path.stat().st_mtime_ns == written  # nothing new: not rewritten
    path.write_text('{"version": 1, "entries": ')  # cut short
    assert FileCache(path).get("kind", source, lambda: 3) == 3
    assert FileCache(None).get("kind", source, lambda: 4) == 4 and not (tmp_path / "None").exists()


def test_cli_prepare_again_reads_nothing_and_keeps_the_stack(tmp_path, reads, monkeypatch, capsys):
    build_tree(tmp_path / "data", "tcia")
    cut = collections.Counter()
    original = prepare_module.read_normalised
    monkeypatch.setattr(prepare_module, "read_normalised", lambda *a, **k: cut.update(["image"]) or original(*a, **k))
    out = tmp_path / "prepared"
    command = ["data", "prepare", "cbis_ddsm", "--root", str(tmp_path / "data"), "--task", "chougrad",
               "--option", "r=20", "--option", "size=16", "--workers", "1", "--no-progress", "--out", str(out)]
    assert main(command) == 0
    assert reads["read_header"] > 0 and reads["read_dicom"] > 0 and cut["image"] > 0
    first = json.loads((out / "prepare.json").read_text())
    stacked = (out / "images.npy").stat().st_mtime_ns
    reads.clear()
    cut.clear()
    assert main(command) == 0
    assert dict(reads) == {} and dict(cut) == {}
    again = json.loads((out / "prepare.json").read_text())
    assert again["stack_reused"] is True and again["data_fingerprint"] == first["data_fingerprint"]
    assert (out / "images.npy").stat().st_mtime_ns == stacked and (out / "reader_cache.json").is_file()


def test_the_runner_keeps_the_reader_cache_between_runs(tmp_path, reads):
    from mammo_keras.config import load_config
    from mammo_keras.runner.inputs import load_inputs

    build_tree(tmp_path / "data" / "cbis-ddsm", "tcia")
    config = load_config("chougrad2018/table2", "tiny", overrides={"datasets": ["cbis_ddsm"], "abnormality": "mass"})
    first = load_inputs(config, "cbis_ddsm", tmp_path / "data", tmp_path / "work", lambda _: None)
    assert reads["read_header"] > 0 and reads["read_dicom"] > 0
    assert (tmp_path / "work" / "prepared" / "cbis_ddsm_reader_cache.json").is_file()
    reads.clear()
    again = load_inputs(config, "cbis_ddsm", tmp_path / "data", tmp_path / "work", lambda _: None)
    assert dict(reads) == {}  # a second `reproduce` reads no header and decodes no mask
    pd.testing.assert_frame_equal(again.index, first.index)
