"""The benchmarks run at a tiny size and write their records (speed itself is never asserted here),
and the GPU check's dry run writes a results JSON of the expected shape."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check
from benchmarks import run as bench_run
from benchmarks.common import spread

REPO = Path(__file__).resolve().parents[2]


def is_spread(value) -> bool:
    return (isinstance(value, dict) and {"min", "median", "max", "rounds"} <= set(value)
            and value["min"] <= value["median"] <= value["max"])


def test_runner_writes_every_record_with_machine_facts_and_spreads(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert bench_run.main(["--size", "tiny", "--only", "gpu_table2,prepare,input_bound,augment", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["size"] == "tiny" and payload["command"].startswith("python -m benchmarks.run --size tiny")
    assert {"cpu_count", "cpu_model", "tensorflow", "keras", "date_utc", "load_average_at_start",
            "load_average_at_end", "gpus"} <= set(payload["machine"])
    records = {r["name"]: r for r in payload["results"]}
    assert list(records) == ["augment", "input_bound", "prepare", "gpu_table2"]  # the registry's order
    for name in ("augment", "input_bound", "prepare"):
        assert records[name]["ratio"] > 0 and records[name]["skipped"] is None
    augment = records["augment"]["figures"]
    assert records["augment"]["goal"] == 8.0 and is_spread(augment["tf_data_images_per_s"])
    assert is_spread(augment["image_data_generator_images_per_s"]) and is_spread(augment["ratio_per_round"])
    assert records["input_bound"]["goal"] == 0.95 and is_spread(records["input_bound"]["figures"]["model_steps_per_s"])
    runs = records["prepare"]["figures"]["runs"]
    assert set(runs) == {"n4_w1", "n4_w2", "n8_w1", "n8_w2"}
    assert all(run["items"] == run["images"] and run["peak_rss_mb"]["self"] > 0 for run in runs.values())
    assert runs["n8_w2"]["peak_rss_mb"]["children"] > 0  # the worker's own peak
    assert set(records["prepare"]["figures"]["projection_to_cbis_ddsm"]) == {"w1", "w2"}
    if not payload["machine"]["gpus"]:
        assert records["gpu_table2"]["skipped"].startswith("no GPU")
    printed = capsys.readouterr().out
    assert "augment" in printed and "goal >= 8" in printed and str(out) in printed
    from benchmarks.report import markdown

    table = markdown(payload)
    assert "| 1 | Augmentation throughput" in table and "n8_w2:" in table and " [" in table


def test_runner_rejects_unknown_names(tmp_path):
    with pytest.raises(SystemExit):
        bench_run.main(["--only", "nope", "--out", str(tmp_path / "r.json")])
    assert "precision" in bench_run.OPT_IN and "feature_cache" not in bench_run.BENCHMARKS


def test_spread_is_min_median_max():
    assert spread([3.0, 1.0, 2.0, 10.0]) == {"min": 1.0, "median": 2.5, "max": 10.0, "rounds": 4}


def test_compile_counts_are_attributed_to_steps(tmp_path):
    log = tmp_path / "check.log"
    log.write_text("GPU_CHECK_STEP parity\n"
                   "I0000 device_compiler.h:538] Compilation of XLA executable time: 12.5 ms (12500 us)\n"
                   "GPU_CHECK_STEP table2_fold\nunrelated line\n"
                   "I0000 device_compiler.h:538] Compilation of XLA executable time: 2 s (2000000 us)\n"
                   "I0000 device_compiler.h:538] Compilation of XLA executable time: 500 ms (500000 us)\n")
    assert gpu_check.count_compiles(log) == {"parity": {"compiles": 1, "seconds": 0.013},
                                             "table2_fold": {"compiles": 2, "seconds": 2.5}}


def test_gpu_check_dry_run_through_the_shell_script(tmp_path):
    """The wrapper as a GPU machine runs it, with --dry-run and the fastest steps (about 20 s)."""
    out = tmp_path / "gpu.json"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--steps",
                           "device,parity,mixed_parity"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"results in {out}" in done.stdout
    payload = json.loads(out.read_text())
    assert payload["dry_run"] is True and payload["size"] == "toy" and isinstance(payload["seconds"], float)
    assert set(payload["steps"]) == {"device", "parity", "mixed_parity"}
    device = payload["steps"]["device"]
    assert device["gpu"] is False and isinstance(device["device_name"], str) and isinstance(device["tf32_default"], bool)
    parity = payload["steps"]["parity"]
    for key in ("predict_max_abs_diff_tf32_on", "predict_max_abs_diff_tf32_off", "train_step_weights_max_abs_diff"):
        assert isinstance(parity[key], float) and parity[key] == 0.0  # CPU against CPU in a dry run
    mixed = payload["steps"]["mixed_parity"]
    assert mixed["mixed_policy"] == "mixed_bfloat16" and 0.0 <= mixed["max_abs_diff"] < 0.1
    assert 0.0 <= mixed["same_class"] <= 1.0 and isinstance(payload["xla_compiles"], dict)
    assert payload["peak_gpu_memory_mb"] is None
    assert (tmp_path / "gpu.log").is_file()


@pytest.mark.slow
def test_every_benchmark_and_the_whole_dry_run_at_tiny_size(tmp_path):
    """About three minutes: fixed costs, training memory, XLA, precision, the Table 2 fold on a CPU and
    the GPU check's every step (opt-in with --runslow)."""
    from benchmarks import bench_gpu_table2, bench_precision

    out = tmp_path / "results.json"
    assert bench_run.main(["--size", "tiny", "--only", "fixed_costs,train_memory,xla", "--out", str(out)]) == 0
    records = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    assert 0 < records["fixed_costs"]["figures"]["fixed_share"]["median"] < 1
    assert records["fixed_costs"]["figures"]["per_round"][0]["epochs"] >= 2
    runs = records["train_memory"]["figures"]["runs"]
    assert set(runs) == {"n10_runner", "n10_mmap", "n10_in_memory", "n60_runner", "n60_mmap"}
    assert runs["n60_runner"]["parts"]["n_val"] > 0 and runs["n60_runner"]["parts"]["n_test"] > 0
    assert records["train_memory"]["ratio"] > 0 and records["train_memory"]["figures"]["mmap_ratio"] > 0
    assert records["xla"]["figures"]["xla_effective"] == {"no_xla": False, "xla": True}
    record = bench_precision.run("tiny")
    assert record["figures"]["peak_memory_mb_float32"] > 0 and record["figures"]["parity"]["same_class"] >= 0.5
    record = bench_gpu_table2.run("tiny", force_cpu=True)
    assert record["figures"]["epochs_run"] >= 2 and record["ratio"] > 0
    check = tmp_path / "gpu.json"
    assert gpu_check.main(["--dry-run", "--out", str(check)]) == 0
    steps = json.loads(check.read_text())["steps"]
    assert set(steps) == set(gpu_check.STEPS) and not any("error" in step for step in steps.values())
    assert steps["table2_fold"]["fixed_costs"]["traces"]["train"] == 2  # one per stage
    assert steps["model_steps"]["configs"]["vgg16_float32"]["steps_per_s"] > 0


def test_the_fixed_cost_fold_scores_the_epoch_table2_scores():
    """Before: the benchmark's fold kept the best validation AUC's epoch, so it timed a validation AUC
    pass per epoch that Chougrad's Table 2 (which scores the last epoch) never runs."""
    from benchmarks import bench_fixed_costs
    from mammo_keras.config import load_config

    for profile in ("tiny", "cpu", "paper"):
        config = load_config("chougrad2018/table2", profile)
        assert bench_fixed_costs.table2_selection() == config.selection == "last"
        assert {m.stages or config.stages for m in config.models if not m.baseline} == {"chougrad2018"}
