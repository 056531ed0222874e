"""Print benchmarks/results.json as the markdown tables of benchmarks/README.md.

    python -m benchmarks.report [benchmarks/results.json]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.run import DEFAULT_OUT


def markdown(payload: dict) -> str:
    machine = payload["machine"]
    lines = [f"Measured {machine['date_utc']} UTC on {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
             f"GPUs: {', '.join(machine['gpus']) or 'none'}; TensorFlow {machine['tensorflow']}, Keras "
             f"{machine['keras']}, Python {machine['python']}; commit {machine['git_commit']}; load average "
             f"(1, 5, 15 min) {machine['load_average_at_start']} at the start, {machine['load_average_at_end']} "
             f"at the end; {payload['seconds'] / 60:.1f} min in all ({payload['size']} size).", "",
             "| # | benchmark | ratio | goal | figures |", "| --- | --- | ---: | --- | --- |"]
    for number, record in enumerate(payload["results"], start=1):
        if record.get("skipped"):
            lines.append(f"| {number} | {record['title']} | not run | >= {record['goal']:g} | {record['skipped']} |")
            continue
        goal = "-" if record["goal"] is None else f">= {record['goal']:g} ({'met' if record['met'] else 'missed'})"
        figures = "; ".join(f"{k} {v}" for k, v in record["figures"].items() if k != "per_round")
        lines.append(f"| {number} | {record['title']}: {record['ratio_label']} | {record['ratio']:.3g} | {goal} | "
                     f"{figures} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT).read_text())))
