"""`mammo-keras score`: levels by hand on a tiny CSV, pF1 by hand, thresholds, bootstrap, calibration."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn import metrics as skm

from mammo_keras.cli import build_parser, main
from mammo_keras.errors import DataError
from mammo_keras.evaluation import metrics, scoring

# Three women, CC and MLO of each breast; a breast's label is on each of its images (RSNA style).
# Breast scores (the mean of the two views): p1 L 0.8 (cancer), p1 R 0.3, p2 L 0.4, p2 R 0.6
# (cancer), p3 L 0.2, p3 R 0.7.
IMAGES = [
    ("p1", "L", "CC", 1, 0.9), ("p1", "L", "MLO", 1, 0.7), ("p1", "R", "CC", 0, 0.2), ("p1", "R", "MLO", 0, 0.4),
    ("p2", "L", "CC", 0, 0.6), ("p2", "L", "MLO", 0, 0.2), ("p2", "R", "CC", 1, 0.5), ("p2", "R", "MLO", 1, 0.7),
    ("p3", "L", "CC", 0, 0.1), ("p3", "L", "MLO", 0, 0.3), ("p3", "R", "CC", 0, 0.65), ("p3", "R", "MLO", 0, 0.75),
]
# Validation breasts: positives 0.9 and 0.65, negatives 0.1, 0.62, 0.3 -> Youden optimum at 0.65 (J = 1).
VAL = [("v1", "L", 1, 0.9), ("v1", "R", 0, 0.1), ("v2", "L", 0, 0.62), ("v2", "R", 1, 0.65), ("v3", "L", 0, 0.3)]


@pytest.fixture
def predictions_csv(tmp_path):
    frame = pd.DataFrame(IMAGES, columns=["patient_id", "laterality", "view", "label", "score"])
    frame.insert(0, "image_id", [f"{p}_{s}_{v}" for p, s, v, *_ in IMAGES])
    frame.to_csv(tmp_path / "predictions.csv", index=False)
    return tmp_path / "predictions.csv"


@pytest.fixture
def val_csv(tmp_path):
    frame = pd.DataFrame(VAL, columns=["patient_id", "laterality", "label", "score"])
    frame.insert(0, "image_id", [f"{p}_{s}" for p, s, *_ in VAL])
    frame.to_csv(tmp_path / "val.csv", index=False)
    return tmp_path / "val.csv"


def test_breast_level_auc_and_pf1_by_hand(predictions_csv, capsys):
    assert main(["score", str(predictions_csv), "--level", "breast", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    breast = report["levels"]["breast"]
    assert (breast["n"], breast["positives"], breast["patients"]) == (6, 2, 3)
    # 2 positive x 4 negative breasts; only (0.6, 0.7) is ranked wrong -> 7/8
    assert breast["auroc"]["value"] == pytest.approx(7 / 8)
    assert breast["auroc"]["low"] <= 7 / 8 <= breast["auroc"]["high"]
    # pTP = 0.8 + 0.6, pFP = 0.3 + 0.4 + 0.2 + 0.7: pPrecision 1.4/3.0 = 7/15, pRecall 1.4/2 = 7/10
    assert breast["pf1"]["value"] == pytest.approx(2 * (7 / 15) * (7 / 10) / (7 / 15 + 7 / 10))
    assert breast["pf1"]["value"] == pytest.approx(0.56)
    # threshold 0.5 without --val: both positives found, 0.7 is the one false positive of four
    assert breast["threshold"] == 0.5 and "no validation file given" in breast["threshold_rule"]
    assert (breast["sensitivity"]["value"], breast["specificity"]["value"]) == (1.0, 0.75)
    # AP: ranked 0.8+, 0.7-, 0.6+, ... -> (1/1 + 2/3) / 2
    assert breast["auprc"]["value"] == pytest.approx((1 + 2 / 3) / 2)
    assert list(report["levels"]) == ["breast"]


def test_levels_aggregate_as_stated(predictions_csv, capsys):
    report = scoring.score_file(predictions_csv, n_replicates=200)
    image, exam = report["levels"]["image"], report["levels"]["exam"]
    labels, scores = [row[3] for row in IMAGES], [row[4] for row in IMAGES]
    assert image["auroc"]["value"] == pytest.approx(skm.roc_auc_score(labels, scores))
    # exams are the patients here; mean over breasts (the default): p1 0.55 (+), p2 0.5 (+), p3 0.45 (-) -> 1.0
    assert exam["n"] == 3 and exam["auroc"]["value"] == pytest.approx(1.0)
    max_rule = scoring.score_levels(scoring.read_predictions(predictions_csv), levels=["exam"],
                                    exam_rule="max", n_replicates=50)
    # max over breasts: p1 0.8 (+), p2 0.6 (+), p3 0.7 (-) -> 1 of 2 pairs
    assert max_rule["levels"]["exam"]["auroc"]["value"] == pytest.approx(0.5)
    assert "exam = patient; its score is the mean of its breasts" in report["notes"]
    assert main(["score", str(predictions_csv), "--replicates", "100"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split()[:3] == ["level", "n", "pos"]
    assert [line.split()[0] for line in text.splitlines()[1:4]] == ["image", "breast", "exam"]
    assert "breast       6     2  0.875 [" in text
    assert "threshold for sensitivity/specificity: 0.5: no validation file given (--val), not tuned (t = 0.5)" in text


def test_threshold_from_validation_is_the_youden_optimum(predictions_csv, val_csv, capsys):
    assert scoring.youden_threshold([1, 0, 0, 1, 0], [0.9, 0.1, 0.62, 0.65, 0.3]) == 0.65
    # ties: 0.4 and 0.8 both give J = 0.5; the higher threshold is taken
    assert scoring.youden_threshold([0, 1, 0, 1], [0.2, 0.4, 0.6, 0.8]) == 0.8
    assert main(["score", str(predictions_csv), "--level", "breast", "--val", str(val_csv), "--json"]) == 0
    breast = json.loads(capsys.readouterr().out)["levels"]["breast"]
    assert breast["threshold"] == 0.65 and breast["threshold_rule"].startswith("Youden optimum")
    # at 0.65: 0.8 found, 0.6 missed; 0.7 is still a false positive
    assert (breast["sensitivity"]["value"], breast["specificity"]["value"]) == (0.5, 0.75)
    with pytest.raises(ValueError, match=r"needs both classes there. Received: labels \[0\] only"):
        scoring.youden_threshold([0, 0], [0.1, 0.2])


def test_vectorised_bootstrap_matches_bootstrap_ci_and_sklearn(predictions_csv):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.uniform(size=60), 2)  # rounded: ties, which count half
    frame = pd.DataFrame({"image_id": [f"i{k}" for k in range(60)], "patient_id": [f"p{k}" for k in range(60)],
                          "laterality": "", "exam_id": "", "label": labels, "score": scores})
    report = scoring.score_levels(frame, levels=["image"], resample="unit", n_replicates=300, seed=5)
    expected = metrics.bootstrap_ci(labels, scores, "auc", n_replicates=300, seed=5)
    got = report["levels"]["image"]["auroc"]
    np.testing.assert_allclose([got["value"], got["low"], got["high"]], expected, rtol=1e-12)
    # the replicates themselves, against scikit-learn on the resampled cases
    draws = np.random.default_rng(5).integers(0, 60, size=(300, 60))
    replicates = scoring._bootstrap(labels, scores, np.arange(60), 0.5, n_replicates=300, seed=5)
    for k in (0, 1, 150, 299):
        y, s = labels[draws[k]], scores[draws[k]]
        assert replicates["auroc"][k] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
        assert replicates["auprc"][k] == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
        assert replicates["sensitivity"][k] == pytest.approx(metrics.sensitivity(y, s), abs=1e-12)
        assert replicates["specificity"][k] == pytest.approx(metrics.specificity(y, s), abs=1e-12)
        assert replicates["pf1"][k] == pytest.approx(scoring.pf1(y, s), abs=1e-12)


def test_patient_bootstrap_keeps_a_womans_breasts_together(predictions_csv):
    frame = scoring.read_predictions(predictions_csv)
    by_patient = scoring.score_levels(frame, levels=["breast"], n_replicates=400, seed=1)
    by_unit = scoring.score_levels(frame, levels=["breast"], resample="unit", n_replicates=400, seed=1)
    assert by_patient["resample"] == "patient" and by_unit["resample"] == "unit"
    # three clusters instead of six units: the replicates differ, the point estimate does not
    assert by_patient["levels"]["breast"]["auroc"]["value"] == by_unit["levels"]["breast"]["auroc"]["value"]
    assert by_patient["levels"]["breast"]["auroc"] != by_unit["levels"]["breast"]["auroc"]


def test_package_predictions_take_laterality_from_the_index(tmp_path, capsys):
    rows = [(f"img{k}", patient, side, label, score) for k, (patient, side, _, label, score) in enumerate(IMAGES)]
    pd.DataFrame({"item_id": [r[0] for r in rows], "patient_id": [r[1] for r in rows], "label": [r[3] for r in rows],
                  "fold": 0, "score": [r[4] for r in rows]}).to_csv(tmp_path / "predictions.csv", index=False)
    pd.DataFrame({"item_id": [r[0] for r in rows], "image_id": [r[0] for r in rows],
                  "patient_id": [r[1] for r in rows], "laterality": [r[2] for r in rows]}).to_csv(
        tmp_path / "index.csv", index=False)
    report = scoring.score_file(tmp_path / "predictions.csv", index=tmp_path / "index.csv", n_replicates=100)
    assert report["levels"]["breast"]["auroc"]["value"] == pytest.approx(7 / 8)
    plain = scoring.score_file(tmp_path / "predictions.csv", n_replicates=100)
    assert list(plain["levels"]) == ["image", "exam"]
    assert plain["notes"][0].startswith("breast level needs laterality")
    assert main(["score", str(tmp_path / "predictions.csv"), "--level", "breast"]) == 1
    assert "the breast level needs the side of every image" in capsys.readouterr().err


def test_calibration_brier_ece_and_reliability_png(predictions_csv, tmp_path, capsys):
    result = scoring.calibration([0, 1, 1, 0], [0.12, 0.83, 0.35, 0.15])
    assert result["brier"] == pytest.approx((0.12 ** 2 + 0.17 ** 2 + 0.65 ** 2 + 0.15 ** 2) / 4)
    # bins of width 0.1: 0.12 and 0.15 (both negative) in 0.1-0.2, 0.35 (+) in 0.3-0.4, 0.83 (+) in 0.8-0.9
    assert result["ece"] == pytest.approx(0.5 * 0.135 + 0.25 * 0.65 + 0.25 * 0.17)
    assert [b["count"] for b in result["bins"]] == [0, 2, 0, 1, 0, 0, 0, 0, 1, 0]
    assert result["bins"][1]["mean_score"] == pytest.approx(0.135) and result["bins"][1]["observed"] == 0.0
    out = tmp_path / "reliability.png"
    assert main(["score", str(predictions_csv), "--calibration", str(out), "--replicates", "50"]) == 0
    assert f"reliability diagram: {out}" in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 300


def test_bad_rows_name_file_and_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("image_id,patient_id,laterality,label,score\na,p1,L,1,0.5\nb,p1,R,2,0.4\n")
    with pytest.raises(DataError, match=r"bad.csv:3: label must be 0 or 1 \(1 = cancer\). Received: '2'"):
        scoring.read_predictions(path)
    path.write_text("image_id,patient_id,laterality,label,score\na,p1,X,1,0.5\n")
    with pytest.raises(DataError, match=r"bad.csv:2: laterality must be L or R"):
        scoring.read_predictions(path)
    path.write_text("image_id,patient_id,label,score\na,p1,1,nan\n")
    with pytest.raises(DataError, match=r"bad.csv:2: score must be a finite number"):
        scoring.read_predictions(path)
    path.write_text("image_id,patient_id,label,score\na,p1,1,0.5\nb,p2,0,7.5\n")  # a logit, not a probability
    with pytest.raises(DataError, match=r"bad.csv:3: score must be a probability in \[0, 1\].*Received: '7.5'"):
        scoring.read_predictions(path)
    path.write_text("item_id,patient_id,label,fold,pred,p0,p1\na,p1,1,0,1,0.2,0.8\n")
    with pytest.raises(DataError, match=r"multi-class predictions file"):
        scoring.read_predictions(path)
    path.write_text("image_id,label,score\na,1,0.5\n")
    with pytest.raises(DataError, match=r"Missing: \['patient_id'\]"):
        scoring.read_predictions(path)


def test_cli_choices_are_the_modules():
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    options = {a.dest: a for a in commands.choices["score"]._actions}
    assert tuple(options["level"].choices) == scoring.LEVELS
    assert tuple(options["exam_rule"].choices) == scoring.EXAM_RULES
    assert options["replicates"].default == scoring.N_REPLICATES


@pytest.mark.parametrize("function", [scoring.pf1, scoring.calibration, scoring.youden_threshold])
def test_the_pure_scoring_functions_refuse_nan_scores_and_labels_other_than_0_or_1(function):
    """Before: pf1 and calibration took NaN scores and 0.9 labels silently; youden_threshold cast 0.9 to 0."""
    with pytest.raises(ValueError, match=r"y_score must be finite .* Received: 1 bad rows of 4, y_score\[bad\]=\[nan\]"):
        function([0, 1, 1, 0], [0.1, np.nan, 0.8, 0.2])
    for label in (0.9, 2):
        with pytest.raises(ValueError, match=rf"y_true must hold the labels 0 and 1. Received: 1 bad rows of 4, "
                                             rf"y_true\[bad\]=\[{float(label)}\]"):
            function([0, label, 1, 0], [0.1, 0.3, 0.8, 0.2])


def test_patient_ids_differing_only_by_case_or_spaces_are_one_patient(tmp_path):
    """Before: 'P1' and ' p1 ' were two patients (two bootstrap clusters, two exams)."""
    path = tmp_path / "ids.csv"
    path.write_text("image_id,patient_id,laterality,label,score\na,P1,L,1,0.9\nb, p1 ,R,0,0.2\nc,P1,R,0,0.3\n"
                    "d,p2,L,0,0.1\n")
    table = scoring.read_predictions(path)
    assert list(table["patient_id"]) == ["P1", "P1", "P1", "p2"]
    assert table.attrs["problems"] == ["patient ids [' p1 ', 'P1'] differ only by case or surrounding spaces: "
                                       "merged as 'P1'"]
    report = scoring.score_file(path, levels=["exam"], n_replicates=10)
    assert report["levels"]["exam"]["n"] == 2
    assert any("differ only by case" in note for note in report["notes"])
