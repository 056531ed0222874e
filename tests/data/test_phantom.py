"""The synthetic phantom: determinism, record table, lesion placement and shape, caching."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from scipy.spatial import ConvexHull

from mammo_keras.data import phantom, read_dataset, records
from mammo_keras.data.imageio import read_image

SMALL = {"n_patients": 5, "images_per_patient": 2, "seed": 3, "image_size": (256, 208)}
TISSUE_LEVEL = 5000  # background renders at ~1000, breast tissue far above 5000


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantom") / "small"
    return folder, phantom.generate(folder, **SMALL)


def _pixels(table):
    return [read_image(path) for path in table.drop_duplicates("image_id")["path"]]


def _solidity(mask: np.ndarray) -> float:
    ys, xs = np.nonzero(mask)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], axis=1) for dx in (0, 1) for dy in (0, 1)])
    return float(mask.sum() / ConvexHull(corners).volume)


def test_same_parameters_give_identical_pixels(small_set, tmp_path):
    folder, table = small_set
    again = phantom.generate(tmp_path / "again", **SMALL)
    for first, second in zip(_pixels(table), _pixels(again)):
        np.testing.assert_array_equal(first, second)
    png = "phantom_P002_R_CC.png"
    assert (folder / png).read_bytes() == (tmp_path / "again" / png).read_bytes()
    other = phantom.generate(tmp_path / "other", **{**SMALL, "seed": 4})
    assert not np.array_equal(_pixels(table)[0], _pixels(other)[0])


def test_record_table_counts_and_columns(small_set):
    folder, table = small_set
    records.validate(table)
    summary = records.summary(table)
    assert summary["images"] == 10 and summary["patients"] == 5 and summary["rows"] == 10
    assert summary["images_by_pathology"] == {"benign": 4, "malignant": 4, "normal": 2}
    assert summary["lesions_by_abnormality"] == {"calcification": 4, "mass": 4}
    assert summary["images_by_laterality"] == {"L": 5, "R": 5}
    assert set(table["source"]) == {"phantom"} and table["synthetic"].tolist() == [True] * 10
    assert table.groupby("patient_id")["image_id"].apply(sorted).loc["phantom_P003"] == [
        "phantom_P003_L_CC", "phantom_P003_R_CC"]
    assert table["path"].iloc[0] == str(folder.resolve() / f"{table['image_id'].iloc[0]}.png")
    shapes = dict(zip(zip(table["abnormality"], table["pathology"]), table["shape"]))
    assert shapes[("mass", "malignant")] == "spiculated"
    assert shapes[("calcification", "benign")] == "coarse"
    assert shapes[("calcification", "malignant")] == "pleomorphic"
    assert shapes[("normal", "normal")] == ""
    with Image.open(table["path"].iloc[0]) as image:
        assert image.mode == "I;16" and image.size == (208, 256)


def test_masses_only_schedule():
    kinds = phantom.class_schedule(10, seed=0, calcifications=False)
    assert sorted(kinds) == sorted([("mass", "benign")] * 4 + [("mass", "malignant")] * 4
                                   + [("normal", "normal")] * 2)


def test_lesion_boxes_match_masks_and_lie_inside_the_breast(small_set):
    _, table = small_set
    lesions = records.lesions(table)
    assert len(lesions) == 8
    for row in lesions.itertuples():
        pixels = read_image(row.path)
        mask = read_image(row.mask_path) > 0
        geometry = records.mask_geometry(mask)
        assert (geometry["x0"], geometry["y0"], geometry["x1"], geometry["y1"]) == (
            row.x0, row.y0, row.x1, row.y1)
        assert 0 <= row.x0 < row.x1 <= 208 and 0 <= row.y0 < row.y1 <= 256
        box = pixels[int(row.y0):int(row.y1), int(row.x0):int(row.x1)]
        assert box.min() > TISSUE_LEVEL, row.lesion_id
        assert len(row.contour) >= 8


def test_benign_masses_are_rounder_than_malignant():
    def solidities(pathology):
        return [_solidity(phantom.render_image(
            1, index, laterality="L", view="CC", abnormality="mass", pathology=pathology,
            image_size=(256, 208)).lesions[0].mask) for index in range(8)]

    benign, malignant = solidities("benign"), solidities("malignant")
    assert min(benign) > 0.9
    assert max(malignant) < 0.65
    assert min(benign) - max(malignant) > 0.3


def test_malignant_calcifications_have_more_specks():
    def speck_counts(pathology):
        counts = []
        for index in range(8):
            image = phantom.render_image(1, index, laterality="R", view="MLO",
                                         abnormality="calcification", pathology=pathology,
                                         image_size=(256, 208))
            lesion = image.lesions[0]
            x, y = lesion.offset
            crop = image.pixels[y:y + lesion.mask.shape[0], x:x + lesion.mask.shape[1]]
            counts.append(ndimage.label(ndimage.white_tophat(crop.astype(float), size=9) > 6000)[1])
        return counts

    benign, malignant = speck_counts("benign"), speck_counts("malignant")
    assert max(benign) < min(malignant)
    assert np.median(malignant) >= 2 * np.median(benign)


def test_second_call_reuses_files(small_set):
    folder, table = small_set
    before = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}
    again = phantom.generate(folder, **SMALL)
    after = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}
    assert before == after
    assert len(before) == 10 + 8 + 2  # images, masks, records.csv, manifest.json
    assert again.drop(columns="contour").equals(table.drop(columns="contour"))
    assert again["contour"].tolist() == table["contour"].tolist()


def test_read_caches_under_a_parameter_hash(tmp_path):
    options = {"n_patients": 1, "images_per_patient": 1, "image_size": (128, 104)}
    table = phantom.read(tmp_path, **options)
    folder = tmp_path / phantom.parameter_hash(phantom.parameters(**options))
    assert (folder / phantom.MANIFEST).is_file()
    assert table["path"].iloc[0].startswith(str(folder.resolve()))
    via_registry = read_dataset("phantom", tmp_path, **options)
    assert via_registry["image_id"].tolist() == table["image_id"].tolist()
    assert phantom.parameter_hash(phantom.parameters(seed=1)) != phantom.parameter_hash(
        phantom.parameters(seed=2))


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="Received: \\['colour'\\]"):
        phantom.parameters(colour=True)
    with pytest.raises(ValueError, match="images_per_patient=5"):
        phantom.parameters(images_per_patient=5)
    with pytest.raises(ValueError, match="image_size=\\(64, 64\\)"):
        phantom.parameters(image_size=(64, 64))


@pytest.mark.parametrize("laterality,view", phantom.VIEW_ORDER)
def test_every_lesion_fits_inside_the_breast_at_the_smallest_size(laterality, view):
    for index, (abnormality, pathology) in enumerate(phantom.KINDS_WITH_CALCIFICATIONS[:4] * 3):
        image = phantom.render_image(0, index, laterality=laterality, view=view,
                                     abnormality=abnormality, pathology=pathology,
                                     image_size=phantom.MIN_IMAGE_SIZE)
        (lesion,) = image.lesions
        mask = lesion.full_mask(phantom.MIN_IMAGE_SIZE)
        assert mask.any() and image.breast[mask].all()
        x, y = lesion.offset
        assert image.breast[y:y + lesion.mask.shape[0], x:x + lesion.mask.shape[1]].all()
    chest_wall = image.breast[:, 0] if laterality == "L" else image.breast[:, -1]
    assert chest_wall.any() and not image.breast[0, :].all()
