"""Session fixtures of the app tests: one tiny model trained by the package's runner, one image."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app_fixtures import INPUT, LESION, R, lesion_image, write_png


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    """The folder of a LevyNet trained for a few epochs by `train_and_test` (about 10 s on 2 cores)."""
    import keras

    from mammo_keras import models
    from mammo_keras.app.recipe import model_info
    from mammo_keras.config import load_config
    from mammo_keras.data.roi import chougrad_roi, resize
    from mammo_keras.training.cv import train_and_test
    from mammo_keras.training.stages import Stage

    config = load_config("chougrad2018/mias_test", "tiny", overrides={"input_size": INPUT})
    row = dataclasses.replace(config.models[0], name="jain_levy_levynet", label="levynet", options={})
    info = model_info(config, row)
    info["preprocessing"]["options"]["r"] = R  # small images: a 48-pixel window, as a config could set
    items, labels = [], []
    for seed in range(48):
        malignant = seed % 2 == 1
        image, (x, y, r) = lesion_image(seed, malignant)
        # 8-bit round trip, as the PNG the prediction reads
        image = np.round(255 * image).astype(np.float32) / 255.0
        item = chougrad_roi(image, (x - r, y - r, x + r, y + r), r=R, out_size=224, grow_to_fit=True)
        items.append(resize(item, (INPUT, INPUT)))
        labels.append(int(malignant))
    index = pd.DataFrame({"item_id": [f"i{k}" for k in range(48)], "patient_id": [f"p{k}" for k in range(48)],
                          "label": labels})
    out = tmp_path_factory.mktemp("trained")
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
    image, _ = lesion_image(1234, True, LESION)
    return write_png(tmp_path_factory.mktemp("images") / "case.png", image)
