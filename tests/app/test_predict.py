"""`mammo-keras predict`: the recorded recipe, ROI geometry, formats, bad input, CLI output."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_fixtures import INPUT, LESION, R, SIZE, lesion_image, write_png
from app_fixtures import fixture_png, trained_model  # noqa: F401 - fixtures
from mammo_keras import io as model_io
from mammo_keras.app.predict import (Lesion, class_probabilities, explained_layer, lesion_window,
                                     load_model_folder, model_input, predict_image, read_scan)
from mammo_keras.app.predict import from_manifest, heatmap_name
from mammo_keras.data.recipes import InputRecipe
from mammo_keras.runner.rows import model_info
from mammo_keras.cli import main
from mammo_keras.config import load_config
from mammo_keras.data import roi
from mammo_keras.errors import DataError


def _chougrad(r=300, size=224, hw=(224, 224), scale=1.0) -> InputRecipe:
    return InputRecipe("chougrad", {"r": r, "size": size, "grow_to_fit": True}, hw, 1, scale,
                       class_names=("benign", "malignant"))


@pytest.fixture(scope="module")
def loaded(trained_model):
    return load_model_folder(trained_model)


def test_model_info_records_what_the_runner_does():
    config = load_config("chougrad2018/mias_test", "tiny")
    assert model_info(config, config.models[0]) == {
        "architecture": "chougrad_inceptionv3", "class_names": ["benign", "malignant"],
        "preprocessing": {"recipe": "chougrad", "options": {"r": 300, "size": 224, "grow_to_fit": True},
                          "input_hw": [75, 75], "input_channels": 1, "input_scale": 255.0,
                          "intensity": "format_range", "normalisation": "none"}}
    mias = load_config("chougrad2018/mias_cv", "cpu")
    scratch = next(row for row in mias.models if row.label == "coccomini_scratch_cnn")
    assert model_info(mias, scratch)["preprocessing"]["input_scale"] == 1.0  # the row's own scale wins
    assert model_info(mias, scratch)["preprocessing"]["input_hw"] == [96, 96]


def test_saved_manifest_carries_the_preprocessing(trained_model):
    manifest = model_io.read_manifest(trained_model)
    assert manifest["class_names"] == ["benign", "malignant"]
    assert manifest["architecture"] == "jain_levy_levynet"
    assert manifest["preprocessing"]["recipe"] == "chougrad"
    assert manifest["preprocessing"]["options"]["r"] == R
    assert manifest["preprocessing"]["input_hw"] == [INPUT, INPUT]


def test_manifest_without_preprocessing_needs_a_recipe():
    manifest = {"input_shape": [64, 48, 3], "class_names": None, "preprocessing": {}}
    with pytest.raises(DataError, match="--recipe chougrad"):
        from_manifest(manifest, origin="old/manifest.json")
    shen = from_manifest(manifest, recipe="shen")
    assert (shen.task, shen.input_hw, shen.input_channels, shen.input_scale) == ("shen", (64, 48), 3, 1.0)
    assert shen.options == {"height": 1152, "width": 896, "label": "malignancy"}  # the task defaults
    assert shen.class_names == ("not malignant", "malignant") and not shen.needs_roi
    with pytest.raises(DataError, match="paired or relabelled"):
        from_manifest({"input_shape": [8, 8, 1], "preprocessing": {"recipe": "chougrad", "input_hw": [8, 8],
                                                                   "item_part": 0}})
    with pytest.raises(DataError, match="coccomini"):
        from_manifest({"input_shape": [8, 8, 1], "preprocessing": {"recipe": "coccomini", "input_hw": [8, 8]}})


def test_lesions_in_mias_and_image_coordinates():
    # mdb001 in Info.txt: 535 425 197, y from the bottom of the 1024-row image: row 599.
    assert Lesion.parse("535,425,197", "circle", "bottom-left").box((1024, 1024)) == (338, 402, 732, 796)
    assert Lesion.parse("535, 599, 197").box((1024, 1024)) == (338, 402, 732, 796)
    assert Lesion.parse("10,20,30,60", "box", "bottom-left").box((100, 80)) == (10, 40, 30, 80)
    for text, kind, message in (("1,2", "circle", "3 comma-separated"), ("a,b,c", "circle", "numbers"),
                                ("1,2,0", "circle", "radius must be positive"), ("1,2,3", "box", "4 comma")):
        with pytest.raises(ValueError, match=message):
            Lesion.parse(text, kind)


def test_lesion_window_is_the_region_the_chougrad_roi_shows():
    image = np.random.default_rng(0).random((400, 300)).astype(np.float32)
    for box in [(100, 150, 140, 190), (5, 10, 45, 50), (120, 100, 280, 380)]:  # inside, at a corner, large
        window = lesion_window(_chougrad(r=120), box, image.shape)
        expected = roi.chougrad_roi(image, box, r=120, out_size=224)
        shown = roi.resize(window.crop(image), (224, 224))
        np.testing.assert_array_equal(shown - shown.mean(), expected)
    assert lesion_window(_chougrad(r=120), (5, 10, 45, 50), image.shape) == roi.Window(0, 0, 85, 90, True)


def test_model_input_repeats_the_training_items():
    image, _ = lesion_image(3, True, LESION)
    box = Lesion("circle", LESION).box(image.shape)
    prep = _chougrad(r=R, hw=(INPUT, INPUT), scale=255.0)
    expected = 255.0 * roi.resize(roi.chougrad_roi(image, box, r=R, out_size=224), (INPUT, INPUT))
    np.testing.assert_allclose(model_input(image, prep, box), expected, rtol=1e-6)
    with pytest.raises(DataError, match="--roi x,y,r"):
        model_input(image, prep, None, origin="case.png")
    with pytest.raises(DataError, match="centre lies outside the 160x160 image"):
        model_input(image, prep, Lesion("circle", (170, 60, 20)).box(image.shape))
    with pytest.raises(DataError, match="outside the 160x160 image"):
        model_input(image, prep, Lesion("circle", (400, 400, 20)).box(image.shape))
    whole = InputRecipe("shen", {"height": 40, "width": 30}, (20, 15), 3, 1.0,
                        class_names=("not malignant", "malignant"))
    assert model_input(image, whole).shape == (20, 15)
    with pytest.raises(DataError, match="takes no ROI"):
        model_input(image, whole, box)


def test_class_probabilities_from_softmax_and_sigmoid():
    np.testing.assert_allclose(class_probabilities(np.array([[0.2], [0.9]]), ("b", "m")),
                               [[0.8, 0.2], [0.1, 0.9]])
    np.testing.assert_array_equal(class_probabilities(np.array([[0.3, 0.7]]), ("b", "m")), [[0.3, 0.7]])


def test_grad_cam_skips_feature_maps_of_one_position():
    import keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, padding="same", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(8, name="pool")(x)  # 1 x 1
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x))
    assert explained_layer(keras.Model(inputs, outputs)) == "conv"
    flat = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    assert explained_layer(flat) is None


def test_predictions_equal_the_model_and_separate_the_classes(loaded, fixture_png, tmp_path):
    result = predict_image(loaded, fixture_png, Lesion("circle", LESION))
    image = read_scan(fixture_png)
    direct = loaded.model.predict(model_input(image, loaded.preprocessing, result.box)[None, ..., None], verbose=0)
    np.testing.assert_allclose([result.probabilities["benign"], result.probabilities["malignant"]], direct[0],
                               atol=1e-5)
    assert result.predicted == "malignant" and result.explained == "malignant"
    assert result.heatmap.shape == (INPUT, INPUT) and 0.0 <= result.heatmap.min() <= result.heatmap.max() <= 1.0
    assert result.panel.shape == (384, 384 + 8 + 384, 3)
    benign, _ = lesion_image(77, False, LESION)
    other = predict_image(loaded, write_png(tmp_path / "benign.png", benign), Lesion("circle", LESION))
    assert other.predicted == "benign"


def test_every_supported_format_gives_the_same_answer(loaded, fixture_png, tmp_path):
    from dicom_fixtures import write_dicom

    pixels = np.asarray(Image.open(fixture_png))
    Image.fromarray(pixels).save(tmp_path / "case.pgm")
    Image.fromarray(pixels).save(tmp_path / "case.tif")
    Image.fromarray(pixels).save(tmp_path / "case.jpg", quality=98)
    Image.fromarray(pixels.astype(np.uint16) * 257).save(tmp_path / "case16.png")
    write_dicom(tmp_path / "case.dcm", pixels, bits_stored=8)
    reference = predict_image(loaded, fixture_png, Lesion("circle", LESION)).probabilities["malignant"]
    for name, tolerance in (("case.pgm", 1e-6), ("case.tif", 1e-6), ("case16.png", 1e-5), ("case.dcm", 1e-5),
                            ("case.jpg", 0.05)):
        found = predict_image(loaded, tmp_path / name, Lesion("circle", LESION)).probabilities["malignant"]
        assert found == pytest.approx(reference, abs=tolerance), name


def test_bad_files_say_what_is_wrong(loaded, fixture_png, tmp_path):
    from dicom_fixtures import write_dicom

    (tmp_path / "notes.png").write_text("not an image at all")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(fixture_png.read_bytes()[:200])
    colour = write_dicom(tmp_path / "colour.dcm", np.zeros((8, 8)), extra={"PhotometricInterpretation": "RGB"})
    cases = {"notes.png": "not an image this tool reads", "truncated.png": "truncated or corrupt",
             "colour.dcm": "only greyscale DICOM", "missing.png": "image file not found"}
    assert colour.name in cases
    for name, message in cases.items():
        with pytest.raises(DataError, match=message):
            predict_image(loaded, tmp_path / name, Lesion("circle", LESION))


def test_a_changed_model_file_is_refused(trained_model, tmp_path):
    copy = shutil.copytree(trained_model, tmp_path / "model")
    weights = copy / model_io.WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(DataError, match="sha256 mismatch"):
        load_model_folder(copy)
    with pytest.raises(DataError, match="model folder not found"):
        load_model_folder(tmp_path / "nowhere")


def test_cli_writes_rows_and_heatmaps(trained_model, fixture_png, tmp_path, capsys):
    out = tmp_path / "out"
    benign, _ = lesion_image(77, False, LESION)
    second = write_png(tmp_path / "second.png", benign)
    code = main(["predict", str(fixture_png), str(second), "--model", str(trained_model), "--roi",
                 f"{LESION[0]},{SIZE - LESION[1]},{LESION[2]}", "--y-origin", "bottom-left", "--csv",
                 "--out", str(out)])
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(rows[0]) == ["image", "roi", "benign", "malignant", "predicted", "heatmap"]
    assert [r["predicted"] for r in rows] == ["malignant", "benign"]
    assert rows[0]["roi"] == "88,48,112,72"
    for row in rows:
        assert float(row["benign"]) + float(row["malignant"]) == pytest.approx(1.0, abs=1e-5)
        assert Image.open(row["heatmap"]).size == (384 + 8 + 384, 384)
    assert sorted(p.name for p in out.iterdir()) == sorted([heatmap_name(fixture_png), heatmap_name(second)])
    assert [Path(r["heatmap"]).name for r in rows] == [heatmap_name(fixture_png), heatmap_name(second)]

    code = main(["predict", str(fixture_png), "--model", str(trained_model), "--bbox", "88,48,112,72",
                 "--json", "--out", str(out)])
    assert code == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["malignant"] == pytest.approx(float(rows[0]["malignant"]), abs=1e-6)

    code = main(["predict", str(fixture_png), "--model", str(trained_model), "--roi", "100,60,12",
                 "--out", str(out)])
    table = capsys.readouterr().out
    assert code == 0 and "malignant" in table.splitlines()[1] and heatmap_name(fixture_png) in table


def test_cli_bad_input_exits_non_zero(trained_model, fixture_png, tmp_path, capsys):
    (tmp_path / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    assert main(["predict", str(tmp_path / "bad.dcm"), str(fixture_png), "--model", str(trained_model),
                 "--roi", "100,60,12", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "bad.dcm" in captured.err and "case.png" in captured.out  # the good image is still reported
    assert main(["predict", str(fixture_png), "--model", str(trained_model), "--roi", "900,60,12",
                 "--out", str(tmp_path)]) == 1
    assert "outside the 160x160 image" in capsys.readouterr().err
    assert main(["predict", str(fixture_png), "--model", str(trained_model), "--out", str(tmp_path)]) == 1
    assert "--roi x,y,r" in capsys.readouterr().err
    assert main(["predict", str(fixture_png), "--model", str(tmp_path), "--roi", "100,60,12"]) == 1
    assert "manifest.json" in capsys.readouterr().err


def test_console_command_in_a_fresh_process(fixture_png, tmp_path):
    """A fresh interpreter, as a user runs it: the package's custom layers must load by themselves."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import keras

    from mammo_keras.models.layers import GreyToRGB

    inputs = keras.Input((INPUT, INPUT, 1), name="image")
    x = keras.layers.Conv2D(4, 3, name="conv")(GreyToRGB(name="grey_to_rgb")(inputs))
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(
        keras.layers.GlobalAveragePooling2D(name="gap")(x))
    info = model_info(load_config("chougrad2018/mias_test", "tiny", overrides={"input_size": INPUT}),
                      load_config("chougrad2018/mias_test", "tiny").models[0])
    model_io.save(keras.Model(inputs, outputs), tmp_path / "model", **info)
    repo = Path(__file__).resolve().parents[2]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
                   "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "mammo_keras.cli", "predict", str(fixture_png), "--model",
                           str(tmp_path / "model"), "--roi", ",".join(map(str, LESION)), "--csv",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300,
                          env=environment, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    [row] = list(csv.DictReader(io.StringIO(done.stdout)))
    expected = predict_image(load_model_folder(tmp_path / "model"), fixture_png, Lesion("circle", LESION))
    assert float(row["malignant"]) == pytest.approx(expected.probabilities["malignant"], abs=1e-5)
    assert (tmp_path / "out" / heatmap_name(fixture_png)).is_file()


def test_heatmaps_of_files_with_one_name_in_two_folders_do_not_overwrite_each_other(trained_model, tmp_path,
                                                                                    capsys):
    """Every CBIS-DDSM image is 1-1.dcm: the heatmap name carries a hash of the image's full path."""
    images = []
    for number, malignant in enumerate((True, False)):
        folder = tmp_path / f"Mass-Test_P_0000{number}_LEFT_CC" / "1.000000-full mammogram images-24515"
        folder.mkdir(parents=True)
        images.append(write_png(folder / "1-1.png", lesion_image(90 + number, malignant, LESION)[0]))
    out = tmp_path / "out"
    assert main(["predict", *map(str, images), "--model", str(trained_model), "--roi", "100,60,12", "--csv",
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    names = [Path(row["heatmap"]).name for row in rows]
    assert names == [heatmap_name(path) for path in images] and len(set(names)) == 2
    assert all(name.startswith("1-1_") and name.endswith("_gradcam.png") for name in names)
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    first, second = (np.asarray(Image.open(out / name)) for name in names)
    assert not np.array_equal(first, second)  # two images, two heatmaps: neither overwrote the other
    again = main(["predict", str(images[0]), str(images[0]), "--model", str(trained_model), "--roi", "100,60,12",
                  "--roi", "90,50,12", "--csv", "--out", str(out)])  # one file twice: two lesions, two heatmaps
    assert again == 0
    twice = [Path(row["heatmap"]).name for row in csv.DictReader(io.StringIO(capsys.readouterr().out))]
    assert twice == [names[0], names[0].replace("_gradcam.png", "_2_gradcam.png")]


def test_the_default_output_folder_is_ignored_by_git():
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(["git", "check-ignore", "-q", "predictions/1-1_0123abcd_gradcam.png"], cwd=repo)
    assert done.returncode == 0, "predictions/ (predict's default --out) must be in .gitignore"
