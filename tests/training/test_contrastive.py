"""SimCLR pretraining (training.contrastive): the loss, the views, what it trains, and its place in a part."""
from __future__ import annotations

import dataclasses
import json
import math

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import resume_task
from mammo_keras.training import contrastive, cv
from mammo_keras.training.contrastive import Pretraining


def encoder_model(size: int = 16) -> keras.Model:
    inputs = keras.Input((size, size, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="block1_conv1")(inputs)
    x = keras.layers.BatchNormalization(name="block1_bn")(x)
    x = keras.layers.ReLU(name="block1_relu")(x)
    x = keras.layers.MaxPooling2D(2, name="block1_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(4, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="predictions")(x)
    return keras.Model(inputs, outputs, name="tiny")


def test_nt_xent_matches_its_definition():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 5)).astype(np.float32)
    loss, found = contrastive.nt_xent(tf.constant(z), 0.5)
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    sim = unit @ unit.T / 0.5
    expected = []
    for i in range(6):
        pair = (i + 3) % 6
        others = [sim[i, k] for k in range(6) if k != i]
        expected.append(-sim[i, pair] + math.log(sum(math.exp(v) for v in others)))
    assert float(loss) == pytest.approx(np.mean(expected), rel=1e-5)
    nearest = [max((k for k in range(6) if k != i), key=lambda k: sim[i, k]) for i in range(6)]
    assert float(found) == pytest.approx(np.mean([nearest[i] == (i + 3) % 6 for i in range(6)]))


def test_identical_pairs_among_orthogonal_views_are_all_found():
    z = np.concatenate([np.eye(4), np.eye(4)]).astype(np.float32)
    loss, found = contrastive.nt_xent(tf.constant(z), 0.1)
    assert float(found) == 1.0
    # each view: its pair at similarity 10, the 6 others at 0
    assert float(loss) == pytest.approx(-10 + math.log(math.exp(10) + 6), abs=1e-6)


def test_views_are_seeded_and_differ_between_seeds():
    images = tf.constant(np.random.default_rng(0).random((4, 12, 12, 1)), tf.float32)
    spec = Pretraining()
    first = contrastive.random_views(images, spec, tf.constant([1, 2]))
    again = contrastive.random_views(images, spec, tf.constant([1, 2]))
    other = contrastive.random_views(images, spec, tf.constant([1, 3]))
    assert first.shape == images.shape
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.allclose(first.numpy(), other.numpy())


def test_a_whole_item_view_without_jitter_is_one_of_its_eight_flips():
    rng = np.random.default_rng(1)
    images = rng.random((16, 9, 9, 1)).astype(np.float32)
    spec = Pretraining(crop_area=(1.0, 1.0), aspect=(1.0, 1.0), brightness=0.0, contrast=0.0, noise=0.0)
    views = contrastive.random_views(tf.constant(images), spec, tf.constant([0, 7])).numpy()
    seen = set()
    for image, view in zip(images, views):
        flips = {(t, v, h): (np.swapaxes(image, 0, 1) if t else image)[:: -1 if v else 1, :: -1 if h else 1]
                 for t in (0, 1) for v in (0, 1) for h in (0, 1)}
        match = [key for key, flipped in flips.items() if np.allclose(view, flipped, atol=1e-5)]
        assert match, "a full-area view must be a flip / transpose of its item"
        seen.add(match[0])
    assert len(seen) > 2  # the flips are drawn per item, not once per batch


def test_encoder_output_auto_is_the_layer_before_flatten_and_a_wrong_name_is_refused():
    model = encoder_model()
    assert contrastive.encoder_layer_name(model, Pretraining()) == "block1_pool"
    assert [layer.name for layer in contrastive.encoder_layers(model, Pretraining())] == ["block1_conv1", "block1_bn"]
    with pytest.raises(ValueError, match="'block9_pool' is no layer of tiny. Layers: .*block1_pool"):
        contrastive.encoder_layer_name(model, Pretraining(encoder_output="block9_pool"))
    inputs = keras.Input((4,))
    flat = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    with pytest.raises(ValueError, match="needs a Flatten or global pooling layer"):
        contrastive.encoder_layer_name(flat, Pretraining())


@pytest.mark.parametrize("raw, message", [
    ({"epochs": 0}, "positive integer"), ({"batch_size": 1}, "at least 2"), ({"temperature": 0}, "positive"),
    ({"crop_area": [0.5, 1.2]}, "crop_area"), ({"method": "byol"}, "one of"), ({"epoch": 3}, "unknown keys"),
    ({"projection": []}, "projection"), ({"aspect": [2, 1]}, "aspect")])
def test_bad_pretraining_settings_are_refused(raw, message):
    with pytest.raises(ValueError, match=message):
        Pretraining.from_config(raw)


def test_the_config_layer_knows_every_pretraining_key():
    from mammo_keras.vocabulary import PRETRAIN_KEYS

    assert [f.name for f in dataclasses.fields(Pretraining)] == list(PRETRAIN_KEYS)


def test_profile_scales_the_pretraining_epochs_like_the_stages():
    assert Pretraining(epochs=40).scaled(0.5).epochs == 20
    assert Pretraining(epochs=40).scaled(0.001).epochs == 1
    assert Pretraining.from_config(None) is None


def easy_items(n: int = 48, size: int = 16) -> np.ndarray:
    """Distinct random blobs: two views of one item look alike, and unlike the others'."""
    rng = np.random.default_rng(0)
    coarse = rng.random((n, 4, 4))
    return np.kron(coarse, np.ones((size // 4, size // 4))).astype(np.float32)


def test_pretraining_trains_the_encoder_only_repeatably_and_learns_to_pair_views():
    spec = Pretraining(epochs=8, batch_size=16, learning_rate=3e-3, crop_area=(0.8, 1.0), noise=0.0)

    def pretrained():
        keras.utils.set_random_seed(0)
        model = encoder_model()
        before = {w.path: np.array(w) for w in model.weights}
        log = contrastive.pretrain(model, easy_items(), spec, seed=3)
        return model, before, log

    model, before, log = pretrained()
    changed = {path for path, value in before.items()
               if not np.array_equal(value, np.array(next(w for w in model.weights if w.path == path)))}
    assert {path.split("/")[0] for path in changed} == {"block1_conv1", "block1_bn"}  # the head is left as built
    assert list(log.columns) == ["epoch", "items", "loss", "pair_accuracy", "chance", "seconds"]
    assert len(log) == 8 and log["chance"].iloc[0] == pytest.approx(1 / 31)
    assert log["pair_accuracy"].iloc[-1] > 5 * log["chance"].iloc[-1]
    assert log["loss"].iloc[-1] < log["loss"].iloc[0]
    again, _, log_again = pretrained()
    for mine, theirs in zip(model.weights, again.weights):
        np.testing.assert_array_equal(np.array(mine), np.array(theirs))
    pd.testing.assert_frame_equal(log.drop(columns="seconds"), log_again.drop(columns="seconds"))


def test_pretraining_reads_lazy_rows_a_batch_at_a_time(tmp_path):
    from mammo_keras.data.rows import ItemRows

    items = easy_items(20)
    np.save(tmp_path / "images.npy", items)
    spec = Pretraining(epochs=1, batch_size=8)
    keras.utils.set_random_seed(0)
    lazy = contrastive.pretrain(encoder_model(), ItemRows.open(tmp_path / "images.npy").with_channels(1), spec, seed=0)
    keras.utils.set_random_seed(0)
    eager = contrastive.pretrain(encoder_model(), items[..., None], spec, seed=0)
    assert lazy["loss"].iloc[0] == pytest.approx(eager["loss"].iloc[0], rel=1e-6)


def _fold(out, spec):
    images, index = resume_task.task()
    predictions, _ = cv.train_and_test(resume_task.model, images, index, spec, out, fit_rows=np.arange(32),
                                       val_rows=np.arange(32, 40), test_rows=np.arange(40, 48), fold=0, seed=5)
    return predictions


def test_a_part_pretrains_on_its_fit_items_and_a_resumed_part_reuses_the_saved_encoder(tmp_path, monkeypatch):
    spec = dataclasses.replace(resume_task.SPEC, pretrain=Pretraining(epochs=2, batch_size=8))
    seen = []
    real = contrastive.pretrain

    def watched(model, x, pretraining, **kwargs):
        seen.append(len(x))
        return real(model, x, pretraining, **kwargs)

    monkeypatch.setattr(contrastive, "pretrain", watched)
    clean = _fold(tmp_path / "clean", spec)
    assert seen == [32]  # the 32 fit items: never the validation or test ones
    assert len(pd.read_csv(tmp_path / "clean" / "pretrain_log.csv")) == 2
    assert not (tmp_path / "clean" / cv.PRETRAINED_FILE).exists()  # removed once the part is done

    # A run killed after its pretraining: the saved encoder is loaded, not pretrained again.
    keras.utils.set_random_seed(5)
    model = resume_task.model()
    images, _ = resume_task.task()
    cv.pretrain_part(model, images[:32], spec, tmp_path / "killed", seed=5)
    assert (tmp_path / "killed" / cv.PRETRAINED_FILE).is_file()
    seen.clear()
    resumed = _fold(tmp_path / "killed", spec)
    assert seen == []
    pd.testing.assert_frame_equal(resumed, clean)
    plain = _fold(tmp_path / "plain", resume_task.SPEC)
    assert not np.allclose(plain["score"], clean["score"])  # the pretraining changed what the part learned
    assert not (tmp_path / "killed" / cv.PRETRAINED_RECORD).exists()


def test_a_saved_encoder_pretrained_on_other_items_or_settings_is_pretrained_again(tmp_path, monkeypatch):
    """Before: `pretrained.weights.h5` was loaded whatever it was pretrained on, so a part whose split had
    changed (folds.csv removed, another seed) started from an encoder that had seen its test women."""
    spec = dataclasses.replace(resume_task.SPEC, pretrain=Pretraining(epochs=1, batch_size=8))
    images, _ = resume_task.task()
    seen = []
    real = contrastive.pretrain
    monkeypatch.setattr(contrastive, "pretrain", lambda model, x, p, **kw: (seen.append(len(x)), real(model, x, p, **kw)))
    out = tmp_path / "part"
    cv.pretrain_part(resume_task.model(), images[:32], spec, out, seed=5)
    cv.pretrain_part(resume_task.model(), images[:32], spec, out, seed=5)  # the same: loaded
    assert seen == [32]
    cv.pretrain_part(resume_task.model(), images[16:48], spec, out, seed=5)  # other items
    cv.pretrain_part(resume_task.model(), images[16:48], spec, out, seed=6)  # another seed
    longer = dataclasses.replace(spec, pretrain=Pretraining(epochs=2, batch_size=8))
    cv.pretrain_part(resume_task.model(), images[16:48], longer, out, seed=6)  # other settings
    assert seen == [32, 32, 32, 32]
    assert json.loads((out / cv.PRETRAINED_RECORD).read_text())["pretraining"]["epochs"] == 2


def test_unlabelled_items_of_a_parts_validation_and_test_patients_are_held_out(tmp_path, monkeypatch):
    images, index = resume_task.task()
    # another task's items: two per patient of the labelled set, and two women with no labelled item
    extra_index = pd.DataFrame({"patient_id": [f"p{i // 2:03d}" for i in range(48)] + ["q1", "q1", "q2"]})
    extra_images = np.random.default_rng(1).random((51, 16, 16)).astype(np.float32)
    held_out = np.arange(32, 48)  # validation 32-39 and test 40-47: patients p016-p023
    kept = contrastive.unlabelled_rows(extra_index, index, held_out)
    assert set(extra_index["patient_id"].iloc[kept]) == {f"p{i:03d}" for i in range(16)} | {"q1", "q2"}
    with pytest.raises(ValueError, match="none of their patient ids is a patient of the items"):
        contrastive.unlabelled_rows(pd.DataFrame({"patient_id": ["mdb001", "mdb002"]}), index, held_out)

    seen = []
    real = contrastive.pretrain
    monkeypatch.setattr(contrastive, "pretrain",
                        lambda model, x, spec, **kw: seen.append(np.asarray(x)) or real(model, x, spec, **kw))
    spec = dataclasses.replace(resume_task.SPEC, pretrain=Pretraining(
        epochs=1, batch_size=8, unlabelled={"task": "shen_s10"}))
    with pytest.raises(ValueError, match="pass them as `unlabelled="):
        _fold(tmp_path / "none", spec)
    cv.train_and_test(resume_task.model, images, index, spec, tmp_path / "extra", fit_rows=np.arange(32),
                      val_rows=np.arange(32, 40), test_rows=np.arange(40, 48), fold=0, seed=5,
                      unlabelled=(extra_images, extra_index))
    np.testing.assert_array_equal(seen[0][..., 0], extra_images[kept])


def test_mixed_float16_pretraining_scales_its_loss_and_a_two_input_model_is_refused():
    spec = Pretraining(epochs=1, batch_size=8)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        log = contrastive.pretrain(encoder_model(), easy_items(16), spec, seed=0)
    finally:
        keras.config.set_dtype_policy(previous)
    assert np.isfinite(log["loss"]).all()
    left, right = keras.Input((16, 16, 1)), keras.Input((16, 16, 1))
    joined = keras.layers.Flatten()(keras.layers.Concatenate()([left, right]))
    with pytest.raises(ValueError, match="one image input; .* has 2"):
        contrastive.pretrain(keras.Model([left, right], keras.layers.Dense(1)(joined)), easy_items(16), spec, seed=0)
