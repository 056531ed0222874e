"""Hostile dataset files found by an audit: each gives a DataError naming the file (and row), so
`--skip-bad` can skip it, and nothing is read or written outside the data and output folders."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cbis_fixtures import CSV_NAME, write_cbis
from mammo_keras.data import bcdr, cbis_ddsm
from mammo_keras.data.prepare import _item_file, item_file_name, prepare
from mammo_keras.errors import DataError
from test_bcdr import IMAGE_HEADER, OUTLINE_HEADER, OUTLINE_ROWS, _write_tif


def _bcdr(tmp_path: Path, rows: list[str]) -> Path:
    """A one-distribution BCDR root whose outlines CSV holds `rows` (their TIFFs written where they lie)."""
    folder = tmp_path / "data" / "BCDR-F03"
    for row in rows:
        _write_tif((folder / row.split(",")[6].strip()).resolve())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bcdr_f03_outlines.csv").write_text("\n".join([OUTLINE_HEADER, *rows]) + "\n")
    return tmp_path / "data"


def _outline(row: str, **changes: str) -> str:
    """An outline row of test_bcdr with columns replaced by name."""
    names = OUTLINE_HEADER.split(",")
    fields = row.split(",")
    for name, value in changes.items():
        fields[names.index(name)] = value
    return ",".join(fields)


def test_bcdr_image_filename_outside_the_csv_folder_is_refused(tmp_path):
    evil = _outline(OUTLINE_ROWS[0], image_filename=" ../../outside/evil.tif")
    root = _bcdr(tmp_path, [OUTLINE_ROWS[0], evil])
    assert (tmp_path / "outside" / "evil.tif").is_file()  # there to be read, were the path followed
    for missing in ("error", "skip"):
        with pytest.raises(DataError) as error:
            bcdr.read(root, missing=missing)
        assert error.value.path == str(root / "BCDR-F03" / "bcdr_f03_outlines.csv") and error.value.line == 3
        assert "must name a file inside the CSV's folder" in str(error.value)


def test_bcdr_image_filename_may_step_back_inside_the_folder(tmp_path):
    inside = _outline(OUTLINE_ROWS[0], image_filename=" patient_3/../patient_3/study_3/img_3_3_1_LCC.tif")
    table = bcdr.read(_bcdr(tmp_path, [inside]))
    assert Path(table.iloc[0]["path"]) == (tmp_path / "data/BCDR-F03/patient_3/study_3/img_3_3_1_LCC.tif").resolve()


@pytest.mark.parametrize("image_id", ["../../../../tmp/x/evil.tif", "bcdr_f03/../../x", "..", "a\\..\\b",
                                      "/abs/path", "c:evil", "x" * 400, "a%2Fb"])
def test_item_files_stay_in_the_items_folder(tmp_path, image_id):
    path = _item_file(tmp_path, image_id)
    assert path.parent == tmp_path / "items" and path.name.endswith(".npz")
    assert "/" not in path.name and "\\" not in path.name and len(path.name.encode()) <= 255


def test_item_file_names_are_distinct_and_plain_ids_keep_theirs():
    assert item_file_name("mdb001") == "mdb001.npz"
    assert item_file_name("Mass-Training_P_00001_LEFT_CC") == "Mass-Training_P_00001_LEFT_CC.npz"
    ids = ["a/b", "a%2Fb", "a%252Fb", "a_b", "a\\b", "a:b"]
    assert len({item_file_name(image_id) for image_id in ids}) == len(ids)


def test_bcdr_prepare_writes_flat_item_files(tmp_path):
    root = _bcdr(tmp_path, OUTLINE_ROWS)
    out = tmp_path / "out"
    prepare("bcdr", bcdr.read(root), out, "shen", root=root, options={"height": 16, "width": 16},
            progress=False, contact_sheet=False)
    items = sorted(path.name for path in (out / "items").iterdir())
    assert items == ["bcdr_f03%2Fpatient_3%2Fstudy_3%2Fimg_3_3_1_LCC.tif.npz",
                     "bcdr_f03%2Fpatient_3%2Fstudy_3%2Fimg_3_3_1_LO.tif.npz",
                     "bcdr_f03%2Fpatient_7%2Fstudy_9%2Fimg_7_9_1_RCC.tif.npz"]


def _cbis_cell(root: Path, column: str, value: str) -> Path:
    """Set `column` of the first row of the mass training CSV; returns the CSV."""
    path = root / CSV_NAME[("mass", "train")]
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    rows[1][rows[0].index(column)] = value
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


@pytest.fixture(scope="module")
def cbis_root(tmp_path_factory):
    return write_cbis(tmp_path_factory.mktemp("cbis_clean"), trap=False)


@pytest.mark.parametrize("column", ["image file path", "ROI mask file path"])
def test_cbis_paths_with_dot_dot_are_refused(cbis_root, tmp_path, column):
    import shutil

    root = Path(shutil.copytree(cbis_root, tmp_path / "cbis"))
    path = _cbis_cell(root, column, "../../../etc/1.2.3/1.2.4/000000.dcm")
    for missing in ("error", "keep"):
        with pytest.raises(DataError) as error:
            cbis_ddsm.read(root, abnormality="mass", missing=missing)
        assert error.value.path == str(path) and error.value.line == 2
        assert "without '.' or '..' parts" in str(error.value)


@pytest.mark.parametrize("column", ["assessment", "breast_density", "subtlety"])
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "2.5"])
def test_cbis_numbers_that_are_not_integers_name_the_row(cbis_root, tmp_path, column, value):
    import shutil

    root = Path(shutil.copytree(cbis_root, tmp_path / "cbis"))
    path = _cbis_cell(root, column, value)
    with pytest.raises(DataError) as error:
        cbis_ddsm.read(root, abnormality="mass")
    assert error.value.path == str(path) and error.value.line == 2 and "must be an integer" in str(error.value)


@pytest.mark.parametrize("code", ["inf", "nan", "7", "0", "1.5", "x"])
def test_bcdr_unknown_image_view_names_the_row(tmp_path, code):
    root = _bcdr(tmp_path, [OUTLINE_ROWS[0], _outline(OUTLINE_ROWS[2], image_view=code)])
    with pytest.raises(DataError) as error:
        bcdr.read(root)
    assert error.value.line == 3 and "image_view must be a code 1-4" in str(error.value)


def test_bcdr_image_list_codes_inf_are_not_cc_or_mlo(tmp_path):
    folder = tmp_path / "BCDR-DN01"
    _write_tif(folder / "patient_1/study_1/img_1_1_1_X.tif")
    (folder / "bcdr_dn01_img.csv").write_text(IMAGE_HEADER + "\n1,1,1, patient_1/study_1/img_1_1_1_X.tif, ,inf,40,1\n")
    table = bcdr.read(tmp_path)
    assert (table.iloc[0]["laterality"], table.iloc[0]["view"]) == ("", "")


def _bad_dicom(path: Path, **tags) -> Path:
    """A valid small DICOM with `tags` set (written as given; DS values may be malformed text)."""
    from dicom_fixtures import write_dicom

    write_dicom(path, np.arange(64, dtype=np.uint16).reshape(8, 8), bits_stored=12,
                extra={key: value for key, value in tags.items() if value != "x.y"})
    if "x.y" in tags.values():  # pydicom will not write an invalid DS: patch a valid one of the same length
        import pydicom

        dataset = pydicom.dcmread(path)
        for key, value in tags.items():
            if value == "x.y":
                setattr(dataset, key, "1.5")
        dataset.save_as(path)
        path.write_bytes(path.read_bytes().replace(b"1.5 ", b"x.y "))
    return path


BAD_DICOM_TAGS = {
    "window_width_0": ({"WindowCenter": 100, "WindowWidth": 0}, "WindowWidth must be at least 1"),
    "window_width_negative": ({"WindowCenter": 100, "WindowWidth": -4}, "WindowWidth must be at least 1"),
    "window_centre_inf": ({"WindowCenter": "inf", "WindowWidth": 10}, "WindowCenter must be a finite number"),
    "slope_text": ({"RescaleSlope": "x.y", "RescaleIntercept": 0}, "RescaleSlope must be a finite number"),
    "slope_nan": ({"RescaleSlope": "nan", "RescaleIntercept": 0}, "RescaleSlope must be a finite number"),
    "intercept_inf": ({"RescaleSlope": 1, "RescaleIntercept": "inf"}, "RescaleIntercept must be a finite number"),
    "slope_0": ({"RescaleSlope": 0, "RescaleIntercept": 0}, "RescaleSlope must not be 0"),
}


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
@pytest.mark.parametrize("name", sorted(BAD_DICOM_TAGS))
def test_dicom_rescale_and_window_tags_name_the_file_and_tag(tmp_path, name):
    from mammo_keras.app.predict import read_scan
    from mammo_keras.data.dicom import read_dicom

    tags, problem = BAD_DICOM_TAGS[name]
    path = _bad_dicom(tmp_path / f"{name}.dcm", **tags)
    for read in (lambda: read_dicom(path), lambda: read_dicom(path, normalise=True), lambda: read_scan(path)):
        with pytest.raises(DataError, match=problem) as error:
            read()
        assert error.value.path == str(path)
    if "Window" in name:  # the window is the only problem: without it the file reads
        assert read_dicom(path, apply_voi=False).shape == (8, 8)


def test_prepare_skip_bad_skips_a_dicom_with_a_bad_window(cbis_root, tmp_path):
    import shutil

    import pydicom

    root = Path(shutil.copytree(cbis_root, tmp_path / "cbis"))
    table = cbis_ddsm.read(root, abnormality="mass")
    bad = Path(table.iloc[0]["path"])
    dataset = pydicom.dcmread(bad)
    dataset.WindowCenter, dataset.WindowWidth = 100, 0
    dataset.save_as(bad)
    with pytest.raises(DataError, match="WindowWidth must be at least 1"):
        prepare("cbis_ddsm", table, tmp_path / "strict", "chougrad", root=root, options={"r": 16, "size": 16},
                progress=False, contact_sheet=False)
    report = prepare("cbis_ddsm", table, tmp_path / "out", "chougrad", root=root, options={"r": 16, "size": 16},
                     skip_bad=True, progress=False, contact_sheet=False)
    assert [entry["path"] for entry in report.skipped] == [str(bad)] and report.images == len(set(table["image_id"])) - 1


@pytest.fixture()
def mias_folder(tmp_path):
    from test_mias import write_folder

    return write_folder(tmp_path / "mias")


def _prepare_mias(folder: Path, out: Path, **kw):
    from mammo_keras.data import mias

    return prepare("mias", mias.read(folder), out, "chougrad", root=folder, progress=False,
                   contact_sheet=False, **kw)


@pytest.mark.parametrize("damage", ["empty", "truncated", "not_npz"])
def test_a_damaged_item_file_is_cut_again(mias_folder, tmp_path, damage):
    out = tmp_path / "out"
    first = _prepare_mias(mias_folder, out)
    item = out / "items" / "mdb002.npz"
    data = item.read_bytes()
    item.write_bytes({"empty": b"", "truncated": data[:len(data) // 2], "not_npz": b"{bad"}[damage])
    with pytest.warns(UserWarning, match="mdb002.npz: damaged item file; it is cut again"):
        again = _prepare_mias(mias_folder, out)
    assert again.resumed_images == again.images - 1 and again.data_fingerprint == first.data_fingerprint
    assert item.read_bytes() == data


def test_an_item_damaged_inside_its_arrays_is_named_while_stacking(mias_folder, tmp_path):
    out = tmp_path / "out"
    _prepare_mias(mias_folder, out)
    item = max((out / "items").iterdir(), key=lambda path: path.stat().st_size)  # one with lesions
    data = bytearray(item.read_bytes())
    start = data.index(b"arrays.npy") + 200  # inside the stored array's bytes: the CRC no longer matches
    data[start:start + 16] = bytes(b ^ 0xFF for b in data[start:start + 16])
    item.write_bytes(bytes(data))
    (out / "prepare.json").unlink()  # so that the stack is rebuilt from the items
    with pytest.raises(DataError) as error:
        _prepare_mias(mias_folder, out)
    assert error.value.path == str(item) and "damaged item file" in str(error.value)


@pytest.mark.parametrize("text", ["{bad", "", "\xff\xfe"])
def test_a_damaged_recipe_is_named_and_everything_is_cut_again(mias_folder, tmp_path, text):
    out = tmp_path / "out"
    first = _prepare_mias(mias_folder, out)
    (out / "recipe.json").write_bytes(text.encode("latin-1"))
    with pytest.warns(UserWarning, match="recipe.json: damaged"):
        again = _prepare_mias(mias_folder, out)
    assert again.resumed_images == 0 and again.data_fingerprint == first.data_fingerprint
    assert json.loads((out / "recipe.json").read_text())["task"] == "chougrad"


def test_a_prepare_that_cuts_no_item_fails_and_leaves_no_dataset(mias_folder, tmp_path):
    from mammo_keras.data.prepare import load_prepared

    out = tmp_path / "out"
    _prepare_mias(mias_folder, out)
    assert len(load_prepared(out)[1])
    for image in mias_folder.rglob("*.pgm"):
        image.write_bytes(b"P5\n")  # every image unreadable
    with pytest.raises(DataError) as error:  # other options: the items are cut again, and all fail
        _prepare_mias(mias_folder, out, skip_bad=True, options={"r": 100})
    assert error.value.path == str(out)
    assert f"0 items cut from {mias_folder} for task 'chougrad'" in str(error.value) and "skipped" in str(error.value)
    for name in ("images.npy", "index.csv", "prepare.json"):
        assert not (out / name).exists()
    with pytest.raises(DataError, match="prepared file missing"):
        load_prepared(out)


@pytest.mark.parametrize("name, content, problem", [
    ("index.csv", b"\n", "empty or damaged index"),
    ("index.csv", b"", "empty or damaged index"),
    ("index.csv", b"item_id,label\n", "the index lists no items"),
    ("index.csv", b'item_id,label\n"a,1\n', "empty or damaged index"),
    ("images.npy", b"", "not a readable .npy stack"),
    ("images.npy", b"\x93NUMPY{bad", "not a readable .npy stack"),
])
def test_load_prepared_names_an_empty_or_damaged_file(tmp_path, name, content, problem):
    from mammo_keras.data.prepare import load_prepared

    np.save(tmp_path / "images.npy", np.zeros((1, 2, 2), np.float32))
    (tmp_path / "index.csv").write_text("item_id,label\na,1\n")
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=problem) as error:
        load_prepared(tmp_path)
    assert error.value.path == str(tmp_path / name)


def test_a_1_bit_png_reads_white_as_1(tmp_path):
    from mammo_keras.data.imageio import read_normalised

    pixels = np.zeros((4, 6), bool)
    pixels[1:3, 2:5] = True
    Image.fromarray(pixels).convert("1").save(tmp_path / "mask.png")
    assert Image.open(tmp_path / "mask.png").mode == "1"
    np.testing.assert_array_equal(read_normalised(tmp_path / "mask.png"), pixels.astype(np.float32))


@pytest.mark.parametrize("mode, values", [("P", [0, 255]), ("LA", [0, 255]), ("RGB", [0, 255]), ("I;16", [0, 65535])])
def test_other_modes_scale_by_their_range(tmp_path, mode, values):
    from mammo_keras.data.imageio import read_normalised

    grey = np.array([values * 3], np.uint16 if mode == "I;16" else np.uint8)
    image = Image.fromarray(grey) if mode == "I;16" else Image.fromarray(grey).convert(mode)
    image.save(tmp_path / "x.png")
    np.testing.assert_allclose(read_normalised(tmp_path / "x.png"), [[0.0, 1.0] * 3], atol=1e-6)


def test_float_tiffs_in_0_1_are_kept_and_others_refused(tmp_path):
    from mammo_keras.app.predict import read_scan
    from mammo_keras.data.imageio import read_image, read_normalised

    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "half.tif")
    np.testing.assert_array_equal(read_normalised(tmp_path / "half.tif"), np.full((4, 4), 0.5, np.float32))
    Image.fromarray(np.full((4, 4), 300.0, np.float32)).save(tmp_path / "big.tif")
    assert read_image(tmp_path / "big.tif").max() == 300.0  # the file's own scale, as documented
    for read in (read_normalised, read_scan):
        with pytest.raises(DataError, match=r"float pixels must lie in \[0, 1\].*\[300, 300\]") as error:
            read(tmp_path / "big.tif")
        assert error.value.path == str(tmp_path / "big.tif")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_pixels_are_refused(tmp_path, value):
    from mammo_keras.data.imageio import read_image, read_normalised

    pixels = np.full((4, 4), 0.5, np.float32)
    pixels[1, 1] = value
    Image.fromarray(pixels).save(tmp_path / "bad.tif")
    for read in (read_image, read_normalised):
        with pytest.raises(DataError, match="NaN or infinite") as error:
            read(tmp_path / "bad.tif")
        assert error.value.path == str(tmp_path / "bad.tif")


def test_prepare_skip_bad_skips_a_nan_image(mias_folder, tmp_path):
    from mammo_keras.data import mias
    from mammo_keras.data.prepare import load_prepared

    table = mias.read(mias_folder)
    bad = Path(table[table["abnormality"] != "normal"].iloc[0]["path"])
    nan = tmp_path / "nan.tif"
    Image.fromarray(np.full((1024, 1024), np.nan, np.float32)).save(nan)
    table.loc[table["path"] == str(bad), "path"] = str(nan)
    report = prepare("mias", table, tmp_path / "out", "chougrad", root=mias_folder, skip_bad=True,
                     progress=False, contact_sheet=False)
    assert [entry["path"] for entry in report.skipped] == [str(nan)]
    assert np.isfinite(load_prepared(tmp_path / "out")[0]).all()


@pytest.mark.parametrize("suffix", ["tif", "gif"])
def test_multi_page_images_are_refused_as_multi_frame_dicom_is(tmp_path, suffix):
    from mammo_keras.data.imageio import header_size, read_image, read_normalised

    pages = [Image.fromarray(np.full((4, 4), value, np.uint8)) for value in (10, 200)]
    path = tmp_path / f"pages.{suffix}"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    assert header_size(path) == (4, 4, 2)
    for read in (read_image, read_normalised):
        with pytest.raises(DataError, match="multi-page or animated images are not supported. Received: 2 frames"):
            read(path)
