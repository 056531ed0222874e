"""Coccomini patch-array reader on tiny arrays in the course format."""
from __future__ import annotations

import numpy as np
import pytest

from mammo_keras.data import cocc_npy
from mammo_keras.errors import DataError, DatasetNotFoundError

LABELS = np.array([0, 1, 0, 4, 0, 3], dtype=np.uint8)


def _write(root, split, labels, *, channel=False, count=None):
    count = len(labels) if count is None else count
    tensor = np.broadcast_to(np.arange(count, dtype=np.uint16)[:, None, None], (count, 150, 150))
    tensor = tensor[..., None] if channel else tensor
    np.save(root / f"{split}_tensor.npy", np.ascontiguousarray(tensor))
    np.save(root / f"{split}_labels.npy", np.asarray(labels))


@pytest.mark.parametrize("channel", [False, True])
def test_load_pairs(tmp_path, channel):
    _write(tmp_path, "train", LABELS, channel=channel)
    pairs = cocc_npy.load_pairs(tmp_path, "train")
    assert pairs.baseline.shape == pairs.abnormal.shape == (3, 150, 150)
    assert pairs.baseline[:, 0, 0].tolist() == [0, 2, 4]
    assert pairs.abnormal[:, 149, 149].tolist() == [1, 3, 5]
    assert pairs.labels.tolist() == [1, 4, 3]
    assert len(pairs) == 3


def test_task_labels():
    labels = np.array([1, 2, 3, 4])
    assert cocc_npy.mass_vs_calcification(labels).tolist() == [0, 0, 1, 1]
    assert cocc_npy.benign_vs_malignant(labels).tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match=r"Received: 0 at index 1"):
        cocc_npy.benign_vs_malignant(np.array([2, 0]))


def test_read_record_table(tmp_path):
    _write(tmp_path, "public_test", LABELS)
    table = cocc_npy.read(tmp_path, split="public_test")
    assert list(table["image_id"]) == ["cocc_public_test_00000", "cocc_public_test_00001",
                                       "cocc_public_test_00002"]
    assert list(table["patient_id"]) == list(table["image_id"])
    assert list(table["array_index"]) == [1, 3, 5]
    assert list(table["baseline_index"]) == [0, 2, 4]
    assert list(table["abnormality"]) == ["mass", "calcification", "calcification"]
    assert list(table["pathology"]) == ["benign", "malignant", "benign"]
    assert table[["x0", "y0", "x1", "y1"]].to_numpy().tolist() == [[0, 0, 150, 150]] * 3
    assert set(table["path"]) == {str((tmp_path / "public_test_tensor.npy").resolve())}


def test_baseline_slot_with_lesion_label_names_file_and_index(tmp_path):
    _write(tmp_path, "train", [0, 1, 2, 0])
    expected = r"train_labels\.npy: index 2: even indices hold baseline .* Received: label 2"
    with pytest.raises(DataError, match=expected):
        cocc_npy.load_pairs(tmp_path)


def test_abnormality_slot_with_baseline_label(tmp_path):
    _write(tmp_path, "train", [0, 1, 0, 0])
    with pytest.raises(DataError, match=r"train_labels\.npy: index 3: odd indices hold abnormality"):
        cocc_npy.read(tmp_path)


def test_odd_count_and_length_mismatch(tmp_path):
    _write(tmp_path, "train", [0, 1, 0])
    with pytest.raises(DataError, match=r"train_labels\.npy: labels come in .* Received: 3 labels"):
        cocc_npy.load_pairs(tmp_path)
    _write(tmp_path, "train", LABELS, count=4)
    with pytest.raises(DataError, match=r"train_tensor\.npy: tensor has 4 patches but .* 6 labels"):
        cocc_npy.load_pairs(tmp_path)


def test_missing_split_and_unknown_split(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"private_test_tensor\.npy not found"):
        cocc_npy.load_pairs(tmp_path, "private_test")
    with pytest.raises(ValueError, match=r"Received: split='test'"):
        cocc_npy.load_pairs(tmp_path, "test")
