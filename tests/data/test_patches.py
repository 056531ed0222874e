"""Shen S1/S10 patch sampling and Coccomini baseline pairs on small synthetic arrays."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammo_keras.data import patches
from mammo_keras.errors import DataError

HEIGHT, WIDTH, PATCH = 300, 260, 64


def _image() -> np.ndarray:
    """Tissue (values 1000+) everywhere except a dark 40-column strip on the right."""
    image = 1000.0 + np.arange(HEIGHT * WIDTH, dtype=np.float64).reshape(HEIGHT, WIDTH) % 997
    image[:, WIDTH - 40:] = 0.0
    return image


def _lesions(*boxes, kinds=(("mass", "malignant"),)) -> pd.DataFrame:
    rows = []
    for number, box in enumerate(boxes):
        abnormality, pathology = kinds[number % len(kinds)]
        rows.append({"lesion_id": f"L{number}", "abnormality": abnormality, "pathology": pathology,
                     "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3]})
    return pd.DataFrame(rows)


def _intersection(a, b) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return max(width, 0) * max(height, 0)


def test_shen_labels_follow_the_paper_order():
    assert patches.SHEN_CLASSES[0] == "background"
    assert [patches.shen_label(a, p) for a, p in [("calcification", "benign"),
            ("calcification", "malignant"), ("mass", "benign"), ("mass", "malignant")]] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="Received: \\('distortion', 'benign'\\)"):
        patches.shen_label("distortion", "benign")


def test_overlap_ratio_clips_large_rois_to_the_patch_window():
    assert patches.overlap_ratio((25, 25, 75, 75), (0, 0, 100, 100), 50) == 1.0
    assert patches.overlap_ratio((50, 25, 100, 75), (0, 0, 100, 100), 50) == 0.5
    assert patches.overlap_ratio((15, 10, 65, 60), (10, 10, 20, 20), 50) == 0.5
    assert patches.overlap_ratio((100, 100, 150, 150), (10, 10, 20, 20), 50) == 0.0


def test_s1_centres_one_patch_per_roi_and_adds_background():
    image = _image()
    result = patches.sample_shen_patches(
        image, _lesions((100, 120, 140, 170)), patch_size=PATCH, per_roi=1,
        rng=np.random.default_rng(0))
    assert [p.label for p in result] == [4, 0]
    lesion, background = result
    assert lesion.box == (88, 113, 152, 177) and lesion.lesion_id == "L0"
    assert ((lesion.box[0] + lesion.box[2]) / 2, (lesion.box[1] + lesion.box[3]) / 2) == (120, 145)
    np.testing.assert_array_equal(lesion.array, image[113:177, 88:152])
    assert background.array.shape == (PATCH, PATCH) and background.lesion_id == ""
    assert _intersection(background.box, (100, 120, 140, 170)) == 0
    assert background.box[2] <= WIDTH - 40 + PATCH * 0.25


def test_patches_at_the_border_are_shifted_inside():
    image = _image()
    corner = patches.sample_shen_patches(image, _lesions((0, 0, 10, 10), (250, 290, 260, 300)),
                                         patch_size=PATCH, rng=np.random.default_rng(0))
    assert corner[0].box == (0, 0, PATCH, PATCH)
    assert corner[1].box == (WIDTH - PATCH, HEIGHT - PATCH, WIDTH, HEIGHT)
    assert all(p.array.shape == (PATCH, PATCH) for p in corner)


def test_s10_patches_keep_the_overlap_and_avoid_lesions_in_background():
    image = _image()
    boxes = [(30, 40, 70, 90), (120, 150, 220, 260)]  # the second is larger than the patch
    lesions = _lesions(*boxes, kinds=(("calcification", "benign"), ("mass", "benign")))
    result = patches.sample_shen_patches(image, lesions, patch_size=PATCH, per_roi=10,
                                         min_overlap=0.9, rng=np.random.default_rng(7))
    assert len(result) == 40
    assert [p.label for p in result[:20]] == [1] * 10 + [3] * 10
    assert [p.label for p in result[20:]] == [0] * 20
    for patch in result[:20]:
        roi = boxes[int(patch.lesion_id[1])]
        assert patches.overlap_ratio(patch.box, roi, PATCH) >= 0.9
    assert len({p.box for p in result[:10]}) > 1
    tissue = patches.tissue_mask(image)
    for patch in result[20:]:
        assert all(_intersection(patch.box, roi) == 0 for roi in boxes)
        x0, y0, x1, y1 = patch.box
        assert tissue[y0:y1, x0:x1].mean() >= 0.75
        np.testing.assert_array_equal(patch.array, image[y0:y1, x0:x1])
    again = patches.sample_shen_patches(image, lesions, patch_size=PATCH, per_roi=10,
                                        rng=np.random.default_rng(7))
    assert [p.box for p in again] == [p.box for p in result]


def test_no_background_room_warns_and_normal_images_give_nothing():
    image = _image()
    everywhere = _lesions((0, 0, WIDTH, HEIGHT))
    with pytest.warns(UserWarning, match="scan.png: no background patch"):
        result = patches.sample_shen_patches(image, everywhere, patch_size=PATCH,
                                             rng=np.random.default_rng(0), origin="scan.png")
    assert [p.label for p in result] == [4]
    normal = pd.DataFrame([{"lesion_id": "", "abnormality": "normal", "pathology": "normal",
                            "x0": np.nan, "y0": np.nan, "x1": np.nan, "y1": np.nan}])
    assert patches.sample_shen_patches(image, normal, patch_size=PATCH,
                                       rng=np.random.default_rng(0)) == []


def test_background_patches_of_a_normal_image_lie_in_the_breast():
    """`sample_background_patches` with no lesion boxes (a normal breast): the S10 background rule alone."""
    image = _image()
    tissue = patches.tissue_mask(image)
    result = patches.sample_background_patches(image, [], count=6, patch_size=PATCH, rng=np.random.default_rng(3))
    assert len(result) == 6 and {p.label for p in result} == {0} and {p.lesion_id for p in result} == {""}
    for patch in result:
        x0, y0, x1, y1 = patch.box
        assert (x1 - x0, y1 - y0) == (PATCH, PATCH) and x0 >= 0 and y0 >= 0 and x1 <= WIDTH and y1 <= HEIGHT
        assert tissue[y0:y1, x0:x1].mean() >= 0.75
        np.testing.assert_array_equal(patch.array, image[y0:y1, x0:x1])
    # what sample_shen_patches draws for its background is this function's draw, with the same generator state
    boxes = [(30, 40, 70, 90)]
    lesions = _lesions(*boxes)
    shen = patches.sample_shen_patches(image, lesions, patch_size=PATCH, per_roi=1, rng=np.random.default_rng(5))
    rng = np.random.default_rng(5)
    alone = patches.sample_background_patches(image, boxes, count=1, patch_size=PATCH, rng=rng)
    assert [p.box for p in shen[1:]] == [p.box for p in alone]
    assert patches.sample_background_patches(image, [], count=0, patch_size=PATCH, rng=rng) == []
    with pytest.warns(UserWarning, match="dark.png: no background patch"):
        assert patches.sample_background_patches(np.zeros((100, 100)), [], count=3, patch_size=PATCH, rng=rng,
                                                 origin="dark.png") == []


def test_roi_outside_the_image_names_file_and_lesion():
    with pytest.raises(DataError, match="scan.png: lesion 'L0' box \\(250.0, 10.0, 290.0, 50.0\\)"):
        patches.sample_shen_patches(_image(), _lesions((250, 10, 290, 50)), patch_size=PATCH,
                                    rng=np.random.default_rng(0), origin="scan.png")
    with pytest.raises(DataError, match="scan.png"):
        patches.baseline_pair(_image(), (-20, 10, 30, 50), origin="scan.png")


def test_background_positions_exclude_every_overlapping_top_left():
    image = np.ones((20, 20))
    image[0, 0] = 0.0
    positions = patches.background_positions(image, [(5, 5, 8, 8)], patch_size=4, min_tissue=0.5)
    allowed = {(int(x), int(y)) for x, y in positions}
    assert (1, 1) in allowed and (2, 2) not in allowed and (8, 5) in allowed and (7, 7) not in allowed
    assert len(allowed) == 17 * 17 - 6 * 6  # x and y in 2..7 overlap [5, 8)


def test_scale_geometry_to_shen_size():
    table = pd.DataFrame([{"x0": 100.0, "y0": 300.0, "x1": 300.0, "y1": 600.0, "cx": 200.0,
                           "cy": 450.0, "radius": 50.0, "contour": [(100.0, 300.0), (300.0, 600.0)]}])
    scale_x, scale_y = patches.resize_factors((3000, 2000))
    assert (scale_x, scale_y) == (896 / 2000, 1152 / 3000)
    scaled = patches.scale_geometry(table, scale_x=0.5, scale_y=0.25)
    corners = scaled.loc[0, ["x0", "y0", "x1", "y1", "cx", "cy"]].tolist()
    assert corners == [50, 75, 150, 150, 100, 112.5]
    assert scaled.loc[0, "radius"] == pytest.approx(50 * np.sqrt(0.125))
    assert scaled.loc[0, "contour"] == [(50.0, 75.0), (150.0, 150.0)]
    assert table.loc[0, "x0"] == 100.0


def test_resize_nearest_uses_opencv_indexing():
    grid = np.arange(36).reshape(6, 6)
    np.testing.assert_array_equal(patches.resize_nearest(grid, 4), grid[[0, 1, 3, 4]][:, [0, 1, 3, 4]])
    np.testing.assert_array_equal(patches.resize_nearest(grid[:2, :2], 4),
                                  [[0, 0, 1, 1], [0, 0, 1, 1], [6, 6, 7, 7], [6, 6, 7, 7]])


def test_baseline_box_is_adjacent_without_overlap():
    tissue = np.zeros((200, 200), dtype=bool)
    tissue[:, 80:] = True
    box = (50, 60, 80, 100)
    assert patches.baseline_box(tissue.shape, box, tissue=tissue) == (80, 60, 110, 100)
    tissue[:] = True
    seen = {patches.baseline_box(tissue.shape, box, tissue=tissue, rng=np.random.default_rng(s))
            for s in range(30)}
    assert seen == {(20, 60, 50, 100), (80, 60, 110, 100), (50, 20, 80, 60), (50, 100, 80, 140)}
    for other in seen:
        assert _intersection(other, box) == 0
        touches_x = other[0] == box[2] or other[2] == box[0]
        touches_y = other[1] == box[3] or other[3] == box[1]
        assert touches_x != touches_y


def test_baseline_pair_crops_and_resizes_both_patches():
    image = _image()
    pair = patches.baseline_pair(image, (100.0, 100.0, 130.0, 145.0), size=150)
    abnormal, baseline = pair
    assert abnormal.shape == baseline.shape == (150, 150)
    np.testing.assert_array_equal(abnormal, patches.resize_nearest(image[100:145, 100:130], 150))
    tissue = patches.tissue_mask(image)
    found = patches.baseline_box(image.shape, (100, 100, 130, 145), tissue=tissue)
    x0, y0, x1, y1 = found
    np.testing.assert_array_equal(baseline, patches.resize_nearest(image[y0:y1, x0:x1], 150))


def test_baseline_pair_is_none_when_nothing_fits():
    image = _image()
    assert patches.baseline_pair(image, (10, 10, 200, 290)) is None
    assert patches.baseline_pair(image, (225, 100, 250, 130), min_tissue=0.99) is None


def test_phantom_image_gives_s10_patches_inside_the_breast(tmp_path):
    from mammo_keras.data import phantom
    from mammo_keras.data.imageio import read_image

    table = phantom.generate(tmp_path, n_patients=2, images_per_patient=2, seed=5,
                             image_size=(256, 208))
    lesion_rows = table[table["abnormality"] != "normal"]
    row = lesion_rows.iloc[0]
    image = read_image(row["path"])
    result = patches.sample_shen_patches(image, table[table["image_id"] == row["image_id"]],
                                         patch_size=48, per_roi=10, rng=np.random.default_rng(1),
                                         origin=row["path"])
    assert len(result) == 20
    assert {p.label for p in result[:10]} == {patches.shen_label(row["abnormality"], row["pathology"])}
    for patch in result[10:]:
        x0, y0, x1, y1 = patch.box
        assert (image[y0:y1, x0:x1] > 5000).mean() >= 0.75
        assert _intersection(patch.box, (row["x0"], row["y0"], row["x1"], row["y1"])) == 0
    pairs = [patches.baseline_pair(read_image(r.path), (r.x0, r.y0, r.x1, r.y1))
             for r in lesion_rows.itertuples()]
    assert all(pair is not None and pair[0].shape == (150, 150) for pair in pairs)
