"""Run the benchmarks side by side and write their figures with the machine they came from.

    python -m benchmarks.run                      # full size (make bench), writes benchmarks/results.json
    python -m benchmarks.run --size tiny --out /tmp/bench.json --only augment,xla

Each benchmark prints one ratio measured in one run; results.json holds every figure (with the
min / median / max over rounds), the machine (CPU count and model, GPUs, TensorFlow/Keras
versions, date, load average before and after, git commit), the command and the wall time;
benchmarks/README.md presents them. `precision` is opt-in (--only precision): on a CPU it
measures bfloat16, which no shipped config uses there; benchmarks/gpu_check.sh measures mixed
precision where it matters.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

BENCHMARKS = {  # name -> module, in the order
    "augment": "benchmarks.bench_augment",
    "fixed_costs": "benchmarks.bench_fixed_costs",
    "input_bound": "benchmarks.bench_input",
    "prepare": "benchmarks.bench_prepare",
    "train_memory": "benchmarks.bench_train_memory",
    "gpu_table2": "benchmarks.bench_gpu_table2",
    "xla": "benchmarks.bench_xla",
    "precision": "benchmarks.bench_precision",
}
OPT_IN = ("precision",)
"""Run only when named in --only."""
DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"


def line(record: dict) -> str:
    if record.get("skipped"):
        return f"{record['name']:14s} skipped: {record['skipped']}"
    goal = "" if record["goal"] is None else f"  goal >= {record['goal']:g}: {'met' if record['met'] else 'MISSED'}"
    ratio = "       -" if record["ratio"] is None else f"{record['ratio']:8.3f}"
    return f"{record['name']:14s} {ratio}  {record['ratio_label']}{goal}"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="full", choices=("tiny", "full"))
    parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="results file (default benchmarks/results.json)")
    args = parser.parse_args(argv)
    chosen = {name.strip() for name in args.only.split(",") if name.strip()} or set(BENCHMARKS) - set(OPT_IN)
    unknown = sorted(chosen - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; valid: {sorted(BENCHMARKS)}")
    chosen = [name for name in BENCHMARKS if name in chosen]  # always in the order

    from benchmarks.common import load_average, machine_info
    from mammo_keras.fileio import atomic_write_json

    machine = machine_info()
    print(f"benchmarks ({args.size}) on {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
          f"GPUs: {machine['gpus'] or 'none'}; TF {machine['tensorflow']}, Keras {machine['keras']}; "
          f"load average {machine['load_average_at_start']}", flush=True)
    started = time.perf_counter()
    records = []
    for name in chosen:
        began = time.perf_counter()
        record = importlib.import_module(BENCHMARKS[name]).run(args.size)
        record["seconds"] = round(time.perf_counter() - began, 1)
        records.append(record)
        print(line(record) + f"   ({record['seconds']:.0f} s)", flush=True)
    machine["load_average_at_end"] = load_average()
    payload = {"size": args.size, "command": "python -m benchmarks.run " + " ".join(argv if argv is not None
                                                                                  else sys.argv[1:]),
               "machine": machine, "seconds": round(time.perf_counter() - started, 1), "results": records}
    atomic_write_json(args.out, payload)
    print(f"{len(records)} benchmarks in {payload['seconds']:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
