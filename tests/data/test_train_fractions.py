"""A learning curve's patient subsampling (`data.splits.fraction_of_patients`): nested shares of each fold's
training patients, patient-level, stratified, seeded, and refused outside (0, 1] naming the config key."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammo_keras.config import load_config
from mammo_keras.data.splits import fraction_of_patients, patient_kfold

SHARES = (0.25, 0.5, 0.75, 1.0)


def _table(n_patients: int = 40, seed: int = 1) -> pd.DataFrame:
    """Patches of `n_patients` women: a quarter with background only, the others with lesion patches too."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        labels = [0] * int(rng.integers(2, 6)) + ([] if p % 4 == 0 else [1] * int(rng.integers(1, 4)))
        rows += [{"item_id": f"p{p}_{i}", "patient_id": f"w{p:03d}", "label": label} for i, label in enumerate(labels)]
    return pd.DataFrame(rows)


def _patients(table: pd.DataFrame, mask: np.ndarray) -> set[str]:
    return set(table.loc[mask, "patient_id"])


def test_shares_are_nested_patient_level_and_sized_by_the_share():
    table = _table()
    kept = [_patients(table, fraction_of_patients(table, share, seed=3)) for share in SHARES]
    assert [len(k) for k in kept] == [10, 20, 30, 40]  # round(share x 40) patients
    assert kept[0] <= kept[1] <= kept[2] <= kept[3] == set(table["patient_id"])
    for share, patients in zip(SHARES, kept):  # whole patients: every row of a kept woman, none of the others
        mask = fraction_of_patients(table, share, seed=3)
        assert (mask == table["patient_id"].isin(patients).to_numpy()).all()
        only_background = table.groupby("patient_id")["label"].max().eq(0)
        assert abs(sum(only_background[p] for p in patients) - share * 10) <= 1  # stratified: 10 of 40 such women


def test_deterministic_for_a_seed_independent_of_row_order_and_different_for_another_seed():
    table = _table()
    first = fraction_of_patients(table, 0.5, seed=7)
    shuffled = table.sample(frac=1.0, random_state=0)
    assert _patients(shuffled, fraction_of_patients(shuffled, 0.5, seed=7)) == _patients(table, first)
    assert (fraction_of_patients(table, 0.5, seed=7) == first).all()
    assert _patients(table, fraction_of_patients(table, 0.5, seed=8)) != _patients(table, first)


def test_both_classes_are_kept_where_the_table_has_them():
    table = pd.DataFrame({"item_id": [f"i{k}" for k in range(21)], "patient_id": [f"w{k}" for k in range(21)],
                          "label": [0] * 20 + [1]})  # one woman with a lesion among 21
    mask = fraction_of_patients(table, 0.05, seed=0)
    assert set(table.loc[mask, "label"]) == {0, 1} and mask.sum() == 2  # one drawn + the lesion's holder
    for share in (0.1, 0.3, 0.6):  # still nested with the class fill-in
        assert _patients(table, mask) <= _patients(table, fraction_of_patients(table, share, seed=0))


def test_a_fold_subsample_never_reaches_into_the_test_fold():
    table = _table(60)
    folds = patient_kfold(table.assign(image_id=table["item_id"], lesion_id=table["item_id"]), n_splits=5, seed=0,
                          label="label")["fold"].to_numpy()
    for fold in range(5):
        train = table[folds != fold]
        kept = _patients(train, fraction_of_patients(train, 0.25, seed=fold))
        assert not kept & set(table.loc[folds == fold, "patient_id"])
        assert abs(len(kept) - 0.25 * train["patient_id"].nunique()) <= 1


@pytest.mark.parametrize("value", [0, 0.0, -0.5, 1.5, "a", True, float("nan")])
def test_a_share_outside_zero_one_is_refused_naming_the_key(value):
    with pytest.raises(ValueError, match=r"`train_fractions` takes shares .* in \(0, 1\]"):
        fraction_of_patients(_table(), value, seed=0)


@pytest.mark.parametrize("value, message", [
    ([0], r"`train_fractions` takes shares of each fold's training patients, numbers in \(0, 1\]"),
    ([1.5], r"`train_fractions` takes shares .*Received: train_fractions entry 1.5"),
    (["a"], r"override train_fractions takes a list of numbers. Received: train_fractions=\['a'\]"),
    ([0.5, 0.5], r"`train_fractions` lists a share twice"),
    (0.5, r"override train_fractions takes a list of numbers"),
])
def test_config_refuses_bad_train_fractions(value, message):
    with pytest.raises(ValueError, match=message):
        load_config("mias_tasks/patches_2class", "tiny", overrides={"train_fractions": value})


def test_train_fractions_need_a_patient_level_cross_validation():
    with pytest.raises(ValueError, match="`train_fractions` subsamples .* needs kind 'cv'"):
        load_config("jain_levy/table2", "tiny", overrides={"train_fractions": [0.5, 1.0]})


def test_every_row_becomes_one_row_per_share():
    config = load_config("mias_tasks/learning_curve", "cpu")
    assert [row.label for row in config.models] == [f"{label}@{share}%" for label in
                                                    ("scratch_cnn", "baseline_lr", "baseline_rf")
                                                    for share in (25, 50, 75, 100)]
    assert [row.train_fraction for row in config.models[:4]] == list(SHARES)
    assert config.models[5].baseline["classifier"] == "logistic_regression"
    ordinary = load_config("mias_tasks/patches_2class", "cpu")
    assert config.models[3].options == ordinary.models[0].options and config.models[3].name == ordinary.models[0].name
