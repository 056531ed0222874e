"""`predict` on a source file builds exactly the array the runner trained and tested on.

For each predictable recipe (Chougrad ROIs with 255-unit GCN, Jain & Levy canvases with the
training set's mean image and the evaluation centre crop, Shen whole images minus the training
part's mean grey), the runner's own path reads a MIAS-format folder, prepares it, loads the
items, scales them for the row and trains one part with `training.cv.train_and_test`, which saves
the model with its manifest. `predict` then reads the test image file and the saved folder; its
model input must equal the runner's test input bit for bit, and its probability the model's.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from mammo_keras.app.predict import Lesion, load_model_folder, model_input, predict_image, read_scan
from mammo_keras.config import load_config
from mammo_keras.data.recipes import FittedInputs
from mammo_keras.runner.inputs import load_inputs, scaled
from mammo_keras.runner.rows import train_spec
from mammo_keras.training.cv import train_and_test
from mammo_keras.training.stages import Stage

# 8 images, 4 patients (mdb 2k-1 and 2k are one woman); a mass on each, MIAS y from the bottom
LESIONS = {1: ("B", 300, 700, 60), 2: ("M", 620, 420, 40), 3: ("B", 500, 500, 70), 4: ("M", 400, 300, 50),
           5: ("B", 700, 650, 45), 6: ("M", 350, 380, 65), 7: ("B", 560, 610, 55), 8: ("M", 460, 720, 35)}
CASES = {  # config, profile overrides, how predict is told where the lesion is
    "chougrad": ("chougrad2018/mias_test", {"input_size": 48}),
    "jain_levy": ("jain_levy/table2", {"input_size": 40}),
    "shen": ("shen2017/table3", {"input_size": [64, 48]}),
}


def _write_mias(root):
    root.mkdir()
    lines = [f"mdb{n:03d} G CIRC {c} {x} {y} {r}" for n, (c, x, y, r) in LESIONS.items()]
    (root / "Info.txt").write_text("\r\n".join(["MIAS", "=" * 20, *lines, "=" * 20]) + "\r\n", encoding="latin-1")
    rows, cols = np.mgrid[:1024, :1024]
    for n, (c, x, y, r) in LESIONS.items():
        rng = np.random.default_rng(n)
        image = 60 + 40 * rng.random((1024, 1024))
        image[(cols - x) ** 2 + (rows - (1024 - y)) ** 2 <= r * r] += 90 if c == "M" else 40
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / f"mdb{n:03d}.pgm")
    return root


@pytest.fixture(scope="module")
def mias(tmp_path_factory):
    return _write_mias(tmp_path_factory.mktemp("parity") / "mias")


def _tiny_model(shape):
    import keras

    inputs = keras.Input(shape, name="image")
    x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(
        keras.layers.GlobalAveragePooling2D(name="gap")(x))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("case", sorted(CASES))
def test_predict_builds_the_runners_input_from_the_file(case, mias, tmp_path):
    name, overrides = CASES[case]
    config = load_config(name, "tiny", overrides=overrides)
    row = config.models[0]
    inputs = load_inputs(config, "mias", mias.parent, tmp_path / "work", lambda message: None)
    assert len(inputs.index) == len(LESIONS), inputs.index
    inputs = scaled(inputs, row.input_scale if row.input_scale is not None else config.input_scale)
    spec = dataclasses.replace(train_spec(config, row, dict(row.options)),
                               stages=(Stage("fit", epochs=1, optimizer="sgd", learning_rate=1e-3, batch_size=4),),
                               save_models=True, cache_features=False)
    fit_rows, test_rows = np.arange(6), np.arange(6, 8)
    _, _ = train_and_test(lambda: _tiny_model((*config.input_hw, config.input_channels)), inputs.images,
                          inputs.index, spec, tmp_path / "part", fit_rows=fit_rows, val_rows=np.arange(0),
                          test_rows=test_rows, fold=0, seed=config.seed)
    fitted, _, _ = FittedInputs.fit(inputs.images[fit_rows], inputs.index.iloc[fit_rows],
                                    normalisation=spec.normalisation, offline=spec.offline, crop=spec.eval_crop,
                                    seed=config.seed)
    runner_inputs = fitted.transform(inputs.images[test_rows])

    loaded = load_model_folder(tmp_path / "part" / "model")
    assert loaded.preprocessing.task == config.task
    for position, item in zip(test_rows, runner_inputs):
        number = int(inputs.index.loc[position, "image_id"].removeprefix("mdb"))
        _, x, y, r = LESIONS[number]
        path = mias / f"mdb{number:03d}.pgm"
        box = Lesion("circle", (x, y, r), "bottom-left").box((1024, 1024)) if loaded.preprocessing.needs_roi else None
        mine = model_input(read_scan(path), loaded.preprocessing, box, origin=str(path), fitted=loaded.fitted)
        assert mine.dtype == item.dtype and mine.shape == item.shape
        np.testing.assert_array_equal(mine, item)
        lesion = Lesion("circle", (x, y, r), "bottom-left") if box is not None else None
        expected = loaded.model.predict(item[None, ..., None], verbose=0)[0]
        probabilities = predict_image(loaded, path, lesion).probabilities
        assert list(probabilities.values()) == pytest.approx(expected.tolist(), abs=1e-6)
    if case != "chougrad":  # the fitted statistic travelled in the manifest, not recomputed
        assert loaded.fitted.mean is not None
        np.testing.assert_array_equal(np.asarray(loaded.fitted.mean, np.float32), np.asarray(fitted.mean, np.float32))
