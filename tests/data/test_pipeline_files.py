"""make_prepared_dataset: the file-backed pipeline yields exactly what make_dataset yields from memory."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammo_keras.data.pipeline import AugmentConfig, make_dataset, make_prepared_dataset
from mammo_keras.fileio import atomic_save_npy

AUGMENT = AugmentConfig(rotation_range=30.0, width_shift_range=0.1, height_shift_range=0.1, shear_range=0.2,
                        zoom_range=0.2, horizontal_flip=True)


@pytest.fixture()
def prepared(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((11, 12, 12), dtype=np.float32)
    labels = np.arange(11) % 2
    atomic_save_npy(tmp_path / "images.npy", images)
    pd.DataFrame({"item_id": [f"i{i}" for i in range(11)], "label": labels}).to_csv(tmp_path / "index.csv",
                                                                                    index=False)
    return tmp_path, images, labels


def batches(dataset, epochs=2):
    return [[tuple(np.asarray(part) for part in batch) for batch in dataset] for _ in range(epochs)]


@pytest.mark.parametrize("cache", [False, True])
def test_same_batches_as_in_memory(prepared, cache):
    folder, images, labels = prepared
    rows = np.array([0, 2, 3, 5, 6, 7, 8, 10])
    files = make_prepared_dataset(folder, rows, batch_size=3, augment=AUGMENT, shuffle=True, seed=7,
                                  cache=cache)
    memory = make_dataset(images[rows][..., None], labels[rows], batch_size=3, augment=AUGMENT, shuffle=True,
                          seed=7)
    from_files, from_memory = batches(files), batches(memory)
    assert [len(epoch) for epoch in from_files] == [3, 3]
    for epoch_files, epoch_memory in zip(from_files, from_memory):
        for (x_files, y_files), (x_memory, y_memory) in zip(epoch_files, epoch_memory):
            np.testing.assert_array_equal(y_files, y_memory)
            np.testing.assert_allclose(x_files, x_memory, atol=1e-6)
    assert not np.allclose(from_files[0][0][0], from_files[1][0][0])  # new draws each epoch


def test_channels_scale_and_errors(prepared):
    folder, images, _ = prepared
    dataset = make_prepared_dataset(folder, [4, 1], labels=False, batch_size=2, augment=None, shuffle=False,
                                    seed=0, channels=3, scale=255.0)
    (batch,) = list(dataset)
    assert batch.shape == (2, 12, 12, 3)
    np.testing.assert_allclose(batch[1, ..., 2], images[1] * 255.0, rtol=1e-6)
    with pytest.raises(ValueError, match="Received: 2 rows, 1 labels"):
        make_prepared_dataset(folder, [0, 1], [1], batch_size=2, augment=None, shuffle=False, seed=0)
    with pytest.raises(ValueError, match="Received: channels=2"):
        make_prepared_dataset(folder, batch_size=2, augment=None, shuffle=False, seed=0, channels=2)
