"""Stages, the generic fit loop and patient-level cross-validation on a tiny learnable task."""
from __future__ import annotations

import dataclasses
import io
import sys
import types

import keras
import numpy as np
import pandas as pd
import pytest

from mammo_keras.training import cv
from mammo_keras.training.fit import balanced_class_weight, fit_stages
from mammo_keras.training.stages import PRESETS, SelectorError, Stage, apply_trainable, make_optimizer, preset


def tiny_task(n_patients=24, per_patient=2, size=16, seed=0):
    """Bright centre = malignant, dark centre = benign; two items per patient."""
    rng = np.random.default_rng(seed)
    n = n_patients * per_patient
    labels = np.array([(i // per_patient) % 2 for i in range(n)])
    images = rng.normal(0, 0.1, (n, size, size)).astype(np.float32)
    images[:, 4:12, 4:12] += np.where(labels == 1, 1.0, -1.0)[:, None, None]
    index = pd.DataFrame({"item_id": [f"i{i:03d}" for i in range(n)],
                          "image_id": [f"i{i:03d}" for i in range(n)],
                          "patient_id": [f"p{i // per_patient:03d}" for i in range(n)], "label": labels})
    return images, index


def tiny_model():
    inputs = keras.Input((16, 16, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="block1_conv1")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs)


def test_stage_validation_and_scaling():
    with pytest.raises(ValueError, match="Received: optimizer='adagrad'"):
        Stage("x", 1, optimizer="adagrad")
    with pytest.raises(ValueError, match="Received: trainable='top'"):
        Stage("x", 1, trainable="top")
    stage = Stage("s", 90, plateau_patience=10, early_stopping_patience=20)
    small = stage.scaled(0.1)
    assert (small.epochs, small.plateau_patience, small.early_stopping_patience) == (9, 1, 2)
    chougrad = preset("chougrad2018")
    assert [s.epochs for s in chougrad] == [30, 90] and chougrad[1].learning_rate == 1e-4
    assert chougrad[0].optimizer == "adam" and chougrad[1].batch_size == 128
    assert set(PRESETS) >= {"chougrad2018", "shen2017_patch_resnet50", "shen2017_patch_vgg16", "shen2017_whole",
                            "jain_levy_deeper", "jain_levy_shallow", "jain_levy_alexnet", "jain_levy_scratch",
                            "coccomini2021"}


def test_apply_trainable_by_name_pattern():
    model = tiny_model()
    apply_trainable(model, "re:^(head_|predictions)")
    assert {l.name: l.trainable for l in model.layers if l.weights} == {
        "block1_conv1": False, "predictions": True}
    apply_trainable(model, "all")
    assert all(l.trainable for l in model.layers)
    with pytest.raises(SelectorError, match=r"'re:\^nothing' matches no layer with weights.*block1 \(1\), "
                                            r"predictions \(1\)"):
        apply_trainable(model, "re:^nothing")
    # head_pool has no weights: a pattern that selects only weightless layers selects nothing
    with pytest.raises(SelectorError, match="matches no layer with weights"):
        apply_trainable(model, "re:^head_")


def test_poly_schedule_decays_to_zero():
    optimizer = make_optimizer(Stage("p", 2, schedule="poly", learning_rate=0.1, poly_power=1.0), 5)
    schedule = optimizer.learning_rate if callable(optimizer.learning_rate) else optimizer._learning_rate
    assert np.isclose(float(schedule(0)), 0.1) and np.isclose(float(schedule(5)), 0.05)
    assert np.isclose(float(schedule(10)), 0.0)


def test_balanced_class_weight():
    assert balanced_class_weight(np.array([0, 0, 0, 1])) == {0: 4 / 6, 1: 2.0}


def test_fit_stages_learns_and_logs(tmp_path):
    images, index = tiny_task()
    keras.utils.set_random_seed(0)
    model = tiny_model()
    stages = [Stage("head", 2, optimizer="adam", learning_rate=1e-2, trainable="re:^predictions"),
              Stage("all", 6, optimizer="adam", learning_rate=1e-2, batch_size=8, schedule="plateau",
                    plateau_patience=1, early_stopping_patience=3)]
    log = fit_stages(model, stages, (images[:40], index.label[:40]), (images[40:], index.label[40:]),
                     log_csv=tmp_path / "log.csv")
    assert list(log["stage"][:2]) == ["head", "head"] and log["stage"].iloc[-1] == "all"
    assert log["loss"].iloc[-1] < log["loss"].iloc[0]
    assert pd.read_csv(tmp_path / "log.csv").shape[0] == len(log)
    predictions = model.predict(images[40:, ..., None], verbose=0).argmax(axis=1)
    assert (predictions == index.label[40:].to_numpy()).mean() >= 0.85


STAGES = (Stage("all", 4, optimizer="adam", learning_rate=2e-2, batch_size=8),)


def test_cross_validation_is_patient_level_and_resumes(tmp_path, monkeypatch):
    images, index = tiny_task()
    clean = cv.cross_validate(tiny_model, images, index, STAGES, tmp_path / "clean", n_splits=3, seed=1)
    assert sorted(clean["item_id"]) == sorted(index["item_id"])
    assert clean.groupby("patient_id")["fold"].nunique().max() == 1
    assert ((clean["score"] >= 0.5) == clean["label"]).mean() >= 0.8
    # A run killed during fold 1 leaves fold 0 finished; the same call resumes there.
    real = cv.fit_stages
    calls = {"n": 0}

    def dies_in_second_fold(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cv, "fit_stages", dies_in_second_fold)
    with pytest.raises(KeyboardInterrupt):
        cv.cross_validate(tiny_model, images, index, STAGES, tmp_path / "killed", n_splits=3, seed=1)
    assert (tmp_path / "killed" / "fold_0" / "predictions.csv").is_file()
    assert not (tmp_path / "killed" / "fold_1" / "predictions.csv").exists()
    monkeypatch.setattr(cv, "fit_stages", real)
    messages = []
    resumed = cv.cross_validate(tiny_model, images, index, STAGES, tmp_path / "killed", n_splits=3,
                                seed=1, progress=messages.append)
    assert messages[0] == "fold 0: done earlier, reused"
    pd.testing.assert_frame_equal(resumed.sort_values("item_id").reset_index(drop=True),
                                  clean.sort_values("item_id").reset_index(drop=True))
    assert [m["fold"] for m in cv.read_fold_metrics(tmp_path / "killed")] == [0, 1, 2]


def test_layer_rate_sgd_scales_updates_per_layer():
    """With multipliers (block1 x0.1, predictions x10) one SGD step moves each layer by lr*mult*grad."""
    keras.utils.set_random_seed(0)
    model = tiny_model()
    stage = Stage("s", 1, optimizer="sgd", learning_rate=0.1, momentum=0.0,
                  lr_multipliers=(("^block1", 0.1), ("^predictions", 10.0)))
    plain = keras.optimizers.SGD(0.1, momentum=0.0)
    x = np.random.default_rng(0).normal(size=(4, 16, 16, 1)).astype(np.float32)
    y = keras.utils.to_categorical([0, 1, 0, 1], 2)
    start = [w.copy() for w in model.get_weights()]
    model.compile(optimizer=plain, loss="categorical_crossentropy")
    model.train_on_batch(x, y)
    plain_step = [w - s for w, s in zip(model.get_weights(), start)]
    model.set_weights(start)
    model.compile(optimizer=make_optimizer(stage, 1), loss="categorical_crossentropy")
    model.train_on_batch(x, y)
    scaled_step = [w - s for w, s in zip(model.get_weights(), start)]
    # weights: conv kernel, conv bias, dense kernel, dense bias
    for step, base, mult in zip(scaled_step, plain_step, (0.1, 0.1, 10.0, 10.0)):
        np.testing.assert_allclose(step, base * mult, rtol=1e-4, atol=1e-7)
    with pytest.raises(SelectorError, match="'\\^nothing' matches no weight"):
        make_optimizer(dataclasses.replace(stage, lr_multipliers=(("^nothing", 2.0),)), 1, model)


def test_layer_rate_adam_scales_each_layers_step():
    """Adam's step is invariant to gradient scale; a per-layer rate scales the step itself."""
    keras.utils.set_random_seed(0)
    model = tiny_model()
    x = np.random.default_rng(0).normal(size=(4, 16, 16, 1)).astype(np.float32)
    y = keras.utils.to_categorical([0, 1, 0, 1], 2)
    start = [w.copy() for w in model.get_weights()]
    steps = []
    for multipliers in ((), (("^block1_conv1/bias", 2.0), ("^block1", 0.1), ("^predictions", 10.0))):
        model.set_weights(start)
        stage = Stage("s", 1, optimizer="adam", learning_rate=1e-3, lr_multipliers=multipliers)
        model.compile(optimizer=make_optimizer(stage, 1, model), loss="categorical_crossentropy")
        model.train_on_batch(x, y)
        steps.append([w - s for w, s in zip(model.get_weights(), start)])
    for plain, scaled, mult in zip(steps[0], steps[1], (0.1, 2.0, 10.0, 10.0)):
        np.testing.assert_allclose(scaled, plain * mult, rtol=1e-4, atol=1e-8)


def test_transfer_trains_on_one_set_tests_on_another_and_saves_the_model(tmp_path):
    from mammo_keras import io as model_io

    images, index = tiny_task(n_patients=16)
    test_images, test_index = tiny_task(n_patients=6, seed=5)
    test_index = test_index.assign(item_id="t" + test_index["item_id"], image_id="t" + test_index["image_id"],
                                   patient_id="t" + test_index["patient_id"])
    explained = []
    predictions = cv.transfer(tiny_model, images, index, test_images, test_index, STAGES, tmp_path / "run",
                              seed=2, explain=lambda model, imgs, preds, out: explained.append(len(imgs)))
    assert list(predictions["item_id"]) == list(test_index["item_id"])  # only the test set is scored
    assert ((predictions["score"] >= 0.5) == predictions["label"]).mean() >= 0.8
    assert explained == [len(test_index)]
    saved = model_io.load(tmp_path / "run" / "test" / "model")
    probabilities = saved.predict(test_images[:2, ..., None], verbose=0)[:, 1]
    np.testing.assert_allclose(probabilities, predictions["score"].to_numpy()[:2], rtol=1e-5)
    manifest = model_io.read_manifest(tmp_path / "run" / "test" / "model")  # its reliability diagram, checksummed
    assert "calibration.png" in manifest["sha256"] and "MODEL_CARD.md" in manifest["sha256"]
    again = cv.transfer(tiny_model, images, index, test_images, test_index, STAGES, tmp_path / "run")
    pd.testing.assert_frame_equal(again, predictions, check_dtype=False)  # a finished run is reused
    with pytest.raises(ValueError, match="shares 12 items"):
        cv.transfer(tiny_model, images, index, test_images, index.iloc[:12], STAGES, tmp_path / "leak")
    split = pd.read_csv(tmp_path / "run" / "split.csv", dtype=str)  # who the saved model learned from
    assert set(split.loc[split["split"] != "test", "patient_id"]) == set(index["patient_id"])
    assert set(split.loc[split["split"] == "test", "patient_id"]) == set(test_index["patient_id"])


def test_transfer_refuses_a_test_set_of_the_same_women_before_training(tmp_path):
    """Other items of the same patients (CBIS-DDSM's calcifications after training on its masses) or
    the same images under other item ids are not an independent test."""
    images, index = tiny_task(n_patients=16)

    def never():
        raise AssertionError("trained")

    other_lesions = index.iloc[:6].assign(item_id="calc_" + index["item_id"].iloc[:6],
                                          image_id="calc_" + index["image_id"].iloc[:6])
    with pytest.raises(ValueError, match=r"shares 3 patients .*'p000', 'p001', 'p002'.*other women"):
        cv.transfer(never, images, index, images[:6], other_lesions, STAGES, tmp_path / "a")
    same_images = index.iloc[:4].assign(item_id="t" + index["item_id"].iloc[:4], patient_id="t" + index["patient_id"].iloc[:4])
    with pytest.raises(ValueError, match="shares 4 images"):
        cv.transfer(never, images, index, images[:4], same_images, STAGES, tmp_path / "b")
    assert not (tmp_path / "a" / "test").exists() and not (tmp_path / "b" / "test").exists()


def test_a_diverging_loss_stops_and_says_where(tmp_path):
    """An infinite loss (here: SGD at rate 1e30 on inputs of size 1e4 under an L2 penalty, whose
    weights overflow) raises TrainingDiverged with its stage and epoch instead of training on and
    scoring NaN; the log up to there is kept."""
    from mammo_keras.errors import TrainingDiverged

    images, index = tiny_task()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1), name="image")  # linear logits: nothing can die and stop the blow-up
    linear = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="predictions")(
        keras.layers.Flatten()(inputs)))
    stages = [Stage("warm", 1, optimizer="sgd", learning_rate=1e-3),
              Stage("blows_up", 5, optimizer="sgd", learning_rate=1e30, batch_size=8, l2=1e-4)]
    with pytest.raises(TrainingDiverged, match=r"stage 'blows_up', epoch 1 \(.*log.csv\)") as caught:
        fit_stages(linear, stages, (images * 1e4, index.label), log_csv=tmp_path / "log.csv")
    assert (caught.value.stage, caught.value.epoch) == ("blows_up", 1)
    log = pd.read_csv(tmp_path / "log.csv")
    assert list(log["stage"]) == ["warm", "blows_up"] and np.isfinite(log["loss"].iloc[0])
    assert not np.isfinite(log["loss"].iloc[-1])
    # With a validation part the NaN predictions are not scored (before: the AUC's "y_score must be
    # finite" error escaped fit and ended the whole run, chougrad2018/mias_cv's vgg16_random at the cpu profile).
    keras.utils.set_random_seed(0)
    linear = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="predictions")(
        keras.layers.Flatten()(inputs)))
    with pytest.raises(TrainingDiverged, match=r"stage 'blows_up', epoch 1"):
        fit_stages(linear, stages, (images * 1e4, index.label), (images[:8] * 1e4, index.label[:8]),
                   log_csv=tmp_path / "log_val.csv")
    assert np.isnan(pd.read_csv(tmp_path / "log_val.csv")["val_auc"].iloc[-1])


def test_progress_bars_draw_per_stage_and_change_nothing(capfd):
    """`fit_stages(progress=True)`: a tqdm bar per stage over epochs (and steps); same log, same weights."""
    images, index = tiny_task()
    stages = [Stage("head", 1, optimizer="adam", learning_rate=1e-2, trainable="re:^predictions"),
              Stage("all", 2, optimizer="adam", learning_rate=1e-2, batch_size=8)]
    runs = []
    for progress in (False, True):
        keras.utils.set_random_seed(0)
        model = tiny_model()
        capfd.readouterr()
        log = fit_stages(model, stages, (images[:40], index.label[:40]), progress=progress)
        runs.append((log.drop(columns="seconds"), [w.copy() for w in model.get_weights()], capfd.readouterr().err))
    (quiet_log, quiet_weights, quiet_err), (bar_log, bar_weights, bar_err) = runs
    pd.testing.assert_frame_equal(quiet_log, bar_log)
    assert all(np.array_equal(a, b) for a, b in zip(quiet_weights, bar_weights))
    assert "stage head" not in quiet_err and "epoch" not in quiet_err
    assert "stage head:   0%|          | 0/1" in bar_err and "stage all:   0%|          | 0/2" in bar_err


def test_progress_bars_setting(monkeypatch):
    from mammo_keras import settings

    monkeypatch.setenv("MAMMO_PROGRESS", "1")
    assert settings.progress_bars() is True
    monkeypatch.setenv("MAMMO_PROGRESS", "off")
    assert settings.progress_bars() is False
    monkeypatch.setenv("MAMMO_PROGRESS", "maybe")
    with pytest.raises(ValueError, match="MAMMO_PROGRESS takes 1 or 0. Received: MAMMO_PROGRESS='maybe'"):
        settings.progress_bars()
    monkeypatch.delenv("MAMMO_PROGRESS")
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))  # imported, as nbclient does
    assert settings.progress_bars() is False
    kernel_shell = types.SimpleNamespace(kernel=object())
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: kernel_shell))
    assert settings.in_jupyter_kernel() and settings.progress_bars() is True
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))  # plain python
    assert settings.progress_bars() is False
