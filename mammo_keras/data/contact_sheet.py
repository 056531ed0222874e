"""A contact sheet of prepared items per class, for a person to look at."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def contact_sheet(images, index, out_png: str | Path, *, title: str = "", per_class: int = 12,
                  columns: int = 6) -> Path:
    """Draw up to `per_class` items of each class (first in index order) into one PNG.

    Args:
        images: the prepared items (N, ...) (a memory map is fine: only the drawn ones are read);
        index: their index table (item_id, label, class_name); title: the sheet's name.

    Each tile is contrast-stretched on its own (2nd-98th percentile) and titled with
    its item id, so masses can be checked by eye to sit in the centre of their crop.
    """
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend stays as it is

    from mammo_keras.fileio import atomic_write_bytes

    classes = list(dict.fromkeys(index.sort_values("label")["class_name"]))
    rows_per_class = [int(np.ceil(min(per_class, (index["class_name"] == c).sum()) / columns))
                      for c in classes]
    total_rows = max(1, sum(rows_per_class))
    figure = Figure(figsize=(columns * 1.8, total_rows * 2.0))
    axes = figure.subplots(total_rows, columns, squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    row = 0
    for name, n_rows in zip(classes, rows_per_class):
        chosen = index.index[index["class_name"] == name][: n_rows * columns]
        for k, position in enumerate(chosen):
            axis = axes[row + k // columns, k % columns]
            tile = np.asarray(images[position], dtype=np.float32)
            tile = tile[0] if tile.ndim == 3 and tile.shape[0] in (2, 3) and tile.shape[-1] != 3 else tile
            low, high = np.percentile(tile, [2, 98])
            axis.imshow(np.clip((tile - low) / max(high - low, 1e-6), 0, 1), cmap="gray")
            axis.set_title(f"{name}\n{index.loc[position, 'item_id']}", fontsize=7)
        row += n_rows
    figure.suptitle(f"{title}: first {per_class} items per class", fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return atomic_write_bytes(out_png, buffer.getvalue())
