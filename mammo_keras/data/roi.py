"""Region-of-interest crops and per-paper normalisation, on 2-D float arrays.

Boxes are `(x0, y0, x1, y1)` in image pixels (x = column, y = row, half-open),
as in the record table. Every function here is pure: image in, array out.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mammo_keras.errors import DataError

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Window:
    """An integer crop window `[x0, x1) x [y0, y1)`, already clipped to the image."""

    x0: int
    y0: int
    x1: int
    y1: int
    clipped: bool = False

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def crop(self, image: np.ndarray) -> np.ndarray:
        return image[self.y0:self.y1, self.x0:self.x1]


def check_box(box: Box, shape: Sequence[int], *, origin: str = "<image>") -> None:
    """Raise DataError unless `box` is finite, non-empty and overlaps the image."""
    x0, y0, x1, y1 = box
    height, width = shape[:2]
    if not all(math.isfinite(v) for v in box):
        raise DataError(origin, f"lesion box has unknown coordinates. Received: box={box}")
    if x1 <= x0 or y1 <= y0:
        raise DataError(origin, f"lesion box is empty. Received: box={box}")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise DataError(origin, f"lesion box lies outside the {width}x{height} image. "
                                f"Received: box={box}")


def clip_window(cx: float, cy: float, width: float, height: float,
                shape: Sequence[int]) -> Window:
    """A `width x height` window centred on (cx, cy), clipped to the image."""
    image_h, image_w = shape[:2]
    x0 = int(round(cx - width / 2.0))
    y0 = int(round(cy - height / 2.0))
    x1, y1 = x0 + int(round(width)), y0 + int(round(height))
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x1, image_w), min(y1, image_h)
    clipped = (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1)
    return Window(cx0, cy0, cx1, cy1, clipped)


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D float array to `(height, width)` with antialiased bilinear filtering."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image.astype(np.float32, copy=True)
    resized = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F")
    return np.asarray(resized.resize((width, height), Image.BILINEAR), dtype=np.float32)


def global_contrast_normalise(image: np.ndarray) -> np.ndarray:
    """Subtract the image's own mean (Chougrad's GCN: no division by the std).

    Reference: Chougrad et al. 2018, Sec. 2.2.1 (2).
    """
    image = np.asarray(image, dtype=np.float32)
    return image - np.float32(image.mean())


def chougrad_roi(image: np.ndarray, box: Box, *, r: int = 300, out_size: int = 224,
                 grow_to_fit: bool = True, gcn: bool = True, origin: str = "<image>") -> np.ndarray:
    """An r x r window centred on the lesion box, re-scaled when clipped, GCN, resized.

    The window is clipped at the image border; the clipped crop is re-scaled to
    r x r (the paper's rule for lesions near an edge), then to `out_size`.
    `grow_to_fit` enlarges the window to the lesion's longer side when the lesion
    is larger than r, so that no lesion is cut (the paper leaves this case open).

    Reference: Chougrad et al. 2018, Sec. 2.2.1 (1)-(2) and Sec. 3 (r = 300, 224 x 224).
    """
    check_box(box, image.shape, origin=origin)
    x0, y0, x1, y1 = box
    side = max(r, x1 - x0, y1 - y0) if grow_to_fit else r
    window = clip_window((x0 + x1) / 2.0, (y0 + y1) / 2.0, side, side, image.shape)
    roi = resize(window.crop(image), (out_size, out_size))
    return global_contrast_normalise(roi) if gcn else roi


def _jain_levy_window(image: np.ndarray, box: Box, *, context: str, padding: int, factor: float,
                      origin: str) -> np.ndarray:
    """The mass box with its context ("fixed": `padding` px around; "proportional": `factor` x the box)."""
    if context not in ("fixed", "proportional"):
        raise ValueError(f"context must be 'fixed' or 'proportional'. Received: context={context!r}")
    check_box(box, image.shape, origin=origin)
    x0, y0, x1, y1 = box
    if context == "fixed":
        width, height = (x1 - x0) + 2 * padding, (y1 - y0) + 2 * padding
    else:
        width, height = (x1 - x0) * factor, (y1 - y0) * factor
    return clip_window((x0 + x1) / 2.0, (y0 + y1) / 2.0, width, height, image.shape).crop(image)


def _shorter_side_to(crop: np.ndarray, out_size: int) -> np.ndarray:
    scale = out_size / min(crop.shape)
    return resize(crop, (max(out_size, round(crop.shape[0] * scale)),
                         max(out_size, round(crop.shape[1] * scale))))


def centre_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The centred `size` (rows, cols) window of a 2-D array (or of each item of an (N, H, W) stack)."""
    height, width = image.shape[-2:]
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    if top < 0 or left < 0:
        raise ValueError(f"centre_crop of {size} from a {height}x{width} array. Received: size={size}")
    return np.ascontiguousarray(image[..., top:top + size[0], left:left + size[1]])


def jain_levy_roi(image: np.ndarray, box: Box, *, context: str = "proportional",
                  padding: int = 50, factor: float = 2.0, out_size: int = 224,
                  origin: str = "<image>") -> np.ndarray:
    """The mass bounding box with context, shorter side resized to `out_size`, centre square.

    context="fixed": `padding` pixels all around the box ("small context");
    context="proportional": a window `factor` times the box size ("large context").
    This is the evaluation input; training samples random crops of the same resized window
    (`jain_levy_canvas` keeps it, `recipes.offline_augment` rotates and crops it).

    Reference: Jain & Levy, DeepMammo, Sec. 3.1 and Table 1.
    """
    crop = _jain_levy_window(image, box, context=context, padding=padding, factor=factor, origin=origin)
    return centre_crop(_shorter_side_to(crop, out_size), (out_size, out_size)).copy()


def jain_levy_canvas(image: np.ndarray, box: Box, *, context: str = "proportional", padding: int = 50,
                     factor: float = 2.0, out_size: int = 224, canvas: float = 1.5,
                     origin: str = "<image>") -> tuple[np.ndarray, tuple[int, int]]:
    """The resized context window (shorter side `out_size`) centred on a square canvas.

    The canvas side is `round(out_size * canvas)`; a longer side beyond it is cut to the canvas
    (centred), and the rest of the canvas is 0. Returns the canvas and the (rows, cols) of the
    window on it: random `out_size` crops (Jain & Levy's offline augmentation) are drawn inside
    that window, and its centre `out_size` square is `jain_levy_roi`.

    Reference: Jain & Levy, DeepMammo, Sec. 3.1-3.2 (resize the shorter side to 224, random
    224 x 224 crops).
    """
    if canvas < 1.0:
        raise ValueError(f"`canvas` must be >= 1 (a multiple of out_size). Received: canvas={canvas!r}")
    crop = _jain_levy_window(image, box, context=context, padding=padding, factor=factor, origin=origin)
    resized = _shorter_side_to(crop, out_size)
    side = int(round(out_size * canvas))
    rows, cols = min(resized.shape[0], side), min(resized.shape[1], side)
    window = centre_crop(resized, (rows, cols))
    board = np.zeros((side, side), np.float32)
    top, left = (side - rows) // 2, (side - cols) // 2
    board[top:top + rows, left:left + cols] = window
    return board, (rows, cols)


def shen_whole_image(image: np.ndarray, *, size: tuple[int, int] = (1152, 896)) -> np.ndarray:
    """The whole mammogram down-sized to 1152 x 896 (rows x columns).

    Reference: Shen et al. 2017, Sec. 3.1.1.
    """
    return resize(image, size)


def to_three_channels(image: np.ndarray) -> np.ndarray:
    """Replicate a grey image across 3 channels (H, W) -> (H, W, 3)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[-1] == 3:
        return image
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    return np.repeat(image[..., None], 3, axis=-1)


def mean_image(images: np.ndarray) -> np.ndarray:
    """The per-pixel mean over a training set (N, H, W[, C]); for Jain & Levy's subtraction."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim < 3 or len(images) == 0:
        raise ValueError(f"mean_image needs a non-empty stack (N, H, W[, C]). Received: shape={images.shape}")
    return images.mean(axis=0).astype(np.float32)


def subtract_mean(images: np.ndarray, mean: np.ndarray | float) -> np.ndarray:
    """Subtract a training-set mean image (Jain & Levy) or mean grey value (Shen)."""
    return np.asarray(images, dtype=np.float32) - np.asarray(mean, dtype=np.float32)
