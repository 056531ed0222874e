"""DICOM and raster reading: bit depths, RLE, MONOCHROME1, modality/VOI LUTs and bad files."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import RLELossless

from dicom_fixtures import write_dicom
from mammo_keras.data.dicom import read_dicom, read_header
from mammo_keras.data.imageio import read_image, read_normalised
from mammo_keras.errors import DataError

PIXELS_12 = np.array([[0, 1000, 1536, 2000], [2048, 2559, 2560, 4095]], np.uint16)


def dicom_window(x: np.ndarray, centre: float, width: float, top: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 linear window, output range [0, top]."""
    low, high = centre - 0.5 - (width - 1) / 2, centre - 0.5 + (width - 1) / 2
    inside = ((x - (centre - 0.5)) / (width - 1) + 0.5) * top
    return np.where(x <= low, 0.0, np.where(x > high, top, inside))


@pytest.mark.parametrize("bits, pixels", [
    (16, np.array([[0, 1, 300], [40000, 65534, 65535]], np.uint16)),
    (12, PIXELS_12),
    (8, np.array([[0, 17, 128], [200, 254, 255]], np.uint8)),
])
def test_uncompressed_bit_depths_keep_stored_values(tmp_path, bits, pixels):
    path = write_dicom(tmp_path / f"b{bits}.dcm", pixels, bits_stored=bits)
    image = read_dicom(path)
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, pixels.astype(np.float32))
    np.testing.assert_array_equal(read_image(path), pixels.astype(np.float32))


@pytest.mark.parametrize("bits", [16, 12, 8])
def test_rle_is_pixel_identical(tmp_path, bits):
    pixels = (np.arange(48 * 64).reshape(48, 64) * 37) % (2 ** bits)
    plain = write_dicom(tmp_path / "plain.dcm", pixels, bits_stored=bits)
    rle = write_dicom(tmp_path / "rle.dcm", pixels, bits_stored=bits, rle=True)
    assert pydicom.dcmread(rle).file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_array_equal(read_dicom(rle), read_dicom(plain))
    np.testing.assert_array_equal(read_dicom(rle), pixels.astype(np.float32))


def test_monochrome1_is_inverted(tmp_path):
    path = write_dicom(tmp_path / "m1.dcm", PIXELS_12, bits_stored=12, photometric="MONOCHROME1")
    np.testing.assert_array_equal(read_dicom(path), (4095 - PIXELS_12).astype(np.float32))


def test_rescale_slope_and_intercept(tmp_path):
    path = write_dicom(tmp_path / "r.dcm", PIXELS_12, bits_stored=12, slope=2.0, intercept=-100)
    np.testing.assert_array_equal(read_dicom(path), (2.0 * PIXELS_12 - 100).astype(np.float32))


def test_window_centre_width_applied_unless_disabled(tmp_path):
    path = write_dicom(tmp_path / "w.dcm", PIXELS_12, bits_stored=12, window=(2048, 1024))
    expected = dicom_window(PIXELS_12.astype(np.float64), 2048, 1024, 4095)
    assert expected[0].tolist()[:3] == [0.0, 0.0, 0.0] and expected[1].tolist()[2:] == [4095.0] * 2
    np.testing.assert_allclose(read_dicom(path), expected, rtol=1e-6)
    np.testing.assert_array_equal(read_dicom(path, apply_voi=False), PIXELS_12.astype(np.float32))


def test_header_only_and_suffixless_dicom(tmp_path):
    path = write_dicom(tmp_path / "image", PIXELS_12, bits_stored=12, patient_id="Mass-Test_P_1")
    header = read_header(path)
    assert "PixelData" not in header
    assert (header.PatientID, header.Rows, header.Columns) == ("Mass-Test_P_1", 2, 4)
    np.testing.assert_array_equal(read_image(path), PIXELS_12.astype(np.float32))


def test_dicom_without_pixel_data_names_file(tmp_path):
    path = write_dicom(tmp_path / "empty.dcm", PIXELS_12, with_pixels=False)
    with pytest.raises(DataError, match="no pixel data") as error:
        read_dicom(path)
    assert error.value.path == str(path)


def test_truncated_dicom_names_file(tmp_path):
    full = write_dicom(tmp_path / "full.dcm", np.arange(48 * 64).reshape(48, 64))
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    for reader in (read_dicom, read_image):
        with pytest.raises(DataError, match="truncated") as error:
            reader(cut)
        assert str(error.value).startswith(f"{cut}: ")


def test_colour_dicom_is_refused(tmp_path):
    path = write_dicom(tmp_path / "rgb.dcm", PIXELS_12, photometric="RGB")
    with pytest.raises(DataError, match="Received: PhotometricInterpretation=RGB"):
        read_dicom(path)


def test_raster_formats_keep_values(tmp_path):
    grey16 = np.array([[0, 300], [40000, 65535]], np.uint16)
    Image.fromarray(grey16).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), grey16.astype(np.float32))
    grey8 = np.array([[0, 7], [128, 255]], np.uint8)
    Image.fromarray(grey8).save(tmp_path / "b.pgm")
    np.testing.assert_array_equal(read_image(tmp_path / "b.pgm"), grey8.astype(np.float32))
    Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)).save(tmp_path / "c.png")
    assert read_image(tmp_path / "c.png").tolist() == [[76.0, 29.0]]  # ITU-R 601-2 luma


def test_truncated_png_names_file(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "full.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes((tmp_path / "full.png").read_bytes()[:2000])
    with pytest.raises(DataError, match="truncated") as error:
        read_image(cut)
    assert error.value.path == str(cut)


@pytest.mark.parametrize("name, problem", [
    ("notes.png", "not a readable image"),
    ("notes.txt", "not a readable image"),
    ("notes.dcm", "not a readable DICOM file"),
    ("absent.png", "image file not found"),
])
def test_non_image_files_name_file(tmp_path, name, problem):
    path = tmp_path / name
    if name != "absent.png":
        path.write_text("patient_id,pathology\nP_00001,BENIGN\n")
    with pytest.raises(DataError, match=problem) as error:
        read_image(path)
    assert error.value.path == str(path)


def test_monochrome1_inverts_within_the_format_range_not_the_images(tmp_path):
    narrow = np.array([[100, 150], [200, 120]], dtype=np.uint16)  # uses a sliver of 12 bits
    path = write_dicom(tmp_path / "narrow.dcm", narrow, bits_stored=12, photometric="MONOCHROME1")
    np.testing.assert_array_equal(read_image(path), 4095.0 - narrow)
    np.testing.assert_allclose(read_normalised(path), (4095.0 - narrow) / 4095.0, rtol=1e-6)


def test_normalised_dicom_uses_rescale_range(tmp_path):
    pixels = np.array([[0, 1023], [512, 256]], dtype=np.uint16)
    path = write_dicom(tmp_path / "rescaled.dcm", pixels, bits_stored=10, slope=2.0, intercept=-1024.0)
    np.testing.assert_allclose(read_normalised(path), pixels / 1023.0, rtol=1e-6)


def test_malformed_number_of_frames_names_the_file(tmp_path):
    from dicom_fixtures import malformed_frames

    path = malformed_frames(write_dicom(tmp_path / "frames.dcm", PIXELS_12, bits_stored=12,
                                        extra={"NumberOfFrames": "11"}))
    for reader in (read_dicom, read_image):
        with pytest.raises(DataError, match=r"NumberOfFrames must be a whole number. "
                                            r"Received: NumberOfFrames='1A'") as error:
            reader(path)
        assert error.value.path == str(path)


def test_monochrome1_with_a_modality_lut_inverts_within_the_luts_range(tmp_path):
    from dicom_fixtures import modality_lut
    from mammo_keras.data.dicom import value_range

    pixels = np.array([[0, 10], [100, 255]], np.uint8)
    path = write_dicom(tmp_path / "lut.dcm", pixels, bits_stored=8, photometric="MONOCHROME1",
                       extra={"ModalityLUTSequence": modality_lut([4 * v for v in range(256)])})
    assert value_range(pydicom.dcmread(path), voi_applied=False) == (0.0, 1020.0)
    np.testing.assert_array_equal(read_dicom(path), 1020.0 - 4.0 * pixels)
    np.testing.assert_allclose(read_normalised(path), (1020.0 - 4.0 * pixels) / 1020.0, rtol=1e-6)
    plain = write_dicom(tmp_path / "plain.dcm", pixels, bits_stored=8, photometric="MONOCHROME2",
                        extra={"ModalityLUTSequence": modality_lut([4 * v for v in range(256)])})
    np.testing.assert_allclose(read_normalised(plain), 4.0 * pixels / 1020.0, rtol=1e-6)


def test_pixel_cap_is_checked_from_the_header_before_decoding(tmp_path, monkeypatch):
    from mammo_keras.data.imageio import header_size

    Image.fromarray(np.zeros((80, 100), np.uint8)).save(tmp_path / "wide.png")
    assert header_size(tmp_path / "wide.png") == (80, 100, 1)
    assert read_image(tmp_path / "wide.png", max_pixels=8000).shape == (80, 100)

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("pixels decoded before the cap was checked")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    for reader in (read_image, read_normalised):
        with pytest.raises(DataError, match=r"at most 7,999 pixels .*--max-pixels.* Received: 100x80 = 8,000 pixels"):
            reader(tmp_path / "wide.png", max_pixels=7999)


def test_dicom_pixel_cap_reads_rows_columns_and_frames_without_the_pixel_data(tmp_path):
    from mammo_keras.data.imageio import header_size

    # a header claiming 3000 x 2000 with no pixel data at all: the cap answers before anything else
    claims = write_dicom(tmp_path / "claims.dcm", np.zeros((3000, 2000), np.uint16), with_pixels=False)
    assert header_size(claims) == (3000, 2000, 1)
    with pytest.raises(DataError, match=r"Received: 2000x3000 = 6,000,000 pixels") as error:
        read_normalised(claims, max_pixels=5_000_000)
    assert error.value.path == str(claims)
    frames = write_dicom(tmp_path / "frames.dcm", PIXELS_12, bits_stored=12, extra={"NumberOfFrames": "3"})
    with pytest.raises(DataError, match=r"Received: 4x2 x 3 frames = 24 pixels"):
        read_dicom(frames, max_pixels=20)
    np.testing.assert_array_equal(read_image(write_dicom(tmp_path / "ok.dcm", PIXELS_12, bits_stored=12),
                                             max_pixels=8), PIXELS_12)


def test_a_decompression_bomb_is_a_data_error_whatever_the_cap(tmp_path):
    from hostile_files import bomb_png

    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png())
    assert path.stat().st_size < 120_000
    for max_pixels in (None, 40_000_000):
        with pytest.raises(DataError, match=r"decompression-bomb limit.*Image size \(900000000 pixels\)") as error:
            read_normalised(path, max_pixels=max_pixels)
        assert error.value.path == str(path)


def test_package_writer_round_trips_floats_and_integers(tmp_path):
    """`data.dicom.write_dicom` (the notebooks' PNG -> DICOM) is read back by the package's readers."""
    from mammo_keras.data import dicom

    image = np.random.default_rng(0).random((40, 30)).astype(np.float32)
    path = dicom.write_dicom(tmp_path / "scan.dcm", image, bits_stored=12, laterality="L", view="MLO")
    back = read_dicom(path, normalise=True)
    assert back.shape == (40, 30) and np.abs(back - image).max() <= 0.5 / 4095 + 1e-6
    header = read_header(path)
    assert (header.Modality, header.ImageLaterality, header.ViewPosition, header.BitsStored) == ("MG", "L", "MLO", 12)
    assert np.array_equal(read_normalised(path), back)
    counts = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(read_dicom(dicom.write_dicom(tmp_path / "u8.dcm", counts, bits_stored=8)), counts)
    for bad, problem in ((np.full((4, 4), 1.5), "within \\[0, 1\\]"), (np.zeros(4), "2-D"),
                         (np.full((4, 4), 300, np.uint16), "fit 8 bits"), (np.zeros((4, 4), np.int32), "dtype=int32")):
        with pytest.raises(ValueError, match=problem):
            dicom.write_dicom(tmp_path / "bad.dcm", bad, bits_stored=8)
    assert not (tmp_path / "bad.dcm").exists()
