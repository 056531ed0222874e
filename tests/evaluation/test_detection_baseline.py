"""The brightest-blob detector on synthetic images, scored by the package's own IoU, AP and FROC."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from mammo_keras.evaluation import detection as det
from mammo_keras.evaluation.detection_baseline import breast_mask, brightest_blobs, detect

DISC = (70, 90, 15)  # centre row, centre column, radius
DISC_BOX = np.array([[90 - 15, 70 - 15, 90 + 15, 70 + 15]], dtype=np.float64)  # x0, y0, x1, y1


def _breast_with_disc(seed: int = 0, disc: bool = True) -> np.ndarray:
    """A 160 x 200 image: dark film, a mid-grey textured breast, one bright disc; a film label outside."""
    rng = np.random.default_rng(seed)
    image = np.full((160, 200), 0.02) + 0.01 * rng.standard_normal((160, 200))
    image[10:150, 20:180] = 0.35 + 0.03 * rng.standard_normal((140, 160))
    if disc:
        image[disk(DISC[:2], DISC[2], shape=image.shape)] = 0.8
    image[150:158, 185:198] = 1.0  # a bright label on the film, outside the breast
    return image


def test_breast_mask_keeps_the_breast_and_drops_the_label():
    mask = breast_mask(_breast_with_disc())
    assert mask[80, 100] and mask[DISC[0], DISC[1]]
    assert not mask[154, 190] and not mask[2, 2]


@pytest.mark.parametrize("box_size", [None, 30])
def test_the_brightest_box_hits_the_disc_and_scores_ap_1(box_size):
    image = _breast_with_disc()
    boxes, scores = brightest_blobs(image, sigma=3.0, max_detections=5, box_size=box_size)
    assert 1 <= len(boxes) <= 5 and boxes.shape == (len(scores), 4)
    assert np.all(np.diff(scores) <= 0)
    assert det.iou(boxes[:1], DISC_BOX)[0, 0] >= 0.5
    assert not (boxes[:, 0] > 180).any()  # nothing on the film label
    detections = [(boxes, scores), brightest_blobs(_breast_with_disc(1, disc=False), sigma=3.0, max_detections=5,
                                                   box_size=box_size)]
    truth = [DISC_BOX, np.zeros((0, 4))]
    # The disc is the brightest detection of both images: found first, before any false positive.
    assert det.average_precision(detections, truth) == pytest.approx(1.0)
    fp_per_image, sensitivity, _ = det.froc(detections, truth)
    assert det.sensitivity_at(fp_per_image, sensitivity, (0.5,))[0.5] == 1.0
    assert det.evaluate(detections, truth)["mean_iou_tp"] >= 0.5


def test_half_maximum_boxes_follow_the_disc_size():
    image = _breast_with_disc()
    boxes, _ = brightest_blobs(image, sigma=2.0, max_detections=1)
    width, height = boxes[0, 2] - boxes[0, 0], boxes[0, 3] - boxes[0, 1]
    assert abs(width - 31) <= 3 and abs(height - 31) <= 3  # the disc spans 31 pixels


def test_detect_returns_one_entry_per_image_and_checks_options():
    images = np.stack([_breast_with_disc(0), _breast_with_disc(2)])
    detections = detect(images, sigma=3.0, max_detections=3, box_size=30)
    assert len(detections) == 2 and all(len(b) == len(s) <= 3 for b, s in detections)
    boxes, scores = brightest_blobs(np.zeros((20, 20)))
    assert boxes.shape == (0, 4) and scores.shape == (0,)  # a flat image has no maximum
    with pytest.raises(ValueError, match=r"Received: image.shape=\(2, 160, 200\)"):
        brightest_blobs(images)
    with pytest.raises(ValueError, match="Received: max_detections=0"):
        brightest_blobs(images[0], max_detections=0)
    with pytest.raises(ValueError, match="Received: mask.shape"):
        brightest_blobs(images[0], mask=np.ones((3, 3), bool))
