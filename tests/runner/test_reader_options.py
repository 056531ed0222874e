"""`dataset_options` passes reader options to a config's training datasets: Shen's Table 4 reads INbreast
as the images Shen analysed (BI-RADS 3 excluded), not with the reader's default BI-RADS labels."""
from __future__ import annotations

import numpy as np

from dicom_fixtures import write_dicom
from mammo_keras.config import load_config
from mammo_keras.runner.inputs import load_inputs
from mammo_keras.runner.kinds import reader_options

WOMAN_A, WOMAN_B = "6c613a14b80a8591", "024ee3569b2605dc"
IMAGES = [("20586908", WOMAN_A, "R", "CC", "4a"), ("20586934", WOMAN_A, "R", "ML", "5"),
          ("22614074", WOMAN_B, "L", "CC", "3"), ("22614097", WOMAN_B, "L", "ML", "1")]


def _release(root):
    folder = root / "inbreast"
    for file_id, woman, side, view, _ in IMAGES:
        write_dicom(folder / "AllDICOMs" / f"{file_id}_{woman}_MG_{side}_{view}_ANON.dcm",
                    np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 9)
    (folder / "AllXML").mkdir()
    rows = [f"removed;removed;{side};{view};201001;{file_id};2;{birads}" for file_id, _, side, view, birads in IMAGES]
    (folder / "INbreast.csv").write_text("\n".join(
        ["Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads", *rows]) + "\n")
    return root


def test_table4_reads_shens_inbreast_subset(tmp_path):
    config = load_config("shen2017/table4", "paper", overrides={"datasets": ["inbreast"], "input_size": [48, 36]})
    assert reader_options(config, "inbreast") == {"subset": "shen2017"}
    said = []
    inputs = load_inputs(config, "inbreast", _release(tmp_path / "data"), tmp_path / "work", said.append,
                         options=reader_options(config, "inbreast"))
    assert sorted(inputs.index["image_id"].astype(str)) == ["20586908", "20586934", "22614097"]  # BI-RADS 3 out
    assert sorted(inputs.index["label"].tolist()) == [0, 1, 1]
    assert any("subset shen2017: 3 images of 2 patients (the paper: 387 of 103" in line for line in said)
    assert [p.name for p in (tmp_path / "work" / "prepared").iterdir()][0].startswith("inbreast_shen_")
    default = load_config("shen2017/table4", "paper", overrides={"datasets": ["inbreast"], "input_size": [48, 36],
                                                                  "dataset_options": {"inbreast": {"subset": None}}})
    everything = load_inputs(default, "inbreast", tmp_path / "data", tmp_path / "work", said.append,
                             options=reader_options(default, "inbreast"))
    assert len(everything.index) == 4  # the reader's own labels keep the BI-RADS 3 image (as benign)
