"""RSNA 2023 reader on a tiny train.csv + train_images/<patient>/<image>.dcm, one file JPEG 2000."""
from __future__ import annotations

import csv
import io

import numpy as np
import pydicom
import pytest
from dicom_fixtures import write_dicom
from PIL import Image, features
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import JPEG2000Lossless

from mammo_keras import data
from mammo_keras.data import rsna_screening
from mammo_keras.data.imageio import read_normalised
from mammo_keras.errors import DataError, DatasetNotFoundError

HEADER = list(rsna_screening.COLUMNS)
ROWS = [  # site, patient, image, side, view, age, cancer, biopsy, invasive, BIRADS, implant, density, machine, hard
    ["2", "10006", "462822612", "L", "CC", "61.0", "0", "0", "0", "", "0", "", "29", "False"],
    ["2", "10006", "1459541791", "L", "MLO", "61.0", "0", "0", "0", "", "0", "", "29", "False"],
    ["2", "10006", "1864590858", "R", "MLO", "61.0", "1", "1", "1", "0", "0", "", "29", "False"],
    ["2", "10006", "1874946579", "R", "CC", "61.0", "1", "1", "1", "0", "0", "", "29", "False"],
    ["1", "10011", "220375232", "L", "AT", "", "0", "0", "0", "1", "0", "B", "49", "False"],
    ["1", "10011", "270344397", "R", "CC", "55.0", "0", "1", "0", "0", "0", "C", "49", "True"],
]
PIXELS = (np.arange(12 * 16).reshape(12, 16) * 13 % 4096).astype(np.uint16)
J2K_IMAGE = "1874946579"


def write_jpeg2000_dicom(path, pixels):
    """A DICOM whose pixel data is a lossless JPEG 2000 code stream (encoded by Pillow's OpenJPEG)."""
    write_dicom(path, pixels, bits_stored=12)
    dataset = pydicom.dcmread(path)
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, "JPEG2000", irreversible=False, no_jp2=True)
    dataset.PixelData = encapsulate([stream.getvalue()])
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = JPEG2000Lossless
    dataset.save_as(path, enforce_file_format=True)
    return path


def write_competition(root, *, rows=ROWS, skip=()):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "train.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([HEADER, *rows])
    for row in rows:
        patient, image = row[1], row[2]
        path = root / "train_images" / patient / f"{image}.dcm"
        if image in skip:
            continue
        if image == J2K_IMAGE and features.check("jpg_2000"):
            write_jpeg2000_dicom(path, PIXELS)
        else:
            write_dicom(path, PIXELS, bits_stored=12, patient_id=patient)
    return root


def test_rows_labels_and_prediction_ids(tmp_path):
    root = write_competition(tmp_path / "rsna-breast-cancer-detection")
    table = rsna_screening.read(tmp_path)  # found one folder down
    assert table["image_id"].tolist() == [row[2] for row in ROWS]
    assert table["patient_id"].tolist() == ["10006"] * 4 + ["10011"] * 2
    assert table["pathology"].tolist() == ["normal", "normal", "malignant", "malignant", "normal", "benign"]
    assert table["abnormality"].tolist() == ["normal", "normal", "other", "other", "normal", "other"]
    assert table["lesion_id"].tolist() == ["", "", "1864590858_cancer", "1874946579_cancer", "",
                                           "270344397_biopsied"]
    assert table["prediction_id"].tolist() == ["10006_L", "10006_L", "10006_R", "10006_R", "10011_L", "10011_R"]
    assert table["view"].tolist() == ["CC", "MLO", "MLO", "CC", "", "CC"]
    assert table["view_raw"].tolist()[4] == "AT"
    assert table["cancer"].tolist() == [0, 0, 1, 1, 0, 0] and table["biopsy"].tolist() == [0, 0, 1, 1, 0, 1]
    assert table["birads"].tolist() == ["", "", "0", "0", "1", "0"]
    assert table["density"].tolist() == ["", "", "", "", "B", "C"]
    assert table["difficult_negative_case"].tolist() == [False] * 5 + [True]
    assert np.isnan(table["age"].iloc[4]) and table["age"].iloc[0] == 61.0
    assert table["path"].iloc[3] == str(root / "train_images" / "10006" / "1874946579.dcm")
    assert data.read_dataset("rsna", root)["image_id"].tolist() == table["image_id"].tolist()


def test_jpeg2000_decodes_with_a_decoder_and_names_the_fix_without(tmp_path, monkeypatch):
    if not features.check("jpg_2000"):
        pytest.skip("this Pillow has no OpenJPEG: no JPEG 2000 fixture can be written")
    root = write_competition(tmp_path)
    path = rsna_screening.read(root).set_index("image_id").loc[J2K_IMAGE, "path"]
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == JPEG2000Lossless
    decoder = get_decoder(JPEG2000Lossless)
    if decoder.is_available:  # Pillow's plugin, or pylibjpeg-openjpeg where installed
        np.testing.assert_allclose(read_normalised(path), PIXELS / 4095.0, rtol=1e-6)
    monkeypatch.setattr(decoder, "_available", {})  # as on a machine without any JPEG 2000 decoder
    with pytest.raises(DataError) as error:
        read_normalised(path)
    assert error.value.path == path
    message = str(error.value)
    assert "cannot decode transfer syntax JPEG 2000 Image Compression (Lossless Only)" in message
    assert "`pip install pylibjpeg pylibjpeg-openjpeg`" in message and "\n" not in message


def test_missing_images_and_bad_values(tmp_path):
    root = write_competition(tmp_path, skip=("220375232",))
    with pytest.raises(DataError, match=r"train.csv:6: image '220375232' has no DICOM: .*10011/220375232.dcm "
                                        r"not found"):
        rsna_screening.read(root)
    assert rsna_screening.read(root, missing="skip")["image_id"].tolist() == [r[2] for r in ROWS if r[2] != "220375232"]
    kept = rsna_screening.read(root, missing="keep")
    assert kept["image_found"].tolist() == [True] * 4 + [False, True]
    bad = [row[:] for row in ROWS]
    bad[1][6] = "yes"
    write_competition(tmp_path / "bad", rows=bad)
    with pytest.raises(DataError, match=r"train.csv:3: cancer must be 0 or 1. Received: 'yes'"):
        rsna_screening.read(tmp_path / "bad")
    with pytest.raises(DatasetNotFoundError, match="train.csv not found under"):
        rsna_screening.read(tmp_path / "nothing-here")
