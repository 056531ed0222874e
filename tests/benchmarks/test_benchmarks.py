"""The benchmarks run at a tiny size and write their records (speed itself is never asserted here)."""
from __future__ import annotations

import json

import pytest

from benchmarks import run as bench_run


def test_runner_writes_every_record_with_machine_facts(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert bench_run.main(["--size", "tiny", "--only", "augment,input_bound,feature_cache,gpu_table2",
                           "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["size"] == "tiny"
    assert {"cpu_count", "cpu_model", "tensorflow", "keras", "date_utc", "load_average_at_start",
            "load_average_at_end", "gpus"} <= set(payload["machine"])
    records = {r["name"]: r for r in payload["results"]}
    assert list(records) == ["augment", "input_bound", "feature_cache", "gpu_table2"]  # issue order
    for name in ("augment", "input_bound", "feature_cache"):
        assert records[name]["ratio"] > 0 and records[name]["skipped"] is None
    assert records["augment"]["goal"] == 5.0 and records["input_bound"]["goal"] == 0.95
    assert records["feature_cache"]["figures"]["parity_max_abs_diff"] < 1e-5
    assert records["feature_cache"]["figures"]["cut_layer"] == "head_pool"
    if not payload["machine"]["gpus"]:
        assert records["gpu_table2"]["skipped"].startswith("no GPU")
    printed = capsys.readouterr().out
    assert "augment" in printed and "goal >= 5" in printed and str(out) in printed


def test_runner_rejects_unknown_names(tmp_path):
    with pytest.raises(SystemExit):
        bench_run.main(["--only", "nope", "--out", str(tmp_path / "r.json")])


@pytest.mark.slow
def test_precision_xla_and_gpu_protocol_tiny():
    """Builds Shen's ResNet50 whole-image net 4 times, compiles with XLA (20 s) and trains InceptionV3:
    opt-in (--runslow), to keep CI short."""
    from benchmarks import bench_gpu_table2, bench_precision, bench_xla

    assert bench_xla.run("tiny")["ratio"] > 0

    record = bench_precision.run("tiny")
    assert record["figures"]["peak_memory_mb_float32"] > 0 and record["figures"]["parity"]["same_class"] >= 0.5
    record = bench_gpu_table2.run("tiny", force_cpu=True)
    assert record["figures"]["epochs_run"] >= 2 and record["ratio"] > 0
