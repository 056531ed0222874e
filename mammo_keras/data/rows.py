"""Items of a prepared images.npy, chosen, scaled and shifted without reading them: `ItemRows`.

The runner trains from a prepared folder whose images.npy may be far larger than memory
(whole CBIS-DDSM images at 1152x896: about 3,100 items, 12 GB in float32). Loading it whole and
then selecting rows, scaling, subtracting a mean and slicing folds made each step a full copy.
An `ItemRows` records those steps instead and applies them to the items of one batch when it is
read (`read`), with the arithmetic a whole array got (float32 `x * scale`, then `- mean`), so
every value is bitwise the one the in-memory path computed. Anything that needs the whole
array gets it with `np.asarray(rows)`.

    rows = ItemRows.open(folder / "images.npy")        # every item, nothing read
    part = rows.resized(None, (224, 224)).scaled(255.0)[fit_rows]   # still nothing read
    batch = part.read(np.arange(32))                   # (32, H, W) float32: 32 items read
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np


CHUNK_BYTES = 32 * 2 ** 20
"""The most float32 bytes `ItemRows.chunks` reads at once by default (beyond one item)."""


@dataclasses.dataclass(frozen=True, eq=False)
class ItemRows:
    """A lazy (N, H, W) float32 array: rows of a C-ordered .npy file, scaled and shifted when read.

    Items are read with plain reads, not through a memory map: mapped pages that a process
    touches count in its resident memory until the kernel drops them, so an epoch over a mapped
    set would grow the trainer's RSS with the set; read into a fresh buffer, the file's pages
    stay in the page cache, which is not the process's.

    Args:
        path: the .npy file; offset: where its data begin; stored_shape / dtype: one item's as stored.
        rows: the positions in the file, in order.
        part: the part of a paired item kept (`resize_items`), or None.
        size: the (rows, cols) each item is resized to when read (`resize_items`), or None.
        scales: factors applied in turn (each as a float32 multiplication, as `x * np.float32(s)`).
        mean: subtracted after scaling (a scalar or an (H, W) image; float32), or None.
        channels: 0 keeps (N, H, W); 1 adds a channel axis; 3 repeats the grey item 3 times.
    """

    path: str
    offset: int
    stored_shape: tuple[int, ...]
    dtype: np.dtype
    rows: np.ndarray
    part: int | None = None
    size: tuple[int, int] | None = None
    scales: tuple[float, ...] = ()
    mean: np.ndarray | float | None = None
    channels: int = 0

    @classmethod
    def open(cls, path: str | Path) -> ItemRows:
        """Every item of a .npy file (`data prepare`'s images.npy); only its header is read."""
        array = np.load(path, mmap_mode="r")
        if not array.flags.c_contiguous:
            raise ValueError(f"{path} must hold a C-ordered array (as `data prepare` and np.save write it). "
                             "Received: a Fortran-ordered array")
        if array.ndim < 2:
            raise ValueError(f"{path} must hold items of at least one dimension. Received: shape={array.shape}")
        return cls(str(path), int(array.offset), tuple(array.shape[1:]), array.dtype, np.arange(len(array)))

    @property
    def item_shape(self) -> tuple[int, ...]:
        """One item's shape as read, before any channel axis: the part chosen, resized."""
        shape = self.stored_shape[1:] if self.part is not None else self.stored_shape
        return (*shape[:-2], *self.size) if self.size is not None else tuple(shape)

    @property
    def shape(self) -> tuple[int, ...]:
        tail = {0: (), 1: (1,), 3: (3,)}[self.channels]
        return (len(self.rows), *self.item_shape, *tail)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        """Positions (ints, a boolean mask or a slice) give ItemRows of those rows, unread; an int reads
        that item; any other index reads the whole array first."""
        if isinstance(key, (int, np.integer)):
            return self.read(np.asarray([key], np.int64))[0]
        if isinstance(key, slice):
            return dataclasses.replace(self, rows=self.rows[key])
        if isinstance(key, (np.ndarray, list)):
            key = np.asarray(key)
            if key.dtype == bool:
                key = np.flatnonzero(key)
            if key.ndim == 1 and np.issubdtype(key.dtype, np.integer):
                return dataclasses.replace(self, rows=self.rows[key])
        return np.asarray(self)[key]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.read(np.arange(len(self.rows)))
        return out if dtype is None else out.astype(dtype, copy=False)

    def resized(self, part: int | None, size: tuple[int, int]) -> ItemRows:
        """These rows as `resize_items(items, part, size)` gives them, applied when read."""
        if self.part is not None or self.size is not None or self.scales or self.mean is not None:
            raise ValueError("choose the part and the size of raw rows, before any other step")
        if part is not None and len(self.stored_shape) < 3:
            raise ValueError(f"a part of paired items needs (N, parts, H, W) rows. Received: shape={self.shape}")
        return dataclasses.replace(self, part=part, size=tuple(int(v) for v in size))

    def scaled(self, factor: float) -> ItemRows:
        """These rows times `factor` (a float32 multiplication when read; 1.0 changes nothing)."""
        if factor == 1.0:
            return self
        if self.mean is not None:
            raise ValueError("scale the items before subtracting a mean (the order the recipe applies them)")
        return dataclasses.replace(self, scales=(*self.scales, float(factor)))

    def minus(self, mean: np.ndarray | float | None) -> ItemRows:
        """These rows less a fitted mean (a scalar or an item-shaped image), subtracted when read."""
        if mean is None:
            return self
        if self.mean is not None:
            raise ValueError("a mean is already subtracted from these rows")
        return dataclasses.replace(self, mean=np.asarray(mean, dtype=np.float32))

    def with_channels(self, channels: int) -> ItemRows:
        """(N, H, W) grey rows as (N, H, W, 1), or repeated to (N, H, W, 3), when read."""
        if channels not in (1, 3) or self.channels or len(self.item_shape) != 2:
            raise ValueError(f"`channels` must be 1 or 3, on (N, H, W) grey rows. Received: channels={channels!r} "
                             f"for rows of shape {self.shape}")
        return dataclasses.replace(self, channels=int(channels))

    def read(self, positions: np.ndarray) -> np.ndarray:
        """The items at `positions` (of these rows), with every recorded step applied: float32."""
        rows = self.rows[np.asarray(positions, dtype=np.int64)]
        out = np.empty((len(rows), *self.stored_shape), dtype=self.dtype)
        item_bytes = int(np.prod(self.stored_shape, dtype=np.int64)) * self.dtype.itemsize
        with open(self.path, "rb", buffering=0) as stream:
            for slot in np.argsort(rows, kind="stable"):  # ascending offsets: sequential reads
                stream.seek(self.offset + int(rows[slot]) * item_bytes)
                if stream.readinto(memoryview(out[slot]).cast("B")) != item_bytes:
                    raise OSError(f"{self.path}: short read at item {int(rows[slot])} (file truncated?)")
        x = resize_items(out, self.part, self.size) if self.size is not None else out.astype(np.float32, copy=False)
        for factor in self.scales:
            x = x * np.float32(factor)
        if self.mean is not None:
            x = x - self.mean
        if self.channels:
            x = x[..., None] if self.channels == 1 else np.repeat(x[..., None], 3, axis=-1)
        return x

    def chunks(self, size: int | None = None):
        """The rows read `size` at a time, in order (for statistics over a part that is not in memory).

        By default 64 items, or as many as fit in `CHUNK_BYTES` of float32 when fewer do (8 whole
        1152x896 images: 33 MB, where 64 would hold 264 MB, twice that as float64 statistics)."""
        if size is None:
            size = max(1, min(64, CHUNK_BYTES // (4 * int(np.prod(self.shape[1:], dtype=np.int64)))))
        for start in range(0, len(self.rows), size):
            yield self.read(np.arange(start, min(start + size, len(self.rows))))


def resize_items(items: np.ndarray, part: int | None, size: tuple[int, int]) -> np.ndarray:
    """Prepared items (N, H, W) or pairs (N, parts, H, W) as float32 at `size`, `part` of a pair chosen."""
    from mammo_keras.data.roi import resize

    items = np.asarray(items)
    if part is not None:
        items = items[:, part]
    size = tuple(size)
    if items.shape[-2:] == size:
        return items.astype(np.float32, copy=False)
    return np.stack([resize(item, size) if item.ndim == 2 else np.stack([resize(p, size) for p in item])
                     for item in items]).astype(np.float32)


def is_lazy(images) -> bool:
    """Whether `images` are `ItemRows` (read per batch) rather than an array in memory."""
    return isinstance(images, ItemRows)
