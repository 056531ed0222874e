"""Fixture images for the app tests, and the recipe of the session's tiny trained model.

The training images are 160 x 160 "mammograms" with one lesion disc: malignant discs are bright,
benign ones faint. Items are cut by the Chougrad recipe (r = 48 here) and resized to 32 x 32, as
`reproduce` does; the model is LevyNet with a 2-unit softmax, saved with its preprocessing by
`training.cv.train_and_test` from `recipe.model_info`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 160
INPUT = 32
R = 48
LESION = (100, 60, 12)  # x, y (rows from the top), radius: the lesion of the fixture image


def lesion_image(seed: int, malignant: bool, centre=None) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A [0, 1] image with a noisy background and one disc (bright if malignant, faint if benign), and the disc."""
    rng = np.random.default_rng(seed)
    image = 0.25 + 0.05 * rng.standard_normal((SIZE, SIZE))
    x, y, r = centre or (rng.integers(40, SIZE - 40), rng.integers(40, SIZE - 40), 12)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    disc = (cols - x) ** 2 + (rows - y) ** 2 <= r * r
    image[disc] += 0.6 if malignant else 0.15
    return np.clip(image, 0.0, 1.0).astype(np.float32), (float(x), float(y), float(r))


def write_png(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(np.round(255 * image).astype(np.uint8)).save(path)
    return path
