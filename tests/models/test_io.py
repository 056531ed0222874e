"""Export/import: JSON + HDF5 + .keras round-trips, manifest checksums, atomic writes, legacy .h5."""
from __future__ import annotations

import json

import h5py
import keras
import numpy as np
import pytest

import mammo_keras
from mammo_keras import io
from mammo_keras.errors import DataError
from mammo_keras.models.layers import GreyToRGB, ImageNetScaling

SAVED = {"MODEL_CARD.md", "manifest.json", "model.json", "model.keras", "model.weights.h5"}


def _small_model() -> keras.Model:
    """Custom layers, a BatchNorm and a frozen layer: what the round-trips must keep."""
    keras.utils.set_random_seed(7)
    inputs = keras.Input((8, 8, 1), name="image")
    x = GreyToRGB(name="grey_to_rgb")(inputs)
    x = ImageNetScaling("tf", name="imagenet_scaling")(x)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="small")
    model.get_layer("conv").trainable = False
    return model


@pytest.fixture()
def batch():
    return np.random.default_rng(0).uniform(0, 255, size=(3, 8, 8, 1)).astype("float32")


@pytest.fixture()
def saved(tmp_path):
    model = _small_model()
    io.save(model, tmp_path / "small", architecture="small_test", class_names=["benign", "malignant"],
            preprocessing={"roi_size": 300, "gcn": "mean"})
    return model, tmp_path / "small"


def test_save_writes_the_model_files_its_card_and_a_manifest(saved):
    _, folder = saved
    assert {path.name for path in folder.iterdir()} == SAVED  # no temporary files left
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["architecture"] == "small_test"
    assert manifest["input_shape"] == [8, 8, 1]
    assert manifest["class_names"] == ["benign", "malignant"]
    assert manifest["preprocessing"] == {"roi_size": 300, "gcn": "mean"}
    assert manifest["keras_version"] == keras.__version__
    assert manifest["mammo_keras_version"] == mammo_keras.__version__
    assert manifest["sha256"] == {name: io.sha256(folder / name) for name in SAVED - {"manifest.json"}}
    assert json.loads((folder / "model.json").read_text())["class_name"] == "Functional"


@pytest.mark.parametrize("fmt", ["json", "keras"])
def test_round_trip_gives_identical_predictions(saved, batch, fmt):
    model, folder = saved
    loaded = io.load(folder, format=fmt)
    np.testing.assert_allclose(loaded.predict(batch, verbose=0), model.predict(batch, verbose=0), atol=1e-6)
    assert isinstance(loaded.get_layer("grey_to_rgb"), GreyToRGB)
    assert loaded.get_layer("imagenet_scaling").mode == "tf"
    assert [layer.trainable for layer in loaded.layers] == [layer.trainable for layer in model.layers]


def test_keras_is_the_primary_format_json_and_hdf5_are_kept(saved, batch):
    """Before: `load` read model.json + HDF5 by default and ignored model.keras."""
    model, folder = saved
    (folder / "model.json").unlink()
    (folder / "model.weights.h5").unlink()
    loaded = io.load(folder, verify=False)  # the default reads model.keras alone
    np.testing.assert_allclose(loaded.predict(batch, verbose=0), model.predict(batch, verbose=0), atol=1e-6)
    with pytest.raises(DataError, match=r"model\.json: missing: loading format='json' needs model\.json and "):
        io.load(folder, verify=False, format="json")


def test_changed_file_fails_the_checksum_naming_it(saved):
    _, folder = saved
    with open(folder / "model.weights.h5", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(DataError, match=r"model\.weights\.h5: sha256 mismatch"):
        io.load(folder)


def test_missing_listed_file_and_missing_manifest_are_named(saved, tmp_path):
    _, folder = saved
    (folder / "model.keras").unlink()
    with pytest.raises(DataError, match=r"model\.keras: listed in manifest\.json but missing"):
        io.load(folder)
    with pytest.raises(DataError, match=r"empty.manifest\.json: no manifest\.json"):
        io.load(tmp_path / "empty")


def test_hostile_manifests_and_missing_model_files_are_named(saved, tmp_path):
    _, folder = saved
    bad = tmp_path / "bad"
    bad.mkdir()
    for text, problem in (('{"architecture": "x"}', r"no `sha256` table"), ('["a"]', r"no `sha256` table"),
                          ('{"sha256": {"model.keras": 3}}', r"no `sha256` table"),
                          ('{"sha256": ', r"not valid JSON")):
        (bad / "manifest.json").write_text(text)
        with pytest.raises(DataError, match=r"bad.manifest\.json:(\d+:)? " + problem):
            io.load(bad)
    (bad / "manifest.json").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(DataError, match=r"manifest\.json: not a text file"):
        io.load(bad)
    (folder / "model.keras").unlink()  # unchecked load: the file the format needs is named
    with pytest.raises(DataError, match=r"model\.keras: missing: loading format='keras' needs model\.keras"):
        io.load(folder, verify=False)
    assert io.load(folder, verify=False, format="json").outputs  # the other format is still there
    (folder / "model.json").write_text("{not json")
    with pytest.raises(DataError, match=r"model\.json: not valid JSON"):
        io.load(folder, verify=False, format="json")


def test_a_manifest_must_list_what_is_loaded_and_only_files_of_its_folder(saved, tmp_path):
    """Before: `"sha256": {}` verified nothing and loaded the unchecked files; an entry `../..` was hashed."""
    _, folder = saved
    manifest = json.loads((folder / "manifest.json").read_text())
    listed = dict(manifest["sha256"])
    (folder / "manifest.json").write_text(json.dumps({**manifest, "sha256": {}}))
    with pytest.raises(DataError, match=r"manifest\.json: does not list model\.keras, so its checksum cannot be verified"):
        io.load(folder)
    with pytest.raises(DataError, match=r"does not list model\.json"):
        io.load(folder, format="json")
    (folder / "manifest.json").write_text(json.dumps({**manifest, "sha256": {**listed, "../outside": "0" * 64}}))
    with pytest.raises(DataError, match=r"manifest\.json: lists '\.\./outside': a manifest names files inside its own folder"):
        io.load(folder)


def test_damaged_model_files_are_named_when_loaded_unchecked(saved, tmp_path):
    """Before: a truncated model.keras read as Keras's "File not found" (the file is there); a
    non-HDF5 .h5 gave h5py's bare OSError."""
    _, folder = saved
    keras_file = folder / "model.keras"
    keras_file.write_bytes(keras_file.read_bytes()[:100])
    with pytest.raises(DataError, match=r"model\.keras: cannot be read as a Keras model archive"):
        io.load(folder, verify=False)
    weights = folder / "model.weights.h5"
    weights.write_bytes(b"not an HDF5 file")
    with pytest.raises(DataError, match=r"model\.weights\.h5: cannot be read as an HDF5 weights file"):
        io.load(folder, verify=False, format="json")
    (tmp_path / "garbage.h5").write_bytes(b"not an HDF5 file")
    with pytest.raises(DataError, match=r"garbage\.h5: cannot be read as an HDF5 file \(OSError"):
        io.load_legacy_h5(tmp_path / "garbage.h5")


def test_failed_write_keeps_the_previous_file(saved):
    _, folder = saved
    before = (folder / "model.json").read_bytes()

    def crash(temporary):
        temporary.write_text("half written")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        io._atomic_write(folder / "model.json", crash)
    assert (folder / "model.json").read_bytes() == before
    assert {path.name for path in folder.iterdir()} == SAVED


def test_preprocessing_must_be_json(tmp_path):
    with pytest.raises(ValueError, match=r"JSON-serialisable.*Received: preprocessing="):
        io.save(_small_model(), tmp_path / "x", preprocessing={"mean": np.float32(1.0).tobytes()})


def test_legacy_full_model_h5_loads(tmp_path, batch):
    model = _small_model()
    model.save(tmp_path / "legacy.h5")
    loaded = io.load_legacy_h5(tmp_path / "legacy.h5")
    np.testing.assert_allclose(loaded.predict(batch, verbose=0), model.predict(batch, verbose=0), atol=1e-6)


def test_legacy_loader_rejects_weights_only_and_other_files(tmp_path):
    model = _small_model()
    with h5py.File(tmp_path / "weights.h5", "w") as handle:
        handle.attrs["layer_names"] = [b"conv"]
    with pytest.raises(DataError, match=r"weights\.h5: no `model_config`"):
        io.load_legacy_h5(tmp_path / "weights.h5")
    model.save(tmp_path / "m.keras")
    with pytest.raises(ValueError, match=r"\.h5 or \.hdf5\. Received: path=.*m\.keras"):
        io.load_legacy_h5(tmp_path / "m.keras")


def test_weights_by_name_skip_layers_only_when_allowed(tmp_path):
    source = _small_model()
    with h5py.File(tmp_path / "partial.h5", "w") as handle:
        handle.attrs["layer_names"] = [b"bn"]
        group = handle.create_group("bn")
        group.attrs["weight_names"] = [f"bn/v{i}".encode() for i in range(4)]
        for i, value in enumerate((2.0, 3.0, 0.5, 4.0)):
            group.create_dataset(f"bn/v{i}", data=np.full((4,), value, "float32"))
    target = _small_model()
    assert io.load_weights_by_name(target, tmp_path / "partial.h5", match="name", allow_missing=True) == ["bn"]
    gamma, beta, mean, variance = target.get_layer("bn").get_weights()
    assert (gamma[0], beta[0], mean[0], variance[0]) == (2.0, 3.0, 0.5, 4.0)
    np.testing.assert_array_equal(target.get_layer("conv").get_weights()[0], source.get_layer("conv").get_weights()[0])
    with pytest.raises(DataError, match=r"layer 'conv' of model 'small' \(weights \[\(3, 3, 3, 4\), \(4,\)\]\) is not in the file"):
        io.load_weights_by_name(target, tmp_path / "partial.h5", match="name")


def test_file_without_weights_is_rejected(tmp_path):
    with h5py.File(tmp_path / "empty.h5", "w") as handle:
        handle.create_group("something")
    with pytest.raises(DataError, match=r"empty\.h5: no layer weights found"):
        io.read_weight_file(tmp_path / "empty.h5")
