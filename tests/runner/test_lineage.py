"""Chained runs never test on women an earlier model learned from (runner.lineage).

Synthetic results folders stand in for the earlier runs: a referenced row is its own saved split
(split.csv or folds.csv), a weights file and, for a chain of three, its upstream_patients.csv.
"""
from __future__ import annotations

import types

import pandas as pd
import pytest

from mammo_keras.config import load_config
from mammo_keras.data.splits import LeakageError, load_assignments, moved_patients, save_assignments, upstream_leaks
from mammo_keras.io import WEIGHTS_FILE
from mammo_keras.runner.kinds import RowRun, table_split
from mammo_keras.runner.lineage import UPSTREAM_FILE, check_references, references, trained_patients

PATIENTS = [f"p{number:02d}" for number in range(20)]


def index_of(patients=PATIENTS) -> pd.DataFrame:
    """Two items per patient, both classes in every patient's pair (any stratified split is possible)."""
    return pd.DataFrame([{"item_id": f"{patient}_{view}", "image_id": f"{patient}_{view}", "patient_id": patient,
                          "label": view} for patient in patients for view in (0, 1)])


def split_of(parts: dict[str, str]) -> pd.DataFrame:
    """A split table (patient_id, split) from {patient: part}, two items each."""
    return pd.DataFrame([{"image_id": f"{patient}_{view}", "lesion_id": f"{patient}_{view}", "patient_id": patient,
                          "split": part} for patient, part in parts.items() for view in (0, 1)])


def parts(train=(), val=(), test=()) -> dict[str, str]:
    return {**{p: "train" for p in train}, **{p: "val" for p in val}, **{p: "test" for p in test}}


def saved_row(results, table, dataset, row, *, split=None, folds=None, weights=f"test/model/{WEIGHTS_FILE}"):
    """A referenced row's folder: its own split.csv (or folds.csv) and a saved weights file."""
    folder = results / "shen2017" / table / dataset / row
    if split is not None:
        save_assignments(split_of(split), folder / "split.csv")
    if folds is not None:
        save_assignments(pd.DataFrame([{"image_id": p, "lesion_id": p, "patient_id": p, "fold": fold}
                                       for p, fold in folds.items()]), folder / "folds.csv")
    (folder / weights).parent.mkdir(parents=True, exist_ok=True)
    (folder / weights).write_bytes(b"weights")
    return folder


def job_of(config, label, results, dataset, split):
    """The RowRun the runner builds for one row of a hold-out table sharing `split` (patient_id, split)."""
    row = next(row for row in config.models if row.label == label)
    out = results / config.paper / config.table / dataset
    data = types.SimpleNamespace(index=index_of(sorted(set(split["patient_id"]))), absent="", name=dataset)
    return RowRun(config, row, dataset, data, out, dict(row.options), lambda message: None,
                  split[["patient_id", "split"]], None)


WHOLE = load_config("shen2017/model_averaging", "tiny")  # vgg_vgg starts from table1's s10_vgg16_pretrained


def test_upstream_leaks_rules():
    trained = pd.DataFrame({"patient_id": ["a", "b", "c", "c"], "part": ["train", "val", "val", "train"]})
    evaluated = pd.DataFrame({"patient_id": ["a", "b", "c", "d", "b"], "part": ["test", "val", "val", "test", "test"]})
    leaks = upstream_leaks(evaluated, trained)
    # a: tested, trained there; b: tested (also validated) here, validated there; c: validated here, trained
    # there (train is the strictest of its parts); d: unknown there.
    assert leaks.to_dict("records") == [{"patient_id": "a", "part": "test", "trained_part": "train"},
                                        {"patient_id": "b", "part": "test", "trained_part": "val"},
                                        {"patient_id": "c", "part": "val", "trained_part": "train"}]
    # validated here and validated there: a chain keeping one split does exactly that (Shen's tables)
    assert upstream_leaks(evaluated[evaluated["patient_id"] == "b"].head(1), trained).empty


def test_a_row_whose_test_women_its_starting_model_trained_on_is_refused(tmp_path):
    """Finding 1: table1's split.csv redrawn after its row trained; the chained table reads the new one."""
    results = tmp_path / "results"
    trained_on = parts(train=PATIENTS[:14], val=PATIENTS[14:16], test=PATIENTS[16:])
    saved_row(results, "table1", "phantom", "s10_vgg16_pretrained", split=trained_on)
    redrawn = parts(train=PATIENTS[6:20], val=PATIENTS[4:6], test=PATIENTS[:4])  # p00-p03 tested, trained there
    job = job_of(WHOLE, "vgg_vgg", results, "phantom", split_of(redrawn))
    with pytest.raises(ValueError) as error:
        check_references(job, references(job.row.options), results)
    message = str(error.value)
    assert isinstance(error.value, LeakageError)
    assert "learned from 6 of the patients" in message  # p00-p03 tested and p04-p05 validated, all trained there
    assert "p00 (test here, train there)" in message and "p04 (val here, train there)" in message
    assert "s10_vgg16_pretrained/split.csv" in message and "model_averaging/phantom/split.csv" in message
    assert "keeps the patient split of shen2017/table1" in message and "new --results folder" in message
    assert not (job.folder / UPSTREAM_FILE).exists()


def test_a_row_on_its_starting_models_split_passes_and_records_the_chain(tmp_path):
    results = tmp_path / "results"
    trained_on = parts(train=PATIENTS[:14], val=PATIENTS[14:16], test=PATIENTS[16:])
    saved_row(results, "table1", "phantom", "s10_vgg16_pretrained", split=trained_on)
    job = job_of(WHOLE, "vgg_vgg", results, "phantom", split_of(trained_on))  # split_from: the same parts
    check_references(job, references(job.row.options), results)
    recorded = pd.read_csv(job.folder / UPSTREAM_FILE, dtype=str)
    assert sorted(recorded["patient_id"]) == PATIENTS[:16] and set(recorded["part"]) == {"train", "val"}


def test_a_chain_of_three_is_checked_end_to_end(tmp_path):
    """Table 4 -> model_averaging -> table1: a woman table1 trained on but model_averaging never saw
    (fewer items there) may not be in Table 4's test part."""
    results = tmp_path / "results"
    middle = saved_row(results, "model_averaging", "phantom", "vgg_vgg",
                       split=parts(train=PATIENTS[:10], val=PATIENTS[10:12], test=PATIENTS[12:16]))
    pd.DataFrame({"patient_id": ["p18", "p01"], "part": ["train", "train"], "source": "table1 split.csv"}) \
        .to_csv(middle / UPSTREAM_FILE, index=False)
    table4 = load_config("shen2017/table4", "tiny")
    split = split_of(parts(train=PATIENTS[:10], val=PATIENTS[10:12], test=[*PATIENTS[12:16], "p18"]))
    job = job_of(table4, "vgg_vgg_all", results, "phantom", split)
    with pytest.raises(ValueError, match=r"learned from 1 of the patients .*p18 \(test here, train there\)"):
        check_references(job, references(job.row.options), results)
    job = job_of(table4, "vgg_vgg_all", results, "phantom", split[split["patient_id"] != "p18"])
    check_references(job, references(job.row.options), results)


def test_a_fold_model_learned_from_every_patient_outside_its_fold(tmp_path):
    results = tmp_path / "results"
    folds = {p: number % 3 for number, p in enumerate(PATIENTS)}
    saved_row(results, "table1", "phantom", "s10_vgg16_pretrained", folds=folds, weights=f"fold_1/model/{WEIGHTS_FILE}")
    reference = {"results": "shen2017/table1", "row": "s10_vgg16_pretrained", "file": f"fold_1/model/{WEIGHTS_FILE}"}
    trained = trained_patients(reference, results, "phantom")
    assert sorted(trained["patient_id"]) == sorted(p for p, fold in folds.items() if fold != 1)
    whole_row = dict(reference, file="log.csv")  # a file of the whole row: any fold's model, every patient
    assert sorted(trained_patients(whole_row, results, "phantom")["patient_id"]) == PATIENTS
    config = load_config("shen2017/model_averaging", "tiny", overrides={
        "row_overrides": {"vgg_vgg": {"options": {"patch_weights": reference}}}})
    fold_1 = [p for p, fold in folds.items() if fold == 1]
    ok = split_of(parts(train=[p for p in PATIENTS if p not in fold_1], test=fold_1))
    check_references(job_of(config, "vgg_vgg", results, "phantom", ok), references(config.models[0].options), results)
    leaky = split_of(parts(train=fold_1[1:], test=[fold_1[0], "p00"]))
    with pytest.raises(ValueError, match=r"p00 \(test here, train there\)"):
        check_references(job_of(config, "vgg_vgg", results, "phantom", leaky), references(config.models[0].options),
                         results)


def test_a_referenced_row_without_a_saved_split_cannot_be_checked(tmp_path):
    results = tmp_path / "results"
    saved_row(results, "table1", "phantom", "s10_vgg16_pretrained")
    job = job_of(WHOLE, "vgg_vgg", results, "phantom", split_of(parts(train=PATIENTS[:10], test=PATIENTS[10:])))
    with pytest.raises(ValueError, match="no split.csv or folds.csv.*new --results folder"):
        check_references(job, references(job.row.options), results)


def test_shen_table2s_s1_row_is_checked_against_the_s1_classifiers_own_split(tmp_path):
    """Finding 2: row resnet_resnet_s1 starts from table1_s1, whose patients new to table1 got a fresh
    split of their own; table2 keeps table1's split and draws the same new patients again."""
    results = tmp_path / "results"
    table1 = parts(train=PATIENTS[:8], val=PATIENTS[8:9], test=PATIENTS[9:12])
    saved_row(results, "table1_s1", "cbis_ddsm", "s1_resnet50_pretrained",
              split={**table1, **parts(train=PATIENTS[12:18], test=PATIENTS[18:])})
    table2 = load_config("shen2017/table2", "paper")
    split = split_of({**table1, **parts(train=PATIENTS[14:20], test=PATIENTS[12:14])})  # p12, p13: S1-trained
    job = job_of(table2, "resnet_resnet_s1", results, "cbis_ddsm", split)
    with pytest.raises(ValueError, match=r"learned from 2 of the patients.*p12 \(test here, train there\)"):
        check_references(job, references(job.row.options), results)


def test_shen_table4_tiny_keeps_model_averagings_split_and_passes(tmp_path):
    """Finding 3: at the tiny profile Table 4 fine-tunes model_averaging's phantom model on the same
    phantom; with its own fresh split its test women were trained on upstream, with `split_from` not."""
    results = tmp_path / "results"
    data = types.SimpleNamespace(index=index_of(), absent="")
    for config in (load_config("shen2017/table1", "tiny"), WHOLE):  # the chain's table-level splits
        split, missing = table_split(config, "phantom", data, results / "shen2017" / config.table, results,
                                     lambda message: None)
        assert not missing
    averaging = split
    saved_row(results, "model_averaging", "phantom", "vgg_vgg", split=dict(zip(averaging.patient_id, averaging.split)))
    table4 = load_config("shen2017/table4", "tiny")
    assert table4.split_from == "shen2017/model_averaging" and not load_config("shen2017/table4", "paper").split_from
    split, missing = table_split(table4, "phantom", data, results / "shen2017" / "table4", results,
                                 lambda message: None)
    assert not missing
    for label in ("vgg_vgg_20p", "vgg_vgg_all"):
        job = job_of(table4, label, results, "phantom", split)
        check_references(job, references(job.row.options), results)
    own = load_config("shen2017/table4", "tiny", overrides={"split_from": ""})  # before: a fresh split of its own
    fresh = table_split(own, "phantom", data, tmp_path / "elsewhere", results, lambda message: None)[0]
    with pytest.raises(ValueError, match=r"starts from a saved model.*give this config `split_from: "
                                         r"shen2017/model_averaging`"):
        check_references(job_of(own, "vgg_vgg_all", results, "phantom", fresh), references(own.models[-1].options),
                         results)


def test_a_saved_split_is_not_redrawn_under_finished_rows(tmp_path):
    """Finding 1's cause: rerunning table1 with another seed overwrote split.csv under its reused rows."""
    results = tmp_path / "results"
    out = results / "shen2017" / "table1"
    data = types.SimpleNamespace(index=index_of(), absent="")
    first = load_config("shen2017/table1", "tiny")
    table_split(first, "phantom", data, out, results, lambda message: None)
    saved = (out / "phantom" / "split.csv").read_text()
    reseeded = load_config("shen2017/table1", "tiny", overrides={"seed": 3})
    table_split(reseeded, "phantom", data, out, results, lambda message: None)  # nothing finished: redrawn
    redrawn = (out / "phantom" / "split.csv").read_text()
    assert redrawn != saved
    done = out / "phantom" / "s10_vgg16_pretrained" / "test" / "predictions.csv"
    done.parent.mkdir(parents=True)
    done.write_text("item_id,score\n")
    table_split(reseeded, "phantom", data, out, results, lambda message: None)  # the same draw: fine
    with pytest.raises(ValueError) as error:
        table_split(first, "phantom", data, out, results, lambda message: None)
    message = str(error.value)
    moved = moved_patients(load_assignments(out / "phantom" / "split.csv"), _draw(first, data))
    assert f"puts {len(moved)} patients in another part" in message and len(moved) > 1
    patient, (before, after) = next(iter(moved.items()))
    assert f"{patient} ({before} -> {after})" in message
    assert "(s10_vgg16_pretrained)" in message and "new --results folder" in message and "remove" in message
    assert (out / "phantom" / "split.csv").read_text() == redrawn  # kept as the finished row's


def _draw(config, data):
    from mammo_keras.training.cv import holdout_split

    return holdout_split(data.index, fractions=config.fractions, seed=config.seed)[0]


def test_a_saved_split_is_not_redrawn_under_a_rows_training_backup(tmp_path):
    results = tmp_path / "results"
    out = results / "shen2017" / "table1"
    data = types.SimpleNamespace(index=index_of(), absent="")
    table_split(load_config("shen2017/table1", "tiny"), "phantom", data, out, results, lambda message: None)
    backup = out / "phantom" / "s10_vgg16_pretrained" / "test" / "backup" / "backup.npz"
    backup.parent.mkdir(parents=True)
    backup.write_bytes(b"state")
    with pytest.raises(ValueError, match="another part than this saved split"):
        table_split(load_config("shen2017/table1", "tiny", overrides={"seed": 3}), "phantom", data, out, results,
                    lambda message: None)


@pytest.mark.usefixtures("isolated_cache")
def test_reproduce_refuses_the_chained_row_before_it_trains(tmp_path, monkeypatch):
    """End to end (phantom): table1's split.csv no longer matches what its finished row trained on (e.g.
    removed and redrawn by hand); table3 keeps the table-level split, and its row is refused, untrained."""
    from mammo_keras.reproduce import reproduce

    monkeypatch.delenv("MAMMO_DATA", raising=False)
    results = tmp_path / "results"
    women = [f"phantom_P{number:03d}" for number in range(1, 13)]
    table = parts(train=women[:6], val=women[6:8], test=women[8:])
    save_assignments(split_of(table), results / "shen2017" / "table1" / "phantom" / "split.csv")
    saved_row(results, "table1", "phantom", "s10_vgg16_pretrained",
              split=parts(train=women[4:], val=women[2:4], test=women[:2]))
    with pytest.raises(ValueError, match=r"row 'row4' on phantom starts from a saved model .*learned from 6 of"):
        reproduce(load_config("shen2017/table3", "tiny", overrides={"n_bootstrap": 10}), results_dir=results,
                  progress=lambda message: None)
    assert not (results / "shen2017" / "table3" / "phantom" / "row4" / "test").exists()
