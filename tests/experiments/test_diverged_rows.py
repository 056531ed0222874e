"""A row whose loss diverges is reported as diverged (where, in which stage and epoch) and the run
goes on; ensembles of it wait for members with scores instead of combining NaN."""
from __future__ import annotations

import pandas as pd
import pytest

from mammo_keras.cli import main
from mammo_keras.errors import TrainingDiverged
from mammo_keras.runner import kinds


@pytest.mark.usefixtures("isolated_cache")
def test_diverged_rows_are_reported_and_their_ensembles_skipped(tmp_path, monkeypatch):
    monkeypatch.delenv("MAMMO_DATA", raising=False)
    trained = []

    def diverges(self, job, build, spec, data, test, explain):
        trained.append(job.row.label)
        raise TrainingDiverged("fine_tune", 1, job.folder / "fold_0" / "log.csv")

    monkeypatch.setattr(kinds.CrossValidation, "train", diverges)
    results = tmp_path / "results"
    assert main(["reproduce", "coccomini2021/ensembles_mass_vs_calc", "--profile", "tiny",
                 "--results", str(results)]) == 0
    assert trained == ["vgg16_pretrained", "resnet50_pretrained", "vgg16_tuned"]
    out = results / "coccomini2021" / "ensembles_mass_vs_calc"
    table = pd.read_csv(out / "table.csv").set_index("model")
    for label in trained:
        assert table.loc[label, "status"].startswith("diverged: the training loss became NaN or infinite in "
                                                     "stage 'fine_tune', epoch 1"), table.loc[label, "status"]
    for label in ("stack_pretrained", "weighted_average_pretrained", "average_pretrained"):
        assert table.loc[label, "status"] == ("skipped: members without results: resnet50_pretrained, "
                                              "vgg16_pretrained, vgg16_tuned")
    assert "| diverged: the training loss" in (out / "table.md").read_text()


@pytest.mark.usefixtures("isolated_cache")
def test_a_diverged_detector_is_reported_and_the_next_row_runs(tmp_path, monkeypatch):
    from mammo_keras.runner import detection

    monkeypatch.delenv("MAMMO_DATA", raising=False)
    tried = []

    def diverges(config, row, split, out, progress):
        tried.append(row.label)
        raise TrainingDiverged("detector", 2, out / "log.csv")

    monkeypatch.setattr(detection, "run_row", diverges)
    results = tmp_path / "results"
    assert main(["reproduce", "hamed2020/table3", "--profile", "tiny", "--results", str(results)]) == 0
    table = pd.read_csv(results / "hamed2020" / "table3" / "table.csv")
    ran = table[table["status"] != "ok"]
    assert len(tried) >= 2 and set(tried) <= set(table["model"])  # every row tried, none stopped the run
    for label in tried:
        status = table.loc[table["model"] == label, "status"].iloc[0]
        assert status.startswith("diverged: the training loss became NaN or infinite in stage 'detector', epoch 2")
    assert len(ran) == len(tried)
