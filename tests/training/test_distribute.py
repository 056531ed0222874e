"""tf.distribute: strategy by name, and two worker processes on 127.0.0.1 training in lock step."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mammo_keras.training.distribute import STRATEGIES, make_strategy, run_check, task_info

REPO = Path(__file__).resolve().parents[2]


def test_make_strategy_by_name():
    assert task_info(make_strategy("default")) == {"task_type": "worker", "task_id": 0, "is_chief": True,
                                                   "replicas": 1}
    assert make_strategy("mirrored").num_replicas_in_sync == 1  # one CPU device here
    with pytest.raises(ValueError, match=r"one of \('default', 'mirrored', 'multi_worker'\)\. "
                                         r"Received: strategy='tpu'"):
        make_strategy("tpu")
    assert STRATEGIES == ("default", "mirrored", "multi_worker")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_finish_with_identical_weights(tmp_path):
    """MultiWorkerMirroredStrategy over gRPC on 127.0.0.1: same weights on both, falling loss.

    The workers are killed after 170 s (a hung collective would otherwise wait forever).
    """
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "mammo_keras.training.distribute", "--out", str(tmp_path / f"w{index}"),
             "--epochs", "4", "--batch-size", "32"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True))
    try:
        # Meanwhile, the same training in this process on one device: global batch semantics.
        single = run_check(tmp_path / "single", strategy="default", epochs=4, batch_size=32)
        outputs = [p.communicate(timeout=170)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for p, output in zip(processes, outputs):
        assert p.returncode == 0, output[-3000:]
    results = [json.loads((tmp_path / f"w{i}" / "result.json").read_text()) for i in range(2)]
    assert [r["task_id"] for r in results] == [0, 1]
    assert all(r["replicas"] == 2 for r in results)
    assert results[0]["checksum"] == results[1]["checksum"]
    weights = [np.load(tmp_path / f"w{i}" / "weights.npz") for i in range(2)]
    assert weights[0].files == weights[1].files and len(weights[0].files) == 4
    for name in weights[0].files:
        np.testing.assert_array_equal(weights[0][name], weights[1][name])
    for r in results:
        assert r["loss"][-1] < 0.7 * r["loss"][0], r["loss"]
        # Two replicas of 16 take the steps one replica of 32 takes (logs agree to ~0.1%: the
        # per-replica loss trackers are averaged, and sums run in another order).
        np.testing.assert_allclose(r["loss"], single["loss"], rtol=3e-3)


def test_build_model_uses_the_scope_after_clear_session():
    """Folds call keras.backend.clear_session(); each build still gets the strategy and precision."""
    import keras
    import tensorflow as tf

    from mammo_keras.training.distribute import build_model, check_model, training_scope

    assert build_model(check_model).distribute_strategy is tf.distribute.get_strategy()  # no scope: as before
    with training_scope("mirrored", "mixed_bfloat16") as strategy:
        for _ in range(2):
            model = build_model(check_model)
            assert model.distribute_strategy is strategy
            assert model.get_layer("block1_conv1").compute_dtype == "bfloat16"
            assert model.get_layer("predictions").compute_dtype == "float32"
            keras.backend.clear_session()
    assert keras.config.dtype_policy().name == "float32"
