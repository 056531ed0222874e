"""The bad-input corpus (tests/data/bad_inputs/README.md): every file through the reader of its
kind and through the predict/serve reader gives a DataError naming the file (and line), nothing else."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from mammo_keras.app.predict import read_scan
from mammo_keras.data import cbis_ddsm, inbreast, mias
from mammo_keras.data.dicom import read_dicom
from mammo_keras.data.imageio import read_image, read_normalised
from mammo_keras.errors import DataError

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
# file -> (reader, line or None, what the message says)
CASES = {
    "truncated.png": ("image", None, "truncated or corrupt"),
    "empty.png": ("image", None, "not a readable image"),
    "truncated.jpg": ("image", None, "truncated or corrupt"),
    "empty.jpg": ("image", None, "not a readable image"),
    "truncated.tif": ("image", None, "truncated or corrupt"),
    "empty.tif": ("image", None, "not a readable image"),
    "truncated.pgm": ("image", None, "truncated or corrupt"),
    "empty.pgm": ("image", None, "not a readable image"),
    "decompression_bomb.png": ("image", None, r"decompression-bomb limit.*Image size \(900000000 pixels\)"),
    "not_an_image.png": ("image", None, "not a readable image"),
    "no_pixels.dcm": ("dicom", None, "no pixel data"),
    "wrong_rows.dcm": ("dicom", None, "pixel data is truncated or corrupt"),
    "compressed_no_decoder.dcm": ("dicom", None, "cannot decode transfer syntax JPEG 2000.*pip install pylibjpeg"),
    "multi_frame.dcm": ("dicom", None, "multi-frame DICOM .* Received: NumberOfFrames=2"),
    "bad_number_of_frames.dcm": ("dicom", None, "NumberOfFrames must be a whole number. Received: NumberOfFrames='1A'"),
    "truncated.dcm": ("dicom", None, "pixel data is truncated or corrupt"),
    "cbis_missing_column.csv": ("cbis", 1, "missing required column 'pathology'"),
    "cbis_swapped_columns.csv": ("cbis", 2, "image file path must read <subject>/<study UID>/<series UID>/"
                                            "<file>.dcm. Received: '1'"),
    "mias_missing_coordinate.txt": ("mias", 4, "coordinates are 'X Y RADIUS'"),
    "mias_bad_number.txt": ("mias", 4, "X, Y and RADIUS must be numbers"),
    "mias_bad_class.txt": ("mias", 3, "abnormality class must be one of"),
    "mias_box_outside.txt": ("mias", 4, "lesion centre must lie in the 1024x1024 image"),
    "mias_no_rows.txt": ("mias", None, "no label rows found"),
    "inbreast_broken_contour.xml": ("inbreast", None, r"ROI 0: Point_px entries look like '\(x, y\)'. "
                                                      r"Received: '\(11.0, abc\)'"),
    "inbreast_truncated.xml": ("inbreast", None, "not an OsiriX ROI plist"),
    "inbreast_wrong_structure.xml": ("inbreast", None, "not an OsiriX ROI plist"),
    "inbreast_roi_not_a_dict.xml": ("inbreast", None, "ROI 0 is not a dict"),
}


def _cbis(file: Path, folder: Path):
    """A CBIS-DDSM root whose mass training CSV is the corpus file."""
    shutil.copy(file, folder / "mass_case_description_train_set.csv")
    header = (CORPUS / "cbis_swapped_columns.csv").read_text().splitlines()[0]
    (folder / "mass_case_description_test_set.csv").write_text(header + "\n")
    return folder / "mass_case_description_train_set.csv", lambda: cbis_ddsm.read(folder, abnormality="mass")


def _mias(file: Path, folder: Path):
    shutil.copy(file, folder / "Info.txt")
    return folder / "Info.txt", lambda: mias.read(folder, require_images=False)


def _inbreast(file: Path, folder: Path):
    """A one-image release whose ROI file is the corpus file."""
    root = folder / "INbreast Release 1.0"
    (root / "AllDICOMs").mkdir(parents=True)
    (root / "AllXML").mkdir()
    (root / "AllDICOMs" / "20586908_6c613a14b80a8591_MG_R_CC_ANON.dcm").write_bytes(b"")  # indexed by name
    (root / "INbreast.csv").write_text("Patient ID;Laterality;View;File Name;ACR;Bi-Rads\n"
                                       "removed;R;CC;20586908;2;4a\n")
    shutil.copy(file, root / "AllXML" / "20586908.xml")
    return root / "AllXML" / "20586908.xml", lambda: inbreast.read(root)


def _readers(kind: str):
    """(name, setup(file, folder) -> (the path an error must name, the call)) for `kind`'s readers."""
    def direct(function):
        return lambda file, folder: (file, lambda: function(file))

    if kind == "image":
        return [("read_image", direct(read_image)), ("read_normalised", direct(read_normalised))]
    if kind == "dicom":
        return [("read_dicom", direct(read_dicom)), ("read_image", direct(read_image)),
                ("read_normalised", direct(read_normalised))]
    return [(kind, {"cbis": _cbis, "mias": _mias, "inbreast": _inbreast}[kind])]


def test_the_corpus_holds_the_listed_files_and_the_readme_lists_them():
    files = sorted(p.name for p in CORPUS.iterdir() if p.suffix not in (".py", ".md"))
    assert files == sorted(CASES)
    readme = (CORPUS / "README.md").read_text()
    assert sorted(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.M)) == sorted(CASES)
    assert all(p.stat().st_size < 4096 for p in CORPUS.iterdir() if p.suffix != ".py")


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_bad_input_is_a_data_error_naming_the_file(name, tmp_path):
    kind, line, message = CASES[name]
    file = CORPUS / name
    for reader, setup in _readers(kind):
        folder = tmp_path / reader
        folder.mkdir()
        named, call = setup(file, folder)
        with pytest.raises(DataError) as raised:  # a DataError and no other exception type
            call()
        error = raised.value
        assert str(error).startswith(f"{named}:{line}: " if line else f"{named}: "), f"{reader}: {error}"
        assert error.line == line and re.search(message, error.problem), f"{reader}: {error}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_predict_and_serve_reader_names_the_upload(name):
    with pytest.raises(DataError) as error:
        read_scan(CORPUS / name, name=f"upload of {name}")
    assert error.value.path == f"upload of {name}" and str(error.value).startswith(f"upload of {name}: ")
    if CASES[name][0] in ("image", "dicom") and not name.startswith(("empty", "not_an")):
        assert re.search(CASES[name][2], error.value.problem), error.value.problem
    else:
        assert "not an image this tool reads" in error.value.problem
