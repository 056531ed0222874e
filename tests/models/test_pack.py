"""`models pack` / `models unpack`: a checksummed archive of a saved model, unsafe archives refused,
and `predict` loading the unpacked folder (and refusing it once a file changes)."""
from __future__ import annotations

import hashlib
import zipfile

import keras
import numpy as np
import pytest

from mammo_keras import io
from mammo_keras.app.predict import load_model_folder
from mammo_keras.cli import main
from mammo_keras.errors import DataError

PREPROCESSING = {"recipe": "chougrad", "options": {"r": 300, "size": 224, "grow_to_fit": True},
                 "input_hw": [8, 8], "input_channels": 1, "input_scale": 1.0, "intensity": "format_range"}


def _tiny_model() -> keras.Model:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="predictions")(x), name="tiny")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "model"
    model = _tiny_model()
    io.save(model, folder, architecture="tiny", class_names=["benign", "malignant"], preprocessing=PREPROCESSING)
    (folder / "NOTES.md").write_text("# tiny\nresearch use only\n")  # a file the manifest does not list
    return model, folder


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_pack_lists_every_file_and_is_reproducible(saved, tmp_path):
    _, folder = saved
    archive = io.pack(folder, tmp_path / "model.zip")
    with zipfile.ZipFile(archive) as bundle:
        names = bundle.namelist()
        sums = dict(reversed(line.split("  ")) for line in bundle.read("SHA256SUMS").decode().splitlines())
        contents = {name: bundle.read(name) for name in names}
    assert names == ["MODEL_CARD.md", "NOTES.md", "manifest.json", "model.json", "model.keras", "model.weights.h5",
                     "SHA256SUMS"]
    assert sums == {name: _sha((folder / name).read_bytes()) for name in names[:-1]}
    assert all(contents[name] == (folder / name).read_bytes() for name in names[:-1])
    again = io.pack(folder, tmp_path / "again.zip")
    assert again.read_bytes() == archive.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.zip", "model.zip"]  # no temporary files


def test_unpack_round_trip_and_predict_verifies_it(saved, tmp_path):
    model, folder = saved
    archive = io.pack(folder, tmp_path / "model.zip")
    unpacked = io.unpack(archive, tmp_path / "laptop" / "model")
    assert sorted(p.name for p in unpacked.iterdir()) == ["MODEL_CARD.md", "NOTES.md", "SHA256SUMS", "manifest.json",
                                                         "model.json", "model.keras", "model.weights.h5"]
    assert (unpacked / "MODEL_CARD.md").read_bytes() == (folder / "MODEL_CARD.md").read_bytes()
    assert sorted(p.name for p in unpacked.parent.iterdir()) == ["model"]  # the staging folder is gone
    loaded = load_model_folder(unpacked)
    batch = np.random.default_rng(0).uniform(size=(2, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(loaded.model.predict(batch, verbose=0), model.predict(batch, verbose=0), atol=1e-6)
    assert loaded.class_names == ("benign", "malignant")
    with open(unpacked / "model.weights.h5", "r+b") as handle:  # a bit flipped on the way
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    with pytest.raises(DataError, match=r"model\.weights\.h5: sha256 mismatch"):
        load_model_folder(unpacked)


def _rewrite(archive, out, *, replace=None, extra=None, sums=None):
    """A copy of `archive` with entries replaced or added, SHA256SUMS kept unless `sums` is given."""
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            data = (replace or {}).get(name, source.read(name))
            if name == "SHA256SUMS" and sums is not None:
                data = sums(data.decode()).encode()
            target.writestr(name, data)
        for name, data in (extra or {}).items():
            target.writestr(name, data)
    return out


def test_unpack_refuses_changed_files_and_unsafe_paths(saved, tmp_path):
    _, folder = saved
    archive = io.pack(folder, tmp_path / "model.zip")
    changed = _rewrite(archive, tmp_path / "changed.zip", replace={"model.json": b"{}"})
    with pytest.raises(DataError, match=r"changed\.zip: model\.json: sha256 mismatch: the file changed after it "
                                        r"was packed"):
        io.unpack(changed, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    evil = b"evil"
    traversal = _rewrite(archive, tmp_path / "traversal.zip", extra={"../escaped.txt": evil},
                         sums=lambda text: text + f"{_sha(evil)}  ../escaped.txt\n")
    with pytest.raises(DataError, match=r"traversal\.zip: unsafe path in the archive .*Received: '\.\./escaped\.txt'"):
        io.unpack(traversal, tmp_path / "deep" / "out")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "deep" / "escaped.txt").exists()
    absolute = _rewrite(archive, tmp_path / "absolute.zip", extra={"/tmp/x.txt": evil})
    with pytest.raises(DataError, match=r"unsafe path in the archive"):
        io.unpack(absolute, tmp_path / "out")
    unlisted = _rewrite(archive, tmp_path / "unlisted.zip", extra={"notes.txt": evil})
    with pytest.raises(DataError, match=r"unlisted\.zip: notes\.txt: in the archive but not in SHA256SUMS"):
        io.unpack(unlisted, tmp_path / "out")
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(link, "w") as target:
        for name in source.namelist():
            target.writestr(name, source.read(name))
        info = zipfile.ZipInfo("model.link")
        info.external_attr = 0o120777 << 16  # a symbolic link entry
        target.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match=r"model\.link: the archive holds a symbolic link"):
        io.unpack(link, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.unpack.*"))


def test_unpack_and_pack_refuse_bad_inputs(saved, tmp_path):
    _, folder = saved
    archive = io.pack(folder, tmp_path / "model.zip")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match=r"full: unpack needs a new or empty destination folder"):
        io.unpack(archive, tmp_path / "full")
    (tmp_path / "notzip.zip").write_text("hello")
    with pytest.raises(DataError, match=r"notzip\.zip: not a model archive written by `mammo-keras models pack`"):
        io.unpack(tmp_path / "notzip.zip", tmp_path / "out")
    with zipfile.ZipFile(tmp_path / "nosums.zip", "w") as bundle:
        bundle.writestr("manifest.json", "{}")
    with pytest.raises(DataError, match=r"no SHA256SUMS in the archive"):
        io.unpack(tmp_path / "nosums.zip", tmp_path / "out")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in folder.iterdir():
        (damaged / path.name).write_bytes(path.read_bytes())
    (damaged / "model.json").write_text("{}")
    with pytest.raises(DataError, match=r"model\.json: sha256 mismatch"):
        io.pack(damaged, tmp_path / "damaged.zip")
    assert not (tmp_path / "damaged.zip").exists()


def test_models_cli_pack_and_unpack(saved, tmp_path, capsys):
    _, folder = saved
    archive = tmp_path / "shipped.zip"
    assert main(["models", "pack", str(folder), str(archive)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"packed {folder} -> {archive} (") and f"sha256 {io.sha256(archive)}" in out
    assert main(["models", "unpack", str(archive), str(tmp_path / "here")]) == 0
    assert "every file matches SHA256SUMS and the manifest" in capsys.readouterr().out
    assert io.read_manifest(tmp_path / "here")["architecture"] == "tiny"
    assert main(["models", "unpack", str(archive), str(tmp_path / "here")]) == 1
    assert "unpack needs a new or empty destination folder" in capsys.readouterr().err
