"""The registered detectors at a tiny size: build, learn one box, predict inside the image, weights options."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from mammo_keras.models.detection import training_of

from mammo_keras import models
from mammo_keras.runner import detection as run
from mammo_keras.data.detection import padded_targets

TINY_RETINANET = {"input_shape": (64, 64, 3), "weights": None, "width": 0.25, "head_convs": 1, "max_level": 5}


def _fit_steps(model, label_key: str, steps: int = 3) -> list[float]:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 64, 64, 3)).astype("float32")
    images[0, 8:40, 8:40] += 3.0  # a bright square where the box is
    targets = padded_targets([np.array([[8, 8, 40, 40]], "float32"), np.zeros((0, 4), "float32")],
                             label_key=label_key)
    history = model.fit(images, targets, epochs=steps, batch_size=2, verbose=0, shuffle=False)
    return history.history["loss"]


def _compile(model, name: str, rate: float) -> None:
    """As the detection kind's one stage compiles a detector: Adam with gradient clipping, its family's losses."""
    from mammo_keras.models.detection import training_of
    from mammo_keras.training.stages import make_optimizer

    _, _, stage = run.row_settings(_config(rate), _row())
    model.compile(optimizer=make_optimizer(stage, 1), **training_of(name).compile_options)


def _config(rate: float):
    from mammo_keras.config import load_config

    return load_config("hamed2020/table3", "tiny", overrides={"detection": {"learning_rate": rate}})


def _row():
    return _config(1e-3).models[0]


def test_detectors_are_registered_for_the_survey():
    names = models.list(paper="hamed2020")
    assert names == ["retinanet_resnet18", "retinanet_resnet50", "retinanet_vgg16", "yolov8_detector"]
    assert all(models.entry(name).task == "detection" for name in names)
    assert [training_of(name).label_key for name in names] == ["labels", "labels", "labels", "classes"]
    assert training_of("yolov8_detector").compile_options == {"classification_loss": "binary_crossentropy",
                                                               "box_loss": "ciou"}
    with pytest.raises(ValueError, match="not a registered detector"):
        training_of("chougrad_vgg16")


def test_retinanet_learns_and_predicts_boxes_inside_the_image():
    keras.utils.set_random_seed(0)
    model = models.get("retinanet_resnet18", **TINY_RETINANET)
    # The classification logits start at the focal-loss prior p = 0.01 (Lin et al. 2017).
    bias = keras.ops.convert_to_numpy(model.classification_head.prediction_layer.bias)
    np.testing.assert_allclose(1 / (1 + np.exp(-bias)), 0.01, rtol=1e-5)
    _compile(model, "retinanet_resnet18", 1e-3)
    model.run_eagerly = True  # three tiny steps: tracing the graph would cost more than running them
    losses = _fit_steps(model, training_of("retinanet_resnet18").label_key)
    assert losses[-1] < losses[0]
    detections = run.predict(model, np.zeros((3, 64, 64, 3), "float32"), batch_size=2)
    assert len(detections) == 3
    for boxes, scores in detections:
        assert boxes.shape[1:] == (4,) and len(boxes) == len(scores)
        assert ((boxes >= 0) & (boxes <= 64)).all() and (scores >= 0.01 - 1e-6).all()


def test_retinanet_vgg16_takes_vgg16_strides_8_16_32_and_learns_a_box():
    keras.utils.set_random_seed(0)
    model = models.get("retinanet_vgg16", input_shape=(64, 64, 3), weights=None, head_convs=1)
    encoder = model.backbone.image_encoder
    assert [layer.name for layer in encoder.layers[:3]] == ["image", "caffe_scaling", "block1_conv1"]
    assert {level: tuple(t.shape[1:]) for level, t in encoder.pyramid_outputs.items()} == {
        "P3": (8, 8, 512), "P4": (4, 4, 512), "P5": (2, 2, 512)}  # block4_conv3, block5_conv3, block5_pool
    assert {level: tuple(t.shape[1:3]) for level, t in model.backbone.pyramid_outputs.items()} == {
        "P3": (8, 8), "P4": (4, 4), "P5": (2, 2), "P6": (1, 1), "P7": (1, 1)}
    bias = keras.ops.convert_to_numpy(model.classification_head.prediction_layer.bias)
    np.testing.assert_allclose(1 / (1 + np.exp(-bias)), 0.01, rtol=1e-5)
    _compile(model, "retinanet_vgg16", 1e-4)
    model.run_eagerly = True
    image = np.full((1, 64, 64, 3), 60.0, "float32")
    image[0, 8:40, 8:40] = 200.0  # 0-255 inputs: the model does VGG16's caffe scaling itself
    targets = padded_targets([np.array([[8, 8, 40, 40]], "float32")], label_key="labels")
    loss, = model.fit(image, targets, epochs=1, batch_size=1, verbose=0).history["loss"]
    assert np.isfinite(loss) and loss > 0
    # An untrained VGG16 (no batch norm) gives box offsets far outside a 64 px image and scores under
    # the decoder's threshold; with both heads' last layers zeroed every anchor decodes, at p = 0.5.
    for head in (model.classification_head, model.box_head):
        for variable in head.prediction_layer.weights:
            variable.assign(keras.ops.zeros(variable.shape))
    (boxes, scores), = run.predict(model, image, batch_size=1)
    assert len(boxes) == len(scores) > 0 and boxes.shape[1:] == (4,)
    assert ((boxes >= 0) & (boxes <= 64)).all()
    np.testing.assert_allclose(scores, 0.5, rtol=1e-6)


def test_retinanet_vgg16_weights_options(tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    from mammo_keras.models.backbones import WeightsDownloadError
    from mammo_keras.models.weights import VGG16_CONVS
    from hed_fixtures import write_hed

    written = write_hed(tmp_path / "hed_bsds500.weights.h5", seed=1)
    hed = models.get("retinanet_vgg16", input_shape=(64, 64, 3), weights=str(tmp_path / "hed_bsds500.weights.h5"))
    for name, (kernel, bias) in zip(VGG16_CONVS, written):
        got = hed.backbone.image_encoder.get_layer(name).get_weights()
        np.testing.assert_array_equal(got[0], kernel)
        np.testing.assert_array_equal(got[1], bias)
    hed.backbone.image_encoder.save_weights(str(tmp_path / "vgg16.weights.h5"))  # a Keras file: by layer name
    again = models.get("retinanet_vgg16", input_shape=(64, 64, 3), weights=str(tmp_path / "vgg16.weights.h5"))
    np.testing.assert_array_equal(again.backbone.image_encoder.get_layer("block5_conv3").get_weights()[0],
                                  written[-1][0])
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match=r"text\.h5: not an HDF5 file"):
        models.get("retinanet_vgg16", input_shape=(64, 64, 3), weights=str(tmp_path / "text.h5"))
    with pytest.raises(ValueError, match="Received: weights='nowhere.h5'"):
        models.get("retinanet_vgg16", input_shape=(64, 64, 3), weights="nowhere.h5")

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- no network")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(WeightsDownloadError, match=r"ImageNet weights of vgg16 .* weights='/path/to/vgg16_weights_notop.h5'"):
        models.get("retinanet_vgg16", input_shape=(64, 64, 3), weights="imagenet")


def test_detection_rows_build_from_the_expanded_weights_variable(monkeypatch, tmp_path):
    """A row's `${MAMMO_VGG16_WEIGHTS}` reaches the builder as the file it names, not as the text."""
    from mammo_keras.reproduce import row_options
    from mammo_keras.runner import kinds

    seen = {}

    def fake_run_row(config, row, split, folder, progress):
        seen.update(row.options)
        raise ImportError("stop here")

    monkeypatch.setenv("MAMMO_VGG16_WEIGHTS", str(tmp_path / "hed.weights.h5"))
    monkeypatch.setattr(run, "run_row", fake_run_row)
    config = _config(1e-3)
    row = next(r for r in load_cpu().models if r.label == "retinanet_vgg16_hed")
    options, needs = row_options(row, tmp_path, "mias", set())
    assert needs == "" and options["weights"] == str(tmp_path / "hed.weights.h5")
    job = kinds.RowRun(config, row, "mias", type("Data", (), {"split": {}})(), tmp_path, options,
                       lambda text: None, None, None)
    _, outcome = kinds.Detection().run(job)
    assert outcome["status"].startswith("not run: stop here")
    assert seen["weights"] == str(tmp_path / "hed.weights.h5") and seen["normalisation"] == "0_255"


def load_cpu():
    from mammo_keras.config import load_config

    return load_config("hamed2020/table3", "cpu")


def test_yolov8_missing_keras_cv_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "keras_cv", None)
    with pytest.raises(ImportError, match="pip install keras-cv==0.9.0 tensorflow-datasets keras-core"):
        models.get("yolov8_detector", input_shape=(64, 64, 3), weights=None)


def test_retinanet_weights_options(tmp_path, monkeypatch):
    import keras_hub

    model = models.get("retinanet_resnet18", **TINY_RETINANET)
    path = tmp_path / "encoder.weights.h5"
    model.backbone.image_encoder.save_weights(str(path))
    loaded = models.get("retinanet_resnet18", **{**TINY_RETINANET, "weights": str(path)})
    for a, b in zip(model.backbone.image_encoder.weights, loaded.backbone.image_encoder.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    with pytest.raises(ValueError, match="Received: weights='nowhere.h5'"):
        models.get("retinanet_resnet18", **{**TINY_RETINANET, "weights": "nowhere.h5"})

    def offline(*args, **kwargs):
        raise ConnectionError("no route to kaggle.com")

    monkeypatch.setattr(keras_hub.models.ResNetBackbone, "from_preset", offline)
    with pytest.raises(RuntimeError, match="resnet_50_imagenet.*weights=None"):
        models.get("retinanet_resnet50", input_shape=(64, 64, 3), weights="imagenet")
    with pytest.raises(ValueError, match="Received: input_shape=\\(64, 64, 1\\)"):
        models.get("retinanet_resnet18", input_shape=(64, 64, 1), weights=None)


@pytest.mark.slow  # keras-cv's YOLOv8 graph takes about a minute of CPU to trace and fit
def test_yolov8_learns_when_keras_cv_is_installed():
    pytest.importorskip("keras_cv", reason="YOLOv8 needs the optional keras-cv install")
    keras.utils.set_random_seed(0)
    model = models.get("yolov8_detector", input_shape=(64, 64, 3), weights=None,
                       channels=(16, 32, 64, 64), depths=(1, 1, 1, 1))
    _compile(model, "yolov8_detector", 1e-3)
    losses = _fit_steps(model, training_of("yolov8_detector").label_key)
    assert losses[-1] < losses[0] and not math.isnan(losses[-1])
    with pytest.raises(ValueError, match="not ImageNet"):
        models.get("yolov8_detector", input_shape=(64, 64, 3), weights="imagenet")
