"""`reproduce`'s prepared folder follows the label file: a relabelled lesion is cut again, not reused by
its image id (before, the cached items kept mdb001 benign after Info.txt said malignant)."""
from __future__ import annotations

from mammo_keras.config import load_config
from mammo_keras.runner.inputs import load_inputs
from mias_fixtures import write_folder


def test_a_relabelled_lesion_reaches_the_runner(tmp_path):
    mias = write_folder(tmp_path / "data" / "mias")
    config = load_config("chougrad2018/mias_test", "tiny", overrides={"input_size": 48})

    def labels():
        inputs = load_inputs(config, "mias", tmp_path / "data", tmp_path / "work", lambda message: None)
        return dict(zip(inputs.index["item_id"], inputs.index["label"])), inputs.fingerprint

    before, first = labels()
    assert before["mdb001_1"] == 0
    info = mias / "Info.txt"
    info.write_bytes(info.read_bytes().replace(b"mdb001 G CIRC B 535 425 197", b"mdb001 G CIRC M 400 600 100"))
    after, second = labels()
    assert after == {**before, "mdb001_1": 1} and second != first
