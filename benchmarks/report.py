"""Print benchmarks/results.json as the markdown tables of benchmarks/README.md.

    python -m benchmarks.report [benchmarks/results.json]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.run import DEFAULT_OUT


def _figure(value) -> str:
    """A spread as 'median [min-max]', other values as they are."""
    if isinstance(value, dict) and {"min", "median", "max"} <= set(value):
        return f"{value['median']:g} [{value['min']:g}-{value['max']:g}]"
    return str(value)


SHOWN = {"augment": ("image_data_generator_images_per_s", "tf_data_images_per_s", "ratio_per_round",
                     "ratio_with_start", "ratio_to_rgb_generator"),
         "fixed_costs": ("fixed_share", "fixed_share_without_backups", "total_s", "training_steps_s",
                         "first_epoch_excess_s", "backup_s", "build_s", "outside_fit_s"),
         "input_bound": ("model_steps_per_s", "pipeline_batches_per_s", "both_steps_per_s", "pipeline_headroom",
                         "end_to_end_per_round")}


def _runs(record: dict) -> str:
    runs = record["figures"].get("runs", {})
    if record["name"] == "prepare":
        cells = [f"{k}: {v['images_per_s']:g} img/s, peak RSS {v['peak_rss_mb']['self']:g} MB"
                 f" (+ worker {v['peak_rss_mb']['children']:g} MB)" for k, v in runs.items()]
        cells += [f"CBIS-DDSM projected {k}: {v['cbis_hours']:g} h"
                  for k, v in record["figures"]["projection_to_cbis_ddsm"].items()]
        return "; ".join(cells)
    if record["name"] == "train_memory":
        return "; ".join(f"{k}: peak {v['peak_rss_mb']:g} MB, rise {v['rise_mb']:g} MB (set {v['set_mb']:g} MB)"
                         for k, v in runs.items())
    keys = SHOWN.get(record["name"]) or [k for k in record["figures"] if k != "per_round"]
    return "; ".join(f"{k} {_figure(record['figures'][k])}" for k in keys if k in record["figures"])


def markdown(payload: dict) -> str:
    machine = payload["machine"]
    lines = [f"Measured {machine['date_utc']} UTC on {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
             f"GPUs: {', '.join(machine['gpus']) or 'none'}; TensorFlow {machine['tensorflow']}, Keras "
             f"{machine['keras']}, Python {machine['python']}; commit {machine['git_commit']}; load average "
             f"(1, 5, 15 min) {machine['load_average_at_start']} at the start, {machine['load_average_at_end']} "
             f"at the end; {payload['seconds'] / 60:.1f} min in all ({payload['size']} size); command "
             f"`{payload.get('command', 'python -m benchmarks.run')}`. Spreads: median [min-max] over rounds.", "",
             "| # | benchmark | ratio | goal | figures |", "| --- | --- | ---: | --- | --- |"]
    for number, record in enumerate(payload["results"], start=1):
        if record.get("skipped"):
            goal = "-" if record["goal"] is None else f">= {record['goal']:g}"
            lines.append(f"| {number} | {record['title']} | not run | {goal} | {record['skipped']} |")
            continue
        goal = "-" if record["goal"] is None else f">= {record['goal']:g} ({'met' if record['met'] else 'missed'})"
        figures = _runs(record)
        ratio = "-" if record["ratio"] is None else f"{record['ratio']:.3g}"
        lines.append(f"| {number} | {record['title']}: {record['ratio_label']} | {ratio} | {goal} | {figures} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT).read_text())))
