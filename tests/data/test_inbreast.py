"""INbreast reader on a tiny release in the real format (plist XML, semicolon CSV, DICOM names)."""
from __future__ import annotations

import math
import plistlib

import numpy as np
import pytest
from dicom_fixtures import write_dicom

from mammo_keras.data import inbreast
from mammo_keras.errors import DataError, DatasetNotFoundError

PATIENT_A, PATIENT_B = "6c613a14b80a8591", "024ee3569b2605dc"
DICOMS = {
    "20586908": f"20586908_{PATIENT_A}_MG_R_CC_ANON.dcm",
    "20586934": f"20586934_{PATIENT_A}_MG_R_ML_ANON.dcm",
    "22614074": f"22614074_{PATIENT_B}_MG_L_CC_ANON.dcm",
    "22614097": f"22614097_{PATIENT_B}_MG_L_ML_ANON.dcm",
}
CSV_HEADER = "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads"
CSV_ROWS = [
    "removed;removed;R;CC;201001;20586908;2;4a",
    "removed;removed;R;MLO;201001;20586934;2;4c",
    "removed;removed;L;CC;200907;22614074;1;3",
    "removed;removed;L;MLO;200907;22614097;1;1",
    ";;;;;;;",
]


def _roi(name, points):
    return {"Name": name, "NumberOfPoints": len(points), "Area": 0.0,
            "Center": "(0.000000, 0.000000, 0.000000)",
            "Point_px": [f"({x:.6f}, {y:.6f})" for x, y in points]}


def _write_xml(path, rois):
    document = {"Images": [{"ImageIndex": 0, "NumberOfROIs": len(rois), "ROIs": rois}]}
    path.write_bytes(plistlib.dumps(document, fmt=plistlib.FMT_XML))


@pytest.fixture
def release(tmp_path):
    root = tmp_path / "INbreast Release 1.0"
    for name in DICOMS.values():
        write_dicom(root / "AllDICOMs" / name, np.zeros((4, 4), np.uint16))
    (root / "AllXML").mkdir()
    _write_xml(root / "AllXML" / "20586908.xml",
               [_roi("Mass", [(10.5, 20.25), (30.0, 22.0), (25.5, 40.0)]),
                _roi("Calcification", [(50.0, 60.0)])])
    _write_xml(root / "AllXML" / "22614074.xml", [_roi("Point 3", [(5.0, 6.0), (7.0, 9.0)])])
    (root / "INbreast.csv").write_text("\n".join([CSV_HEADER] + CSV_ROWS) + "\n")
    return root


def test_rows_ids_patients_views_and_geometry(release):
    table = inbreast.read(release.parent)  # the parent of the release folder also works
    assert list(table["image_id"]) == ["20586908", "20586908", "20586934", "22614074", "22614097"]
    assert list(table["patient_id"]) == [PATIENT_A, PATIENT_A, PATIENT_A, PATIENT_B, PATIENT_B]
    assert list(table["laterality"]) == ["R", "R", "R", "L", "L"]
    assert list(table["view"]) == ["CC", "CC", "MLO", "CC", "MLO"]
    assert list(table["abnormality"]) == ["mass", "calcification", "other", "other", "normal"]
    assert list(table["lesion_id"]) == ["20586908_roi0", "20586908_roi1", "20586934_unlocalised",
                                        "22614074_roi0", ""]
    assert list(table["roi_name"]) == ["Mass", "Calcification", "", "Point 3", ""]
    assert list(table["birads"]) == ["4a", "4a", "4c", "3", "1"]
    assert list(table["acr"]) == ["2", "2", "2", "1", "1"]
    mass = table.iloc[0]
    assert (mass["x0"], mass["y0"], mass["x1"], mass["y1"]) == (10.5, 20.25, 31.0, 41.0)
    assert mass["contour"] == [(10.5, 20.25), (30.0, 22.0), (25.5, 40.0)]
    calc = table.iloc[1]
    assert (calc["x0"], calc["y0"], calc["x1"], calc["y1"]) == (50.0, 60.0, 51.0, 61.0)
    assert math.isnan(table.iloc[2]["x0"]) and math.isnan(table.iloc[4]["x0"])
    assert table.iloc[0]["path"] == str((release / "AllDICOMs" / DICOMS["20586908"]).resolve())
    assert set(table["source"]) == {"inbreast"}


def test_birads_labeling(release):
    table = inbreast.read(release, labeling="birads")
    assert list(table["pathology"]) == ["malignant", "malignant", "malignant", "benign", "normal"]


def test_shen_labeling_excludes_birads_3(release):
    table = inbreast.read(release, labeling="shen")
    assert list(table["image_id"]) == ["20586908", "20586908", "20586934", "22614097"]
    assert list(table["pathology"]) == ["malignant", "malignant", "malignant", "normal"]
    assert "3" not in set(table["birads"])


def test_birads_pathology_table():
    assert [inbreast.birads_pathology(b) for b in ("1", "2", "3", "4a", "4b", "4c", "5", "6")] == [
        "normal", "benign", "benign", "malignant", "malignant", "malignant", "malignant", "malignant"]
    assert [inbreast.birads_pathology(b, "shen") for b in ("1", "2", "3", "4", "6")] == [
        "normal", "benign", None, "malignant", "malignant"]
    assert inbreast.birads_pathology("0") is None


def test_roi_name_mapping():
    names = ["Mass", "Spiculated Region", "calcifications", "Cluster", "Distortion",
             "Assymetry", "Unnamed"]
    assert [inbreast.roi_abnormality(n) for n in names] == [
        "mass", "mass", "calcification", "calcification", "distortion", "asymmetry", "other"]


def test_comma_separated_export_with_float_ids(release):
    csv_path = release / "export.csv"
    csv_path.write_text("Patient ID,Patient age,Laterality,View,Acquisition date,File Name,ACR,Bi-Rads\n"
                        "removed,removed,L,MLO,200907,22614097.0,1,1\n")
    table = inbreast.read(release, csv_path=csv_path)
    assert list(table["image_id"]) == ["22614097"]
    assert list(table["pathology"]) == ["normal"]


def test_malformed_xml_names_the_file(release):
    (release / "AllXML" / "20586908.xml").write_text("<plist><dict><key>Images</key>")
    with pytest.raises(DataError, match=r"20586908\.xml: not an OsiriX ROI plist"):
        inbreast.read(release)


def test_malformed_point_names_the_file(release):
    bad_roi = _roi("Mass", [(1.0, 2.0)]) | {"Point_px": ["(1.0; 2.0)"]}
    _write_xml(release / "AllXML" / "20586908.xml", [bad_roi])
    with pytest.raises(DataError, match=r"20586908\.xml: ROI 0: Point_px"):
        inbreast.read(release)


def test_csv_row_without_dicom(release):
    (release / "AllDICOMs" / DICOMS["20586934"]).unlink()
    with pytest.raises(DataError, match=r"INbreast\.csv:3: File Name 20586934 has no DICOM"):
        inbreast.read(release)
    table = inbreast.read(release, missing="skip")
    assert "20586934" not in set(table["image_id"])
    assert len(table) == 4


def test_bad_birads_value_names_csv_line(release):
    rows = CSV_ROWS[:2] + ["removed;removed;L;CC;200907;22614074;1;7"]
    (release / "INbreast.csv").write_text("\n".join([CSV_HEADER] + rows))
    with pytest.raises(DataError, match=r"INbreast\.csv:4: Bi-Rads must be one of .*Received: '7'"):
        inbreast.read(release)


def test_missing_folder_shows_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="AllDICOMs"):
        inbreast.read(tmp_path)


def test_unknown_labeling_is_rejected(release):
    with pytest.raises(ValueError, match=r"Received: labeling='bi-rads'"):
        inbreast.read(release, labeling="bi-rads")


def _full_release(root, *, mixed_patient: bool = False):
    """A release with the paper's counts: 410 images of 115 women, 23 BI-RADS 3 images of 12 women who
    have no other image (11 with two, one with one); the other 103 women: 91 with four images, 11 with
    two, one with one (387 images). DICOMs are empty files: the reader takes ids from the names."""
    folder = root / "AllDICOMs"
    folder.mkdir(parents=True)
    rows, number = [], 10000000
    sizes = [(2, "3")] * 11 + [(1, "3")] + [(4, "1")] * 91 + [(2, "4a")] * 11 + [(1, "2")]
    for woman, (images, birads) in enumerate(sizes):
        for view in range(images):
            number += 1
            values = birads
            if mixed_patient and woman == 12 and view == 0:  # one woman with four images has a BI-RADS 3 one
                values = "3"
            side, code = ("L", "CC") if view % 2 == 0 else ("R", "ML")
            (folder / f"{number}_{woman:016x}_MG_{side}_{code}_ANON.dcm").touch()
            rows.append(f"removed;removed;{side};{code};201001;{number};2;{values}")
    (root / "AllXML").mkdir()
    (root / "INbreast.csv").write_text("\n".join([CSV_HEADER] + rows) + "\n")
    return root


def test_shen2017_subset_follows_the_rule_the_paper_states(release):
    table = inbreast.read(release, subset="shen2017")
    shen = inbreast.read(release, labeling="shen")
    assert list(table["image_id"]) == list(shen["image_id"])  # BI-RADS 3 out, 1-2 negative, 4-6 positive
    subset = table.attrs["subset"]
    assert subset["name"] == "shen2017" and "BI-RADS 3" in subset["rule"]
    assert subset["found"] == {"release_images": 4, "release_patients": 2, "images": 3, "patients": 2,
                               "excluded_images": 1, "excluded_patients": 0}
    assert subset["note"] == ""  # not a full release: nothing to compare
    with pytest.raises(ValueError, match="leave `labeling` out. Received: labeling='birads'"):
        inbreast.read(release, subset="shen2017", labeling="birads")
    with pytest.raises(ValueError, match=r"subset must be one of \['shen2017'\]"):
        inbreast.read(release, subset="shen2019")


def test_shen2017_subset_of_a_full_release_gives_the_papers_counts(tmp_path):
    table = inbreast.read(_full_release(tmp_path / "full"), subset="shen2017")
    subset = table.attrs["subset"]
    assert subset["found"] == {"release_images": 410, "release_patients": 115, "images": 387, "patients": 103,
                               "excluded_images": 23, "excluded_patients": 12}
    assert {k: subset["paper"][k] for k in subset["found"]} == subset["found"] and subset["note"] == ""
    assert "3" not in set(table["birads"]) and table["image_id"].nunique() == 387
    other = inbreast.read(_full_release(tmp_path / "other", mixed_patient=True), subset="shen2017")
    assert other.attrs["subset"]["note"] == ("this full release gives images 386 (paper 387), patients 103 "
                                             "(paper 103), excluded_images 24 (paper 23), excluded_patients 12 "
                                             "(paper 12)")
