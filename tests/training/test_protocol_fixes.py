"""The protocol deviations the plan exposed, each pinned by a test that fails on the old behaviour."""
from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pandas as pd
import pytest

from mammo_keras import models
from mammo_keras.config import load_config
from mammo_keras.data.recipes import FittedInputs, Normalisation, OfflineAugment, offline_augment
from mammo_keras.data.rows import is_lazy
from mammo_keras.plan import compile_plan, stage
from mammo_keras.training import cv
from mammo_keras.training.fit import fit_stages
from mammo_keras.training.stages import Stage, apply_l2, apply_trainable, make_optimizer, trainable_flags


def weighted(row_stage: dict) -> dict[str, bool]:
    return {layer["name"]: layer["trainable"] for layer in row_stage["layers"]}


def test_shen_whole_image_stage_one_trains_the_new_top_blocks():
    """Before: `re:^(top_|predictions)` matched none of the top1_* / top2_* blocks."""
    row = compile_plan(load_config("shen2017/table2", "tiny"))["rows"][0]
    flags = weighted(stage(row, "top"))
    top = {name: flag for name, flag in flags.items() if name.startswith(("top1_", "top2_"))}
    assert len(top) >= 6 and all(top.values()) and flags["predictions"]
    assert not any(flag for name, flag in flags.items() if name.startswith(("block", "conv")))
    # the old selector on the same model: only the classifier would have trained
    keras.backend.clear_session()
    model = models.get("shen_whole_resnet50", input_shape=(128, 96, 1), patch_input_shape=(32, 32, 1),
                       blocks=[((16, 16, 32), 1), ((16, 16, 32), 1)])
    apply_trainable(model, "re:^(top_|predictions)")
    assert [layer.name for layer in model.layers if layer.trainable_weights] == ["predictions"]


def test_googlenet_classifier_learns_at_ten_times_the_base_rate():
    """Before: `^predictions` did not match `loss3_classifier`, which fell into the 0.1x group."""
    plan = compile_plan(load_config("jain_levy/table2", "paper"))
    deeper = stage(next(r for r in plan["rows"] if r["label"] == "googlenet_deeper"), "fine_tune")
    layers = {layer["name"]: layer for layer in deeper["layers"]}
    assert layers["loss3_classifier"]["lr"] == {"kernel": pytest.approx(0.1), "bias": pytest.approx(0.2)}
    assert layers["inception_5a_1x1"]["lr"] == {"kernel": pytest.approx(0.01), "bias": pytest.approx(0.02)}
    assert layers["inception_4e_1x1"]["lr"] == {"kernel": pytest.approx(0.001), "bias": pytest.approx(0.002)}


def _chain_tables(n_patients=300, seed=0):
    """A patch table (many patches per patient) and a whole-image table (2 images per patient)."""
    rng = np.random.default_rng(seed)
    malignant = rng.random(n_patients) < 0.4
    whole = pd.DataFrame([{"item_id": f"p{p}_{v}", "image_id": f"p{p}_{v}", "patient_id": f"p{p}",
                           "label": int(malignant[p])} for p in range(n_patients) for v in ("cc", "mlo")])
    patches = pd.DataFrame([{"item_id": f"p{p}_{v}_{k}", "image_id": f"p{p}_{v}", "patient_id": f"p{p}",
                             "label": int(rng.integers(0, 5))}
                            for p in range(n_patients) for v in ("cc", "mlo") for k in range(rng.integers(2, 12))])
    return whole, patches


def test_chained_whole_image_split_keeps_the_patch_classifiers_split():
    """Before: the whole-image split was drawn again on its own table and leaked."""
    whole, patches = _chain_tables()
    fractions = (0.765, 0.085, 0.15)
    patch_split, _ = cv.holdout_split(patches, fractions=fractions, seed=0)
    patch_train = set(patch_split.loc[patch_split["split"] == "train", "patient_id"])
    kept, new = cv.holdout_split(whole, fractions=fractions, seed=0, source=patch_split)
    assert new == 0
    assert not patch_train & set(kept.loc[kept["split"] == "test", "patient_id"])
    assert not patch_train & set(kept.loc[kept["split"] == "val", "patient_id"])
    redrawn, _ = cv.holdout_split(whole, fractions=fractions, seed=0)  # the old behaviour
    assert len(patch_train & set(redrawn.loc[redrawn["split"] == "test", "patient_id"])) > 10


def test_training_set_means_are_fitted_on_the_training_part_only():
    rng = np.random.default_rng(0)
    train, test = rng.random((6, 8, 8)).astype(np.float32), 10 + rng.random((3, 8, 8)).astype(np.float32)
    index = pd.DataFrame({"item_id": [f"i{k}" for k in range(6)], "image_id": [f"i{k}" for k in range(6)]})
    for kind, mean in (("train_mean_image", train.mean(axis=0)), ("train_mean_grey", train.mean())):
        fitted, inputs, source = FittedInputs.fit(train, index, normalisation=Normalisation(kind), offline=None,
                                                  crop=None, seed=0)
        np.testing.assert_allclose(inputs, train - mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fitted.transform(test), test - mean, rtol=1e-5, atol=1e-5)
        assert list(source) == list(range(6))
    whole_means = index.assign(image_mean_grey=[1.0, 1.0, 3.0, 3.0, 5.0, 5.0], image_id=["a", "a", "b", "b", "c", "c"])
    fitted, _, _ = FittedInputs.fit(train, whole_means, normalisation=Normalisation("train_whole_image_mean_grey"),
                                    offline=None, crop=None, seed=0)
    assert fitted.mean == pytest.approx(3.0)  # one value per source image, not per patch
    assert fitted.to_manifest() == {"normalisation": "train_whole_image_mean_grey", "mean_grey": 3.0}


def test_chougrad_backbones_get_their_imagenet_scale():
    """Before: GCN ROIs in [0, 1] went into ImageNet backbones unscaled (1/255 of their range)."""
    keras.backend.clear_session()
    model = models.get("chougrad_inceptionv3", input_shape=(75, 75, 1), fine_tune="2FT")
    scaling = model.get_layer("imagenet_scaling")
    assert (scaling.mode, scaling.centred) == ("tf", True)
    x = np.linspace(-100, 100, 75 * 75 * 3, dtype=np.float32).reshape(1, 75, 75, 3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scaling(x)), x / 127.5, rtol=1e-6)
    plan = compile_plan(load_config("chougrad2018/table2", "paper"))
    cnn_rows = [row for row in plan["rows"] if not row.get("baseline")]
    assert [row["label"] for row in cnn_rows] == ["vgg16", "resnet50", "inceptionv3"]
    for row in cnn_rows:
        assert row["data"]["intensity_scale"] == 255
        assert [s["step"] for s in row["data"]["chain"]][-2:] == ["channels", "backbone_scaling"]


def test_a_centred_backbone_scaling_on_uncentred_items_is_refused_before_anything_runs():
    """Before: patches_2class_vgg16 fed its un-centred 0-255 patches to Chougrad's VGG16, whose default
    scaling (centred, for GCN ROIs) leaves out the ImageNet mean, so the backbone saw values about
    110 grey levels above its training range; its plan printed `centred=True` with no centring step."""
    from mammo_keras.plan import scaling_problem

    gcn = {"step": "gcn", "what": "subtract the ROI's own mean"}
    scaling = {"step": "backbone_scaling", "mode": "caffe", "layer": "imagenet_scaling"}
    assert scaling_problem([gcn, {"step": "intensity_scale", "factor": 255}, {**scaling, "centred": True}]) == ""
    assert scaling_problem([{"step": "resize"}, {**scaling, "centred": False}]) == ""
    assert "no step before it centres them" in scaling_problem([{"step": "resize"}, {**scaling, "centred": True}])
    assert "already mean-subtracted" in scaling_problem([gcn, {**scaling, "mode": "tf", "centred": False}])
    mean_grey = {"step": "normalise", "kind": "train_mean_grey"}  # Shen's: the training part's mean grey value
    assert scaling_problem([mean_grey, {**scaling, "centred": True}]) == ""
    assert "already mean-subtracted" in scaling_problem([mean_grey, {**scaling, "centred": False}])
    config = load_config("mias_tasks/patches_2class_vgg16", "tiny")
    (row,) = [m for m in config.models if m.label == "vgg16_frozen"]
    options = {k: v for k, v in row.options.items() if k not in ("input_scaling", "weights")}
    wrong = dataclasses.replace(config, models=(dataclasses.replace(row, options=options),))
    with pytest.raises(ValueError, match=r"patches_2class_vgg16\.yaml: row 'vgg16_frozen' \(chougrad_vgg16\): its "
                                         r"backbone scaling \(imagenet_scaling: caffe, centred\) expects"):
        compile_plan(wrong)


def test_the_plan_shows_the_input_layers_of_a_nested_encoder():
    """Before: the siamese VGG16's grey-to-RGB and ImageNet scaling sit inside its shared encoder, so
    the plan's data chain stopped at `intensity_scale` and hid how the backbone's inputs are scaled."""
    (row,) = compile_plan(load_config("coccomini2021/table6_1", "tiny", overrides={"rows": ["siamese_vgg16"]}))["rows"]
    assert [s["step"] for s in row["data"]["chain"]][-3:] == ["intensity_scale", "channels", "backbone_scaling"]
    assert (row["data"]["chain"][-1]["mode"], row["data"]["chain"][-1]["centred"]) == ("caffe", False)


def test_a_row_without_a_weights_option_shows_where_its_builder_starts():
    """Before: Jain & Levy's GoogLeNet rows pass no `weights`, so the plan printed no initial weights and
    nothing showed that the fine-tuning rates were applied to a random network; the protocol's
    `pretrained_networks` fact now sees it (a declared deviation)."""
    rows = {row["label"]: row for row in compile_plan(load_config("jain_levy/table2", "paper"))["rows"]}
    assert rows["googlenet_deeper"]["init"] == {"weights": "random (the builder's default)"}
    assert rows["alexnet"]["init"] == {"weights": "random"}  # the row's own `weights: null`
    whole = compile_plan(load_config("shen2017/model_averaging", "paper", overrides={"rows": ["resnet_vgg"]}))
    assert set(whole["rows"][0]["init"]) == {"patch_weights"}  # a set weights option is the start; no default added


def test_jain_levy_trains_on_twenty_five_augmented_crops_per_lesion(tmp_path):
    """Before: one centre crop per lesion, epochs 25x shorter than the paper's."""
    canvases = np.zeros((4, 30, 30), np.float32)
    canvases[:, 5:25, 3:27] = 1.0  # each window: 20 x 24 on the 30 x 30 canvas
    windows = np.tile([20 / 30, 24 / 30], (4, 1))
    spec = OfflineAugment(rotations=5, crops_per_rotation=5)
    crops, source = offline_augment(canvases, windows, [f"i{k}" for k in range(4)], (16, 16), spec, fill=0.5, seed=3)
    assert crops.shape == (100, 16, 16) and list(source) == sorted(list(range(4)) * 25)
    assert crops.min() >= 0.5 - 1e-6 and crops.max() <= 1.0 + 1e-6  # window pixels or the fill, never the margin
    assert np.isclose(crops, 0.5).any()  # rotated-in corners carry the fill
    again, _ = offline_augment(canvases, windows, [f"i{k}" for k in range(4)], (16, 16), spec, fill=0.5, seed=3)
    np.testing.assert_array_equal(crops, again)
    # written to a file one crop at a time and read per batch: the same values, nothing resident
    streamed, streamed_source = offline_augment(canvases, windows, [f"i{k}" for k in range(4)], (16, 16), spec,
                                                fill=0.5, seed=3, path=tmp_path / "copies" / "offline.npy")
    assert is_lazy(streamed) and streamed.shape == crops.shape
    np.testing.assert_array_equal(np.asarray(streamed), crops)
    np.testing.assert_array_equal(streamed_source, source)
    np.testing.assert_array_equal(streamed.read(np.array([99, 0])), crops[[99, 0]])
    index = pd.DataFrame({"item_id": [f"i{k}" for k in range(8)], "image_id": [f"i{k}" for k in range(8)],
                          "patient_id": [f"p{k}" for k in range(8)], "label": [0, 1] * 4,
                          "window_rows": 20 / 30, "window_cols": 24 / 30})
    images = np.concatenate([canvases, canvases])

    def build():
        inputs = keras.Input((16, 16, 1))
        outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))
        return keras.Model(inputs, outputs)

    spec_train = cv.TrainSpec(stages=(Stage("s", 1, optimizer="adam", batch_size=25),), offline=spec, eval_crop=(16, 16),
                              normalisation=Normalisation("train_mean_image"))
    predictions, metrics = cv.train_and_test(build, images, index, spec_train, tmp_path, fit_rows=np.arange(6),
                                             val_rows=np.array([], int), test_rows=np.array([6, 7]), fold=0, seed=0)
    assert metrics["n_train"] == 6 and metrics["n_train_inputs"] == 150 and len(predictions) == 2
    assert not (tmp_path / cv.OFFLINE_FILE).exists()  # the part's copies are removed once it is done
    assert metrics["inputs"]["normalisation"] == "train_mean_image" and metrics["inputs"]["eval_crop"] == [16, 16]


def test_shen_weight_decay_is_an_l2_penalty_on_the_new_kernels():
    """Before: decoupled AdamW decay (about lr x 1e-3 per step) on every weight."""
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="block1_dense")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="top1_dense")(hidden))
    staged = Stage("top", 1, optimizer="adam", l2=0.01, l2_layers="re:^top")
    assert apply_l2(model, staged) == ["top1_dense"]
    kernel = keras.ops.convert_to_numpy(model.get_layer("top1_dense").kernel)
    assert float(sum(keras.ops.convert_to_numpy(loss) for loss in model.losses)) == pytest.approx(
        0.01 * float((kernel ** 2).sum()), rel=1e-5)
    assert make_optimizer(staged, 10).weight_decay is None


def test_selection_restores_the_best_validation_auc_epoch():
    """Before: the last epoch was scored; Shen's #Epochs is the epoch of the best validation AUC."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 6, 6)).astype(np.float32)
    y = (x[:, :3].mean(axis=(1, 2)) > 0).astype(int)
    x_val = rng.normal(size=(40, 6, 6)).astype(np.float32)
    y_val = (x_val[:, :3].mean(axis=(1, 2)) > 0).astype(int)
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6, 6, 1))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs)))
    log = fit_stages(model, [Stage("s", 8, optimizer="adam", learning_rate=0.3, batch_size=8)], (x, y), (x_val, y_val),
                     selection="best_val_auc")
    best = log.loc[log["val_auc"].idxmax()]
    assert bool(best["selected"]) and log["selected"].sum() == 1
    from mammo_keras.evaluation.metrics import auc

    restored = auc(y_val, model.predict(x_val[..., None], verbose=0)[:, 1])
    assert restored == pytest.approx(best["val_auc"], abs=1e-6)
    assert {"penalty", "data_loss"} <= set(log.columns)


def test_as_built_stage_trains_the_rows_depth_after_a_frozen_warm_up():
    """Chougrad's fine-tuning stage trains the blocks the row's `fine_tune` names, not the warm-up's."""
    keras.backend.clear_session()
    model = models.get("chougrad_vgg16", input_shape=(32, 32, 1), fine_tune="2FT", head_units=(8,))
    built = trainable_flags(model)
    apply_trainable(model, "0FT", built)
    assert not model.get_layer("block5_conv1").trainable_weights
    apply_trainable(model, "as_built", built)
    assert model.get_layer("block4_conv1").trainable_weights and model.get_layer("block5_conv3").trainable_weights
    assert not model.get_layer("block3_conv1").trainable_weights


def test_log_splits_the_loss_into_the_data_term_and_the_mean_penalty():
    """log.csv's data_loss is Keras' loss less the penalty averaged over the epoch's steps (before: the
    end-of-epoch penalty, which overstates the data term while the penalty shrinks)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6, 6)).astype(np.float32)
    y = (x[:, :3].mean(axis=(1, 2)) > 0).astype(int)
    keras.utils.set_random_seed(2)
    inputs = keras.Input((6, 6, 1))
    head = keras.layers.Dense(2, activation="softmax", use_bias=False, name="head")  # every weight penalised
    model = keras.Model(inputs, head(keras.layers.Flatten()(inputs)))
    frozen = fit_stages(model, [Stage("s", 1, optimizer="sgd", learning_rate=1e-12, l2=0.5, batch_size=8)], (x, y))
    probabilities = model.predict(x[..., None], verbose=0)
    crossentropy = float(-np.mean(np.log(probabilities[np.arange(len(y)), y])))
    penalty = 0.5 * float((keras.ops.convert_to_numpy(model.get_layer("head").kernel) ** 2).sum())
    assert frozen["penalty"].iloc[0] == pytest.approx(penalty, rel=1e-5)
    assert frozen["data_loss"].iloc[0] == pytest.approx(crossentropy, rel=1e-4)
    # While SGD moves the weights, the data term is still what is left: inputs near 0 make every
    # prediction (1/2, 1/2) whatever the weights, so the data loss is log 2 and the rest is penalty.
    moving = fit_stages(model, [Stage("s", 2, optimizer="sgd", learning_rate=0.5, l2=0.5, batch_size=8)],
                        (x * 1e-6, y))
    assert (moving["penalty"] > 0.1).all() and moving["penalty"].iloc[0] != moving["penalty"].iloc[1]
    np.testing.assert_allclose(moving["data_loss"], np.log(2), rtol=1e-3)
