"""Fixtures of the app tests: one tiny model trained by the package's runner, fixture images.

Test modules import the fixtures (`from app_fixtures import trained_model`); a conftest.py here
would replace the `conftest` module that tests/test_readme.py imports from. The model is trained
once per session whichever module asks first.

The training images are 160 x 160 "mammograms" with one lesion disc: malignant discs are bright,
benign ones faint. Items are cut by the Chougrad recipe (r = 48 here) and resized to 32 x 32, as
`reproduce` does; the model is LevyNet with a 2-unit softmax, saved with its preprocessing by
`training.cv.train_and_test` from `runner.rows.model_info`.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
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


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    """The folder of a LevyNet trained for a few epochs by `train_and_test` (about 10 s on 2 cores)."""
    return _train(tmp_path_factory.getbasetemp())


@functools.cache
def _train(base: Path) -> Path:
    """Trained once per session: each test module imports the fixture, this does the work once."""
    import keras

    from mammo_keras import models
    from mammo_keras.runner.rows import model_info
    from mammo_keras.config import load_config
    from mammo_keras.data.roi import chougrad_roi, resize
    from mammo_keras.training.cv import train_and_test
    from mammo_keras.training.stages import Stage

    config = load_config("chougrad2018/mias_test", "tiny", overrides={"input_size": INPUT})
    row = dataclasses.replace(config.models[0], name="jain_levy_levynet", label="levynet", options={})
    info = model_info(config, row)
    info["preprocessing"]["options"]["r"] = R  # small images: a 48-pixel window, as a config could set
    info["preprocessing"]["input_scale"] = 1.0  # [0, 1] items, as a row's `input_scale: 1` sets
    items, labels = [], []
    for seed in range(48):
        malignant = seed % 2 == 1
        image, (x, y, r) = lesion_image(seed, malignant)
        # 8-bit round trip, as the PNG the prediction reads
        image = np.round(255 * image).astype(np.float32) / 255.0
        item = chougrad_roi(image, (x - r, y - r, x + r, y + r), r=R, out_size=224, grow_to_fit=True)
        items.append(resize(item, (INPUT, INPUT)) * np.float32(info["preprocessing"]["input_scale"]))
        labels.append(int(malignant))
    index = pd.DataFrame({"item_id": [f"i{k}" for k in range(48)], "patient_id": [f"p{k}" for k in range(48)],
                          "label": labels})
    out = base / "app_trained"
    _, metrics = train_and_test(
        lambda: models.get("jain_levy_levynet", input_shape=(INPUT, INPUT, 1), num_classes=2),
        np.stack(items), index, [Stage("fit", epochs=8, optimizer="adam", learning_rate=3e-3, batch_size=8)],
        out, fit_rows=np.arange(40), val_rows=np.arange(0), test_rows=np.arange(40, 48), fold=0, seed=0,
        save_models=True, model_info=info)
    keras.backend.clear_session()
    assert metrics["accuracy"] == 1.0, f"the fixture model did not learn the discs: {metrics}"
    return out / "model"


@pytest.fixture(scope="session")
def fixture_png(tmp_path_factory) -> Path:
    """A malignant-looking fixture image with its lesion at LESION."""
    return _fixture_png(tmp_path_factory.getbasetemp())


@functools.cache
def _fixture_png(base: Path) -> Path:
    image, _ = lesion_image(1234, True, LESION)
    (base / "app_images").mkdir()
    return write_png(base / "app_images" / "case.png", image)
