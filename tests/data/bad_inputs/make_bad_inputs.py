"""Write the bad-input corpus beside this script: one small file per way an input can be broken.

    python tests/data/bad_inputs/make_bad_inputs.py

Deterministic (fixed pixels and UIDs), so re-running it rewrites the committed files unchanged
(JPEG and TIFF bytes may differ across Pillow builds; what each file breaks does not). The cases
and what each must raise are listed in README.md and in tests/data/test_bad_inputs.py.
"""
from __future__ import annotations

import io
import plistlib
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/: dicom_fixtures, hostile_files

from dicom_fixtures import malformed_frames, write_dicom  # noqa: E402
from hostile_files import bomb_png  # noqa: E402

UID = "1.2.826.0.1.3680043.10.1717."
PIXELS = (np.arange(32 * 32).reshape(32, 32) * 37 % 251).astype(np.uint8)
MASS_HEADER = ("patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,"
               "mass shape,mass margins,assessment,pathology,subtlety,image file path,cropped image file path,"
               "ROI mask file path")
CBIS_PATH = f"Mass-Training_P_00001_LEFT_CC/{UID}1/{UID}2/000000.dcm"


def raster(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(PIXELS).save(buffer, format=fmt)
    return buffer.getvalue()


def dicom(name: str, pixels: np.ndarray = PIXELS, **kwargs) -> Path:
    number = sum(map(ord, name))  # a fixed UID per file
    return write_dicom(HERE / name, pixels, bits_stored=8, sop_uid=f"{UID}{number}.1",
                       series_uid=f"{UID}{number}.2", study_uid=f"{UID}{number}.3", **kwargs)


def compressed_without_decoder(name: str) -> None:
    """A JPEG 2000 DICOM: pydicom decodes it only with pylibjpeg-openjpeg or gdcm (not installed)."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    path = dicom(name)
    dataset = pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = JPEG2000Lossless
    dataset.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(60)])  # a J2K start, then nothing valid
    dataset["PixelData"].VR = "OB"
    dataset.save_as(path, enforce_file_format=True)


def plist(rois) -> bytes:
    return plistlib.dumps({"Images": [{"ImageIndex": 0, "NumberOfROIs": len(rois), "ROIs": rois}]},
                          fmt=plistlib.FMT_XML)


def main() -> None:
    for fmt, suffix in (("PNG", "png"), ("JPEG", "jpg"), ("TIFF", "tif"), ("PPM", "pgm")):
        data = raster(fmt)
        (HERE / f"truncated.{suffix}").write_bytes(data[: len(data) // 3] if fmt != "TIFF" else data[:200])
        (HERE / f"empty.{suffix}").write_bytes(b"")
    (HERE / "decompression_bomb.png").write_bytes(bomb_png(30000, 30000, rows=64))
    (HERE / "not_an_image.png").write_bytes(b"patient_id,pathology\nP_00001,BENIGN\n")

    dicom("no_pixels.dcm", with_pixels=False)
    wrong = dicom("wrong_rows.dcm")
    import pydicom

    dataset = pydicom.dcmread(wrong)
    dataset.Rows = 64  # the pixel data holds 32 rows
    dataset.save_as(wrong, enforce_file_format=True)
    compressed_without_decoder("compressed_no_decoder.dcm")
    dicom("multi_frame.dcm", np.concatenate([PIXELS, PIXELS]), extra={"NumberOfFrames": "2"})
    frames = dicom("bad_number_of_frames.dcm", extra={"NumberOfFrames": "11"})
    malformed_frames(frames)
    full = dicom("truncated.dcm")
    full.write_bytes(full.read_bytes()[:-300])  # cut inside the pixel data

    good = f"P_00001,3,LEFT,CC,1,MASS,OVAL,CIRCUMSCRIBED,4,MALIGNANT,4,{CBIS_PATH},{CBIS_PATH},{CBIS_PATH}"
    (HERE / "cbis_missing_column.csv").write_text(
        MASS_HEADER.replace(",pathology", "") + "\n" + good.replace(",MALIGNANT", "") + "\n")
    swapped = good.replace(f",1,MASS,OVAL,CIRCUMSCRIBED,4,MALIGNANT,4,{CBIS_PATH},",
                           f",{CBIS_PATH},MASS,OVAL,CIRCUMSCRIBED,4,MALIGNANT,4,1,")
    (HERE / "cbis_swapped_columns.csv").write_text(f"{MASS_HEADER}\n{swapped}\n")

    mias_head = "MAMMOGRAPHIC IMAGE ANALYSIS SOCIETY\r\n\r\n"
    (HERE / "mias_missing_coordinate.txt").write_bytes(
        (mias_head + "mdb001 G CIRC B 535 425 197\r\nmdb002 G CIRC B 522 280\r\n").encode("latin-1"))
    (HERE / "mias_bad_number.txt").write_bytes(
        (mias_head + "mdb001 G CIRC B 535 425 197\r\nmdb002 G CIRC B 5x2 280 69\r\n").encode("latin-1"))
    (HERE / "mias_bad_class.txt").write_bytes((mias_head + "mdb001 G BLOB B 535 425 197\r\n").encode("latin-1"))
    (HERE / "mias_box_outside.txt").write_bytes(
        (mias_head + "mdb001 G CIRC B 535 425 197\r\nmdb002 G CIRC B 1500 280 69\r\n").encode("latin-1"))
    (HERE / "mias_no_rows.txt").write_bytes(mias_head.encode("latin-1"))

    roi = {"Name": "Mass", "NumberOfPoints": 2, "Point_px": ["(10.5, 20.0)", "(11.0, abc)"]}
    (HERE / "inbreast_broken_contour.xml").write_bytes(plist([roi]))
    whole = plist([{"Name": "Mass", "NumberOfPoints": 1, "Point_px": ["(10.5, 20.0)"]}])
    (HERE / "inbreast_truncated.xml").write_bytes(whole[: len(whole) // 2])
    (HERE / "inbreast_wrong_structure.xml").write_bytes(
        plistlib.dumps({"Images": "not a list of images"}, fmt=plistlib.FMT_XML))
    (HERE / "inbreast_roi_not_a_dict.xml").write_bytes(plist(["Mass"]))


if __name__ == "__main__":
    main()
