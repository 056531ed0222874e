"""MODEL_CARD.md in every saved model folder: what the model is, its data (fingerprint, licence), the
protocol, the part's metrics with CIs, intended use and limitations; checksummed in the manifest, so
`predict`'s verification covers it and `models pack` / `unpack` carry it."""
from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mammo_keras import data, io
from mammo_keras.app.predict import load_model_folder
from mammo_keras.errors import DataError
from mammo_keras.training.cv import calibration_files, card_facts

PREPROCESSING = {"recipe": "chougrad", "options": {"r": 300, "size": 224, "grow_to_fit": True},
                 "input_hw": [8, 8], "input_channels": 1, "input_scale": 1.0, "intensity": "format_range"}


def _tiny_model() -> keras.Model:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(keras.layers.Conv2D(2, 3, name="conv")(inputs))
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="predictions")(x), name="tiny")


def _card() -> dict:
    predictions = pd.DataFrame({"item_id": [f"i{k}" for k in range(20)], "patient_id": [f"p{k}" for k in range(20)],
                                "label": [0, 1] * 10, "fold": 2,
                                "score": np.r_[np.linspace(0.1, 0.4, 10), np.linspace(0.3, 0.9, 10)][
                                    np.argsort(np.argsort([0, 1] * 10, kind="stable"), kind="stable")]})
    base = {"title": "chougrad2018/table2, row inceptionv3 on cbis_ddsm",
            "data": [{"name": "cbis_ddsm", "role": "training", "fingerprint": "ab12" * 16,
                      "licence": data.licence("cbis_ddsm"), "synthetic": False}],
            "protocol": ["experiment `chougrad2018/table2` at the `cpu` profile", "stage `head`: 3 epochs, adam"],
            "part_what": "fold {fold} of the patient-level 5-fold cross-validation",
            "command": "mammo-keras reproduce chougrad2018/table2 --profile cpu", "profile": "cpu"}
    metrics = {"fold": 2, "n_train": 60, "n_val": 10, "n_test": 20, "selected_epoch": 7}
    return card_facts(base, predictions, metrics, seed=0), predictions


def test_the_card_states_model_data_protocol_metrics_and_limits(tmp_path):
    card, predictions = _card()
    assert card["part"]["what"] == "fold 2 of the patient-level 5-fold cross-validation"
    labels, scores = predictions["label"], predictions["score"]
    assert card["metrics"]["accuracy"]["value"] == pytest.approx(((scores >= 0.5) == labels).mean())
    assert card["metrics"]["auc"]["low"] <= card["metrics"]["auc"]["value"] <= card["metrics"]["auc"]["high"]
    folder = io.save(_tiny_model(), tmp_path / "model", architecture="tiny", class_names=["benign", "malignant"],
                     preprocessing=PREPROCESSING, card=card)
    text = (folder / "MODEL_CARD.md").read_text()
    assert text.startswith("# Model card: tiny (chougrad2018/table2, row inceptionv3 on cbis_ddsm)")
    for expected in ("- input: 8 x 8 x 1; preprocessing recipe `chougrad`", "- outputs: benign, malignant",
                     f"data fingerprint {'ab12' * 16}", "licence: the TCIA collection's licence (Creative Commons "
                     "Attribution 3.0, CC BY 3.0)", "- part: fold 2 of the patient-level 5-fold cross-validation: "
                     "60 training, 10 validation and 20 test items", "- stage `head`: 3 epochs, adam",
                     "- command: `mammo-keras reproduce chougrad2018/table2 --profile cpu`",
                     f"| auc | {card['metrics']['auc']['value']:.3f} | [{card['metrics']['auc']['low']:.3f}, ",
                     "## Intended use", "Not a medical device", "This one is from the `cpu` profile."):
        assert expected in text, expected
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model_card"] == "MODEL_CARD.md" and "MODEL_CARD.md" in manifest["sha256"]


def test_a_saved_model_gets_its_calibration_brier_score_and_reliability_diagram(tmp_path):
    """Before: calibration was reported by `mammo-keras score --calibration` only, not for saved models."""
    card, predictions = _card()
    labels, scores = predictions["label"].to_numpy(), predictions["score"].to_numpy()
    brier = float(np.mean((scores - labels) ** 2))
    assert card["metrics"]["brier"]["value"] == pytest.approx(brier)
    assert card["metrics"]["brier"]["low"] <= brier <= card["metrics"]["brier"]["high"]
    folder = io.save(_tiny_model(), tmp_path / "model", architecture="tiny", class_names=["benign", "malignant"],
                     preprocessing=PREPROCESSING, card=card, files=calibration_files(predictions))
    with Image.open(folder / "calibration.png") as image:
        assert image.format == "PNG" and image.size[0] > 200
    assert io.read_manifest(folder)["sha256"]["calibration.png"] == io.sha256(folder / "calibration.png")
    text = (folder / "MODEL_CARD.md").read_text()
    assert f"| brier | {brier:.3f} |" in text
    assert (f"Calibration on the same items: Brier score {brier:.3f}, expected calibration error "
            f"{card['calibration']['ece']:.3f} (ten equal-width bins); reliability diagram `calibration.png`") in text
    assert calibration_files(predictions.drop(columns="score").assign(pred=0)) == {}  # multi-class: none
    with pytest.raises(ValueError, match="plain file names other than the model's own"):
        io.save(_tiny_model(), tmp_path / "other", files={"model.json": lambda path: path.write_text("{}")})


def test_a_card_saved_without_facts_says_what_is_unknown(tmp_path):
    folder = io.save(_tiny_model(), tmp_path / "model", architecture="tiny", class_names=["benign", "malignant"])
    text = (folder / "MODEL_CARD.md").read_text()
    assert "- not recorded (the model was saved outside the training runner)" in text
    assert "Not known when the model was saved." in text and "research use only" in text.lower()


def test_the_card_is_checksummed_and_travels_with_the_model(tmp_path):
    card, _ = _card()
    folder = io.save(_tiny_model(), tmp_path / "model", architecture="tiny", class_names=["benign", "malignant"],
                     preprocessing=PREPROCESSING, card=card)
    load_model_folder(folder)  # predict's verification passes with the card listed
    archive = io.pack(folder, tmp_path / "model.zip")
    with zipfile.ZipFile(archive) as bundle:
        assert "MODEL_CARD.md" in bundle.namelist()
    unpacked = io.unpack(archive, tmp_path / "laptop")
    assert (unpacked / "MODEL_CARD.md").read_text() == (folder / "MODEL_CARD.md").read_text()
    (folder / "MODEL_CARD.md").write_text((folder / "MODEL_CARD.md").read_text().replace("cpu", "paper"))
    with pytest.raises(DataError, match=r"MODEL_CARD\.md: sha256 mismatch"):
        load_model_folder(folder)
