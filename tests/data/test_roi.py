"""ROI geometry and normalisation on tiny synthetic images with known answers."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mammo_keras.data import roi
from mammo_keras.errors import DataError


def window_image(shape, window):
    """Ones exactly over `window` (x0, y0, x1, y1), zeros elsewhere."""
    image = np.zeros(shape, np.float32)
    x0, y0, x1, y1 = window
    image[y0:y1, x0:x1] = 1.0
    return image


def test_clip_window_exact():
    assert roi.clip_window(150, 100, 300, 300, (1000, 800)) == roi.Window(0, 0, 300, 250, True)
    assert roi.clip_window(500, 500, 300, 300, (1000, 800)) == roi.Window(350, 350, 650, 650, False)


def test_chougrad_window_centred_on_box():
    # Lesion box centred at (500, 400); the 300 x 300 window is [350, 650) x [250, 550).
    image = window_image((1000, 900), (350, 250, 650, 550))
    out = roi.chougrad_roi(image, (480, 380, 520, 420), gcn=False)
    assert out.shape == (224, 224)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


def test_chougrad_gcn_subtracts_own_mean_only():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (600, 600)).astype(np.float32)
    raw = roi.chougrad_roi(image, (250, 250, 350, 350), gcn=False)
    normalised = roi.chougrad_roi(image, (250, 250, 350, 350))
    assert abs(float(normalised.mean())) < 1e-6
    np.testing.assert_allclose(normalised, raw - raw.mean(), atol=1e-6)
    assert np.isclose(normalised.std(), raw.std(), rtol=1e-5)  # no division by the std


def test_chougrad_rescales_a_clipped_window():
    # Lesion in the top-left corner: the window is clipped to [0, 200) x [0, 200) and re-scaled.
    image = window_image((800, 800), (0, 0, 200, 200))
    out = roi.chougrad_roi(image, (0, 0, 100, 100), gcn=False)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


def by_hand(image, window, size):
    """Crop `window` (x0, y0, x1, y1) and resize it to `size` (rows, cols) with PIL's bilinear filter."""
    x0, y0, x1, y1 = window
    crop = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1], np.float32), mode="F")
    return np.asarray(crop.resize((size[1], size[0]), Image.BILINEAR), np.float32)


RANDOM = np.random.default_rng(0).uniform(0, 1, (1000, 1000)).astype(np.float32)


@pytest.mark.parametrize("box, grown, cut", [
    # A 400 x 400 lesion, r = 300: grown to the 400 px lesion itself, or cut to the centre 300.
    ((400, 400, 800, 800), (400, 400, 800, 800), (450, 450, 750, 750)),
    # A 400 x 100 lesion centred at (300, 350): a square of its longer side, or of r.
    ((100, 300, 500, 400), (100, 150, 500, 550), (150, 200, 450, 500)),
    # A 100 x 450 lesion centred at (650, 325): the longer side is its height.
    ((600, 100, 700, 550), (425, 100, 875, 550), (500, 175, 800, 475)),
])
def test_chougrad_grow_to_fit_takes_the_whole_lesion_else_r(box, grown, cut):
    out = roi.chougrad_roi(RANDOM, box, gcn=False)
    np.testing.assert_allclose(out, by_hand(RANDOM, grown, (224, 224)), atol=1e-6)
    cut_out = roi.chougrad_roi(RANDOM, box, gcn=False, grow_to_fit=False)
    np.testing.assert_allclose(cut_out, by_hand(RANDOM, cut, (224, 224)), atol=1e-6)
    # (The expected windows: the grown one holds the whole lesion, the cut one does not.)
    lesion = window_image(RANDOM.shape, box)
    assert lesion[grown[1]:grown[3], grown[0]:grown[2]].sum() == lesion.sum()
    assert lesion[cut[1]:cut[3], cut[0]:cut[2]].sum() < lesion.sum()


def test_chougrad_grow_to_fit_leaves_small_lesions_at_r():
    box = (450, 460, 550, 540)  # 100 x 80, centre (500, 500): the r = 300 window either way
    expected = by_hand(RANDOM, (350, 350, 650, 650), (224, 224))
    for grow in (True, False):
        np.testing.assert_allclose(roi.chougrad_roi(RANDOM, box, gcn=False, grow_to_fit=grow), expected, atol=1e-6)
    np.testing.assert_allclose(roi.chougrad_roi(RANDOM, box, r=200, gcn=False),
                               by_hand(RANDOM, (400, 400, 600, 600), (224, 224)), atol=1e-6)


# A 100 x 40 (w x h) mass box centred at (200, 180) on a 400 x 400 image.
JL_BOX = (150, 160, 250, 200)


@pytest.mark.parametrize("options, window, resized", [
    ({"context": "fixed"}, (100, 110, 300, 250), (224, 320)),                    # 50 px all around: 200 x 140
    ({"context": "fixed", "padding": 20}, (130, 140, 270, 220), (224, 392)),     # 20 px: 140 x 80
    ({"context": "proportional"}, (100, 140, 300, 220), (224, 560)),             # 2 x the box: 200 x 80
    ({"context": "proportional", "factor": 3.0}, (50, 120, 350, 240), (224, 560)),  # 3 x: 300 x 120
])
def test_jain_levy_context_windows(options, window, resized):
    """Each context option crops its own window: checked against the crop, shorter side to 224 and
    centre square done by hand (the centre square shows only part of a long window: the canvas shows it all)."""
    image = np.random.default_rng(1).uniform(0, 1, (400, 400)).astype(np.float32)
    out = roi.jain_levy_roi(image, JL_BOX, **options)
    expected = by_hand(image, window, resized)
    left = (resized[1] - 224) // 2
    np.testing.assert_allclose(out, expected[:, left:left + 224], atol=1e-6)
    # The training canvas (3 x 224 px here, room for the whole resized window) shows all of it.
    board, shape = roi.jain_levy_canvas(image, JL_BOX, canvas=3.0, **options)
    assert board.shape == (672, 672) and shape == resized
    top, left = (672 - resized[0]) // 2, (672 - resized[1]) // 2
    np.testing.assert_allclose(board[top:top + resized[0], left:left + resized[1]], expected, atol=1e-6)
    assert board.sum() == pytest.approx(expected.sum(), rel=1e-5)  # zeros elsewhere
    # A bright rectangle over exactly that window fills the output (no darker pixel from outside it).
    bright = window_image((400, 400), window) + 1.0  # 2 inside the window, 1 outside
    np.testing.assert_allclose(roi.jain_levy_roi(bright, JL_BOX, **options), 2.0, atol=1e-6)


def test_jain_levy_fixed_and_proportional_differ_where_the_box_is_not_square():
    image = np.random.default_rng(1).uniform(0, 1, (400, 400)).astype(np.float32)
    fixed = roi.jain_levy_roi(image, JL_BOX, context="fixed")
    proportional = roi.jain_levy_roi(image, JL_BOX, context="proportional")
    assert np.abs(fixed - proportional).mean() > 0.1


def test_jain_levy_shorter_side_to_224_then_centre_square():
    # A 200 x 100 (w x h) proportional window: height -> 224, width -> 448, centre 224 columns kept.
    image = np.tile(np.arange(400, dtype=np.float32), (300, 1))  # value = column index
    out = roi.jain_levy_roi(image, (150, 125, 250, 175))  # window x in [100, 300)
    assert out.shape == (224, 224)
    assert 149 < out[:, 0].mean() < 151 and 249 < out[:, -1].mean() < 251


def test_roi_outside_image_names_the_file():
    image = np.zeros((100, 100), np.float32)
    with pytest.raises(DataError, match=r"scan\.png \(lesion L1\): lesion box lies outside the 100x100"):
        roi.chougrad_roi(image, (150, 150, 160, 160), origin="scan.png (lesion L1)")
    with pytest.raises(DataError, match="unknown coordinates"):
        roi.jain_levy_roi(image, (np.nan, 1, 2, 3))
    with pytest.raises(ValueError, match="Received: context='wide'"):
        roi.jain_levy_roi(image, (10, 10, 20, 20), context="wide")


def test_shen_whole_image_size_and_mean_subtraction():
    out = roi.shen_whole_image(np.full((3000, 2000), 7.0, np.float32))
    assert out.shape == (1152, 896)
    np.testing.assert_allclose(out, 7.0)
    stack = np.stack([np.full((4, 4), v, np.float32) for v in (1.0, 2.0, 6.0)])
    mean = roi.mean_image(stack)
    np.testing.assert_array_equal(mean, np.full((4, 4), 3.0, np.float32))
    np.testing.assert_array_equal(roi.subtract_mean(stack, mean)[:, 0, 0], [-2.0, -1.0, 3.0])


def test_to_three_channels():
    grey = np.arange(6, dtype=np.float32).reshape(2, 3)
    rgb = roi.to_three_channels(grey)
    assert rgb.shape == (2, 3, 3)
    np.testing.assert_array_equal(rgb[..., 2], grey)
    assert roi.to_three_channels(grey[..., None]).shape == (2, 3, 3)
