"""Detection metrics on hand-made boxes whose IoU, AP and FROC values are worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mammo_keras.evaluation import detection as det


def test_iou_known_overlaps():
    a = [[0, 0, 10, 10]]
    b = [[0, 0, 10, 10], [5, 0, 15, 10], [5, 5, 15, 15], [20, 20, 30, 30], [0, 0, 5, 10]]
    # identical; half overlap 50/150; quarter 25/175; disjoint; contained 50/100
    np.testing.assert_allclose(det.iou(a, b), [[1.0, 1 / 3, 1 / 7, 0.0, 0.5]])
    assert det.iou(np.zeros((0, 4)), a).shape == (0, 1)
    with pytest.raises(ValueError, match="shape"):
        det.iou([[0, 0, 1]], a)


def test_match_is_greedy_by_score_and_counts_duplicates_as_false_positives():
    gt = [[0, 0, 10, 10]]
    pred = [[0, 0, 10, 9], [0, 0, 10, 10], [50, 50, 60, 60]]
    is_tp, overlap = det.match(pred, [0.5, 0.9, 0.7], gt)
    # The 0.9 box takes the lesion; the 0.5 box (IoU 0.9) is then a duplicate: a false positive.
    assert is_tp.tolist() == [False, True, False]
    np.testing.assert_allclose(overlap, [0.9, 1.0, 0.0])
    # Below the threshold nothing matches.
    assert not det.match([[5, 0, 15, 10]], [1.0], gt)[0].any()


def _toy():
    # Image 1: lesion A found by the top box (0.9), a false positive at 0.8.
    # Image 2: lesion B found at 0.6; lesion C missed; a false positive at 0.7.
    # Image 3: normal, one false positive at 0.3.
    detections = [
        (np.array([[0, 0, 10, 10], [30, 30, 40, 40]]), np.array([0.9, 0.8])),
        (np.array([[0, 0, 20, 20], [60, 60, 70, 70]]), np.array([0.6, 0.7])),
        (np.array([[5, 5, 9, 9]]), np.array([0.3])),
    ]
    truth = [np.array([[0, 0, 10, 10]]), np.array([[0, 0, 20, 20], [80, 80, 90, 90]]), np.zeros((0, 4))]
    return detections, truth


def test_average_precision_by_hand():
    detections, truth = _toy()
    # Ranked: 0.9 TP, 0.8 FP, 0.7 FP, 0.6 TP, 0.3 FP; 3 lesions.
    # Recall steps 1/3 at precision 1, 2/3 at precision 2/4 -> AP = 1/3 * 1 + 1/3 * 0.5 = 0.5.
    assert det.average_precision(detections, truth) == pytest.approx(0.5)
    assert det.average_precision([(np.zeros((0, 4)), np.zeros(0))], [np.array([[0, 0, 1, 1]])]) == 0.0
    assert math.isnan(det.average_precision([(np.zeros((0, 4)), np.zeros(0))], [np.zeros((0, 4))]))


def test_froc_and_sensitivity_at_fp_rates_by_hand():
    detections, truth = _toy()
    fp_per_image, sensitivity, thresholds = det.froc(detections, truth)
    np.testing.assert_allclose(fp_per_image, np.array([0, 0, 1, 2, 2, 3]) / 3)
    np.testing.assert_allclose(sensitivity, np.array([0, 1, 1, 1, 2, 2]) / 3)
    assert thresholds[0] == np.inf and thresholds[-1] == 0.3
    # <= 0.5 FP/image allows 1 FP (1/3): sensitivity 1/3; <= 1 FP/image allows 3 FPs: 2/3.
    assert det.sensitivity_at(fp_per_image, sensitivity) == {0.5: pytest.approx(1 / 3), 1.0: pytest.approx(2 / 3),
                                                             2.0: pytest.approx(2 / 3)}
    result = det.evaluate(detections, truth)
    assert result["ap"] == pytest.approx(0.5)
    assert result["sensitivity_all"] == pytest.approx(2 / 3) and result["fp_per_image_all"] == pytest.approx(1.0)
    assert result["mean_iou_tp"] == pytest.approx(1.0)


def test_bootstrap_brackets_the_point_estimate_and_is_seeded():
    detections, truth = _toy()
    first = det.bootstrap(detections, truth, n_replicates=50, seed=3)
    assert first == det.bootstrap(detections, truth, n_replicates=50, seed=3)
    low, high = first["sens_at_1fpi"]
    assert 0.0 <= low <= high <= 1.0


def test_draw_boxes_writes_a_colour_png(tmp_path):
    from PIL import Image

    image = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    path = det.draw_boxes(image, tmp_path / "b.png", gt_boxes=[[10, 10, 30, 30]],
                          pred_boxes=[[12, 12, 30, 30], [40, 40, 60, 60]], scores=[0.9, 0.4], is_tp=[True, False])
    pixels = np.asarray(Image.open(path))
    assert pixels.shape == (64, 64, 3)
    assert (pixels[40, 50] == (255, 40, 40)).all()  # the false positive's left edge is red
    assert (pixels[20, 10] == (0, 220, 0)).all()  # the ground truth's left edge is green


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_tied_scores_give_only_reachable_points_whatever_the_order(order):
    """One lesion; a hit and a false positive both at 0.9: no threshold keeps the hit alone."""
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60]])[list(order)]
    detections, truth = [(boxes, np.array([0.9, 0.9]))], [np.array([[0, 0, 10, 10]])]
    fp_per_image, sensitivity, thresholds = det.froc(detections, truth)
    np.testing.assert_array_equal(fp_per_image, [0, 1])
    np.testing.assert_array_equal(sensitivity, [0, 1])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.9])
    for rate in (0.0, 0.25, 0.5, 0.99):
        assert det.sensitivity_at(fp_per_image, sensitivity, [rate]) == {rate: 0.0}
    assert det.sensitivity_at(fp_per_image, sensitivity, [1.0]) == {1.0: 1.0}
    # AP at the one reachable point: recall 1 at precision 1/2
    assert det.average_precision(detections, truth) == pytest.approx(0.5)
    assert det.evaluate(detections, truth)["sens_at_0.5fpi"] == 0.0


def test_ties_across_images_are_one_threshold():
    # image 1: a false positive at 0.8; image 2: the lesion found at 0.8; then a hit at 0.5
    detections = [(np.array([[30, 30, 40, 40]]), np.array([0.8])),
                  (np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([0.8, 0.5]))]
    truth = [np.zeros((0, 4)), np.array([[0, 0, 10, 10], [20, 20, 30, 30]])]
    fp_per_image, sensitivity, thresholds = det.froc(detections, truth)
    np.testing.assert_allclose(fp_per_image, [0, 0.5, 0.5])
    np.testing.assert_allclose(sensitivity, [0, 0.5, 1.0])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.8, 0.5])
    # recall 1/2 at precision 1/2, then recall 1 at precision 2/3 (the envelope lifts the first)
    assert det.average_precision(detections, truth) == pytest.approx(2 / 3)
    swapped = [detections[1], detections[0]]
    assert det.average_precision(swapped, [truth[1], truth[0]]) == pytest.approx(2 / 3)


def test_matching_follows_cocos_rule_not_the_voc_devkits():
    """The 0.8 box overlaps lesion A best (IoU 0.90), which the 0.9 box already took, and lesion B with
    IoU 0.74: COCO gives it B (a true positive); the VOC devkit would count it a false positive."""
    lesions = [[0, 0, 10, 10], [2, 0, 12, 10]]
    is_tp, overlap = det.match([[0, 0, 10, 10], [0.5, 0, 10.5, 10]], [0.9, 0.8], lesions)
    assert is_tp.tolist() == [True, True]
    np.testing.assert_allclose(overlap, [1.0, 85 / 115])


def test_nan_or_infinite_detection_scores_are_refused():
    """Before: a NaN score sorted after every other and gave FROC a point at threshold NaN."""
    truth = [np.array([[0, 0, 10, 10]])]
    for bad in (np.nan, np.inf):
        detections = [(np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), np.array([bad, 0.5]))]
        for function in (det.froc, det.average_precision, det.evaluate):
            with pytest.raises(ValueError, match=r"detection scores must be finite .* Received: 1 bad of 2"):
                function(detections, truth)
