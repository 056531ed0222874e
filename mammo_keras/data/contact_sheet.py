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
    its item id, so masses can be checked by eye to sit in the centre of their crop. The tiles
    are laid into one mosaic drawn as one image (one axes per tile with a layout solver took
    5-7 s for 60 tiles, against under 1 s).
    """
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend stays as it is

    from mammo_keras.fileio import atomic_write_bytes

    classes = list(dict.fromkeys(index.sort_values("label")["class_name"]))
    placed = []  # (grid row, grid column, class name, position in images)
    row = 0
    for name in classes:
        chosen = list(index.index[index["class_name"] == name][:per_class])
        placed += [(row + k // columns, k % columns, name, position) for k, position in enumerate(chosen)]
        row += int(np.ceil(len(chosen) / columns))
    tiles = [_stretched(images[position]) for *_, position in placed]
    height = max((t.shape[0] for t in tiles), default=32)
    width = max((t.shape[1] for t in tiles), default=32)
    pad, caption = max(2, width // 16), max(8, int(0.35 * height))  # room for a two-line title above each tile
    cell_h, cell_w = height + caption, width + 2 * pad
    total_rows = max(1, row)
    mosaic = np.ones((total_rows * cell_h, columns * cell_w, 3), np.float32)
    figure = Figure(figsize=(columns * 1.8, columns * 1.8 * mosaic.shape[0] / mosaic.shape[1] + 0.4))
    axis = figure.add_axes((0, 0, 1, 1 - 0.4 / figure.get_figheight()))
    axis.axis("off")
    for (grid_row, grid_column, name, position), tile in zip(placed, tiles):
        top, left = grid_row * cell_h + caption, grid_column * cell_w + pad
        top_pad, left_pad = (height - tile.shape[0]) // 2, (width - tile.shape[1]) // 2
        mosaic[top + top_pad:top + top_pad + tile.shape[0], left + left_pad:left + left_pad + tile.shape[1]] = tile
        axis.text(left + width / 2, top - 1, f"{name}\n{index.loc[position, 'item_id']}", ha="center", va="bottom",
                  fontsize=7)
    axis.imshow(mosaic, interpolation="nearest", aspect="auto")
    figure.suptitle(f"{title}: first {per_class} items per class", fontsize=9)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return atomic_write_bytes(out_png, buffer.getvalue())


def _stretched(item) -> np.ndarray:
    """One item as an RGB tile in 0..1, contrast-stretched to its own 2nd-98th percentile (a pair of
    images, stored as (2, H, W), shows its first)."""
    tile = np.asarray(item, dtype=np.float32)
    tile = tile[0] if tile.ndim == 3 and tile.shape[0] in (2, 3) and tile.shape[-1] != 3 else tile
    if tile.ndim == 3 and tile.shape[-1] == 1:
        tile = tile[..., 0]
    low, high = np.percentile(tile, [2, 98])
    tile = np.clip((tile - low) / max(high - low, 1e-6), 0, 1)
    return np.repeat(tile[..., None], 3, axis=-1) if tile.ndim == 2 else tile[..., :3]
