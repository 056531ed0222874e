"""ROI geometry and normalisation on tiny synthetic images with known answers."""
from __future__ import annotations

import numpy as np
import pytest

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


def test_chougrad_grows_to_fit_large_lesions():
    image = window_image((1200, 1200), (400, 400, 800, 800))
    out = roi.chougrad_roi(image, (400, 400, 800, 800), gcn=False)  # 400 px lesion, r = 300
    np.testing.assert_allclose(out, 1.0, atol=1e-6)
    cut = roi.chougrad_roi(image, (400, 400, 800, 800), gcn=False, grow_to_fit=False)
    np.testing.assert_allclose(cut, 1.0, atol=1e-6)  # the 300 window lies inside the lesion


@pytest.mark.parametrize("context, window", [
    ("fixed", (50, 50, 250, 250)),           # box (100,100,200,200) + 50 px all around
    ("proportional", (50, 50, 250, 250)),    # 2 x the 100 px box, same centre
])
def test_jain_levy_context_windows(context, window):
    image = window_image((500, 500), window)
    out = roi.jain_levy_roi(image, (100, 100, 200, 200), context=context)
    assert out.shape == (224, 224)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


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
