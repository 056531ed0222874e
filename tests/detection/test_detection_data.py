"""Detection items from the record table: which images count, boxes in pixels, resizing and flips."""
from __future__ import annotations

import numpy as np
import pytest

from mammo_keras.data import mias
from mammo_keras.data import detection as ddata
from mias_fixtures import write_folder


def test_mini_mias_items_keep_masses_with_boxes_and_normals(tmp_path):
    table = mias.read(write_folder(tmp_path / "mias", suffix=".png"))
    items = ddata.detection_items(table).set_index("image_id")
    # mdb004 (CALC) and mdb006 (CALC, no coordinates) are not masses: left out.
    assert list(items.index) == ["mdb001", "mdb002", "mdb003", "mdb005"]
    assert items.loc["mdb003", "label"] == 0 and items.loc["mdb003", "boxes"] == []
    # mdb001: centre (535, 425), radius 197, row = 1024 - 425 = 599: the circle's bounding square.
    assert items.loc["mdb001", "boxes"] == [(338.0, 402.0, 732.0, 796.0)]
    assert items.loc["mdb005", "n_lesions"] == 2 and items.loc["mdb005", "pathology"] == "malignant"
    assert items.loc["mdb001", "patient_id"] == items.loc["mdb002", "patient_id"] == "mias_p001"


def test_load_images_scales_boxes_with_the_image(tmp_path):
    table = mias.read(write_folder(tmp_path / "mias", suffix=".png"))
    items = ddata.detection_items(table)
    images, boxes, scales = ddata.load_images(items, (256, 256))
    assert images.shape == (4, 256, 256) and images.dtype == np.float32
    np.testing.assert_allclose(images[0], 1 / 255, rtol=1e-5)  # mdb001 is filled with grey level 1
    np.testing.assert_allclose(boxes[0], [[84.5, 100.5, 183.0, 199.0]])
    assert scales == [4.0] * 4 and boxes[2].shape == (0, 4)


def test_negatives_subsampled_by_ratio_and_seed(tmp_path):
    table = mias.read(write_folder(tmp_path / "mias", suffix=".png"))
    items = ddata.detection_items(table)
    assert len(ddata.subsample_negatives(items, None, seed=0)) == 4
    assert (ddata.subsample_negatives(items, 0.0, seed=0)["label"] == 1).all()


def test_flip_normalise_and_padded_targets():
    images = np.zeros((1, 4, 10), np.float32)
    images[0, :, 0] = 1.0
    flipped, boxes = ddata.hflip(images, [np.array([[1.0, 0.0, 3.0, 2.0]])])
    assert flipped[0, 0, -1] == 1.0 and boxes[0].tolist() == [[7.0, 0.0, 9.0, 2.0]]
    rgb = ddata.normalise(images, "imagenet")
    assert rgb.shape == (1, 4, 10, 3)
    np.testing.assert_allclose(rgb[0, 0, 0], (1 - ddata.IMAGENET_MEAN) / ddata.IMAGENET_STD, rtol=1e-6)
    np.testing.assert_allclose(ddata.normalise(images, "0_255")[0, 0, 0], 255.0)
    with pytest.raises(ValueError, match="Received: mode='x'"):
        ddata.normalise(images, "x")
    targets = ddata.padded_targets([np.ones((2, 4), np.float32), np.zeros((0, 4), np.float32)])
    assert targets["boxes"].shape == (2, 2, 4) and targets["labels"].tolist() == [[0, 0], [-1, -1]]
    assert (targets["boxes"][1] == -1).all()
    assert set(ddata.padded_targets([np.ones((1, 4))], label_key="classes")) == {"boxes", "classes"}
