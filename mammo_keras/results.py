"""Our measured numbers as data: experiments/<paper>/results.yaml, and the README tables made from it.

    python -m mammo_keras.results record results/chougrad2018/mias_cv   # run.json -> results.yaml
    python -m mammo_keras.results --write-readmes                       # results.yaml -> README tables

Like mmpretrain's metafiles: one entry per (config, profile, dataset, row) with the metric values and
their 95% CIs, the collapse flag, the data fingerprint, the commit, the row's training time, the run's
wall time and the command. A README shows a run's numbers only inside a block generated from the file
(`<!-- results:begin <config> -->` ... `<!-- results:end <config> -->`), and tests/test_results.py
checks that every block equals what the file renders, so the two cannot disagree. A row a rerun
reused (the same measurements) keeps the commit and wall time of the run that trained it. Beside a
row that reproduces a row of the paper's table, the block prints the paper's number (paper_tables.yaml,
read when rendering), saying on which data when the paper had another dataset.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
from pathlib import Path

import yaml

from mammo_keras.config import EXPERIMENTS_DIR
from mammo_keras.fileio import atomic_write_text

RESULTS_FILE = "results.yaml"
METRIC_FIELDS = ("fold_mean", "fold_std", "pooled", "ci_low", "ci_high")
PERCENT_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "recall")
# A detection row's metrics (runner.detection.METRIC_COLUMNS, less mean_iou_tp, which has no CI)
DETECTION_METRICS = ("ap", "sens_at_0.5fpi", "sens_at_1fpi", "sens_at_2fpi", "sensitivity_all")


def _number(value):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), 6)


def entries_of_run(run: dict, *, data: str = "DIR") -> list[dict]:
    """The results.yaml entries of one run.json: one per row that ran (status ok)."""
    config = run["config"]
    name = f"{config['paper']}/{config['table']}"
    command = run["command"] + ("" if run.get("synthetic") else f" --data {data}")
    entries = []
    for row in run["rows"]:
        if row.get("status") != "ok":
            continue
        dataset = str(row["dataset"]).removesuffix(" (synthetic)")
        metrics = {}
        if config.get("kind") == "detection":  # one test set: the value and its image-bootstrap CI
            for metric in DETECTION_METRICS:
                fields = {"pooled": _number(row.get(metric)), "ci_low": _number(row.get(f"{metric}_ci_low")),
                          "ci_high": _number(row.get(f"{metric}_ci_high"))}
                if fields["pooled"] is not None:
                    metrics[metric] = fields
        for metric in config.get("metrics", []) if config.get("kind") != "detection" else []:
            fields = {field: _number(row.get(f"{metric}_{field}")) for field in METRIC_FIELDS}
            if fields["pooled"] is not None:
                metrics[metric] = fields
        entries.append({
            "config": name, "row": row["model"], "profile": run["profile"], "dataset": dataset,
            "synthetic": bool(run.get("synthetic")), "n_items": row.get("n_items"),
            "data_fingerprint": (run.get("data_fingerprints") or {}).get(dataset, ""),
            "weights": row.get("weights", ""), "metrics": metrics,
            "collapsed": row.get("collapsed"), "minutes": _number((row.get("seconds") or 0) / 60),
            "commit": run.get("git_commit", ""), "run_wall_minutes": _number(run.get("wall_seconds", 0) / 60),
            "command": command, **_environment(run)})
    return entries


def _environment(run: dict) -> dict:
    """What the run ran with (the libraries that do the arithmetic, the CPU), when run.json records it."""
    versions, machine = run.get("versions") or {}, run.get("machine") or {}
    environment = {key: versions[key] for key in ("tensorflow", "keras", "numpy") if key in versions}
    environment.update({key: machine[key] for key in ("cpu", "cpus") if key in machine})
    return {"environment": environment} if environment else {}


def load(paper: str, experiments_dir: Path = EXPERIMENTS_DIR) -> list[dict]:
    path = Path(experiments_dir) / paper / RESULTS_FILE
    if not path.is_file():
        return []
    return list((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("results") or [])


def record(run_folder: str | Path, *, experiments_dir: Path = EXPERIMENTS_DIR, data: str = "DIR") -> Path:
    """Add (or replace) a finished run's entries in its paper's results.yaml."""
    run = json.loads((Path(run_folder) / "run.json").read_text(encoding="utf-8"))
    new = entries_of_run(run, data=data)
    if not new:
        raise ValueError(f"{run_folder}: no row of this run finished (nothing to record)")
    paper = run["config"]["paper"]
    keys = {(e["config"], e["profile"], e["dataset"]) for e in new}
    old = load(paper, experiments_dir)
    new = [_provenance_kept(entry, old) for entry in new]
    kept = [e for e in old if (e["config"], e["profile"], e["dataset"]) not in keys]
    path = Path(experiments_dir) / paper / RESULTS_FILE
    header = (f"# Our measured results for {paper} (generated by `python -m mammo_keras.results record "
              "<results folder>`; the README tables are made from this file)\n")
    atomic_write_text(path, header + yaml.safe_dump({"results": kept + new}, sort_keys=False, width=120))
    return path


MEASURED = ("data_fingerprint", "n_items", "weights", "metrics", "collapsed")
"""What a recorded row measured: equal in a later run, its parts were reused (or remade bitwise), and
the record stays the earlier run's (a reused baseline's `minutes` differ by its feature reading)."""


PROVENANCE = ("minutes", "commit", "run_wall_minutes", "command", "environment")
"""What a record says of the run that trained the row (an entry's last keys, in this order)."""


def _provenance_kept(entry: dict, old: list[dict]) -> dict:
    """`entry`, with the provenance of the run that trained it where an older record of the row holds
    the same measurements (a rerun that reused its finished parts, to add a row beside it, measured
    nothing new for it)."""
    for earlier in old:
        if all(earlier.get(key) == entry.get(key) for key in ("config", "row", "profile", "dataset", *MEASURED)):
            measured = {key: value for key, value in entry.items() if key not in PROVENANCE}
            return {**measured, **{key: earlier[key] for key in PROVENANCE if key in earlier}}
    return entry


def _cell(metric: str, fields: dict | None) -> str:
    if not fields or fields.get("pooled") is None:
        return "-"
    scale, digits = (100.0, 1) if metric in PERCENT_METRICS else (1.0, 3)
    text = f"{fields['pooled'] * scale:.{digits}f}"
    if fields.get("ci_low") is not None and fields.get("ci_high") is not None:
        text += f" [{fields['ci_low'] * scale:.{digits}f}, {fields['ci_high'] * scale:.{digits}f}]"
    return text


def begin_marker(config: str) -> str:
    return f"<!-- results:begin {config} (generated from results.yaml by `python -m mammo_keras.results --write-readmes`) -->"


def end_marker(config: str) -> str:
    return f"<!-- results:end {config} -->"


@functools.lru_cache(maxsize=None)
def _reported(config: str, profile: str, row: str, dataset: str, experiments_dir: Path) -> tuple | None:
    """(metric, value, std, other dataset or None) the paper prints for a recorded row, as the run's table.md shows it beside
    ours (runner.paper.reported_value: the config's paper table, matched on model and dataset), or None.
    Read from paper_tables.yaml when rendering, since the paper's number is a fact, not a measurement."""
    from mammo_keras.config import load_config
    from mammo_keras.runner.paper import matching_rows, reported_value, row_table

    try:
        loaded = load_config(config, profile, experiments_dir=experiments_dir)
    except (OSError, ValueError):  # a config renamed since: its rows are still shown, without the paper
        return None
    model = next((m for m in loaded.models if m.label == row), None)
    if model is None or not loaded.reported_metric or loaded.kind == "detection":
        return None
    trained_on, _, tested_on = dataset.rpartition(" -> ")  # a transfer row: compared on its test set
    compared, trained_on = tested_on, trained_on or None
    table = row_table(loaded, model, experiments_dir)
    value, std = reported_value(table, loaded, model, compared, trained_on=trained_on)
    if value is not None:
        return loaded.reported_metric, value, std, None
    # the paper's number for this network on its own data (a transfer row: from the same training set)
    other = matching_rows(table, loaded, model, None, trained_on=trained_on)
    if not other:
        return None
    printed = table["rows"][other[0]]
    value, std = reported_value(table, loaded, model, printed.get("dataset", compared), trained_on=trained_on)
    return None if value is None else (loaded.reported_metric, value, std, printed.get("dataset"))


def _paper_cell(reported: tuple | None) -> str:
    if reported is None:
        return "-"
    metric, value, std, elsewhere = reported
    scale, digits = (100, 1) if metric in PERCENT_METRICS else (1, 3)
    return (f"{scale * value:.{digits}f}" + ("" if std is None else f" ± {scale * std:.{digits}f}")
            + (f" (on {elsewhere})" if elsewhere else ""))


def render(entries: list[dict], config: str, experiments_dir: Path = EXPERIMENTS_DIR) -> str:
    """The README block of one config's recorded runs: a table per (profile, dataset), with the
    paper's number beside each row that reproduces one of its table's rows."""
    mine = [e for e in entries if e["config"] == config]
    lines = [begin_marker(config), ""]
    if not mine:
        lines += [f"No recorded run of `{config}` yet.", ""]
    groups: dict[tuple, list[dict]] = {}
    for entry in mine:
        groups.setdefault((entry["profile"], entry["dataset"], entry["command"], entry["commit"]), []).append(entry)
    for (profile, dataset, command, commit), rows in groups.items():
        metrics = list(dict.fromkeys(m for r in rows for m in r["metrics"]))
        unit = lambda m: " %" if m in PERCENT_METRICS else ""  # noqa: E731
        where = "test set" if all(m in DETECTION_METRICS for m in metrics) else "pooled"
        reported = [_reported(config, r["profile"], r["row"], r["dataset"], Path(experiments_dir)) for r in rows]
        paper_metric = next((found[0] for found in reported if found), None)
        paper = f" paper: {paper_metric}{unit(paper_metric)} |" if paper_metric else ""
        lines += [f"`{command}` (profile `{profile}`, dataset `{dataset}`"
                  f"{' (SYNTHETIC)' if rows[0]['synthetic'] else ''}, {rows[0]['n_items']} items, commit "
                  f"{commit[:12]}, run wall time {rows[0]['run_wall_minutes']:.1f} min, data fingerprint "
                  f"{rows[0]['data_fingerprint'][:12] or '-'}):", "",
                  "| row |" + paper + " " + " | ".join(f"{m}{unit(m)} {where} [95% CI]" for m in metrics)
                  + " | collapsed | training minutes |",
                  "|---|" + ("---:|" if paper else "") + "---:|" * len(metrics) + "---|---:|"]
        for row, found in zip(rows, reported):
            flag = {True: "**yes**", False: "no"}.get(row["collapsed"], "-")
            lines.append(f"| {row['row']} |" + (f" {_paper_cell(found)} |" if paper else "") + " "
                         + " | ".join(_cell(m, row["metrics"].get(m)) for m in metrics)
                         + f" | {flag} | {row['minutes']:.1f} |")
        lines.append("")
    lines.append(end_marker(config))
    return "\n".join(lines)


def readme_blocks(text: str) -> list[str]:
    """The configs whose results blocks a README holds."""
    configs = []
    for line in text.splitlines():
        if line.startswith("<!-- results:begin "):
            configs.append(line.split()[2])
    return configs


def update_readme(paper: str, experiments_dir: Path = EXPERIMENTS_DIR) -> bool:
    """Regenerate every results block of experiments/<paper>/README.md; True when it changed."""
    path = Path(experiments_dir) / paper / "README.md"
    if not path.is_file():
        return False
    text = original = path.read_text(encoding="utf-8")
    entries = load(paper, experiments_dir)
    for config in readme_blocks(text):
        start = text.index(begin_marker(config).split(" (generated")[0])
        end = text.index(end_marker(config), start) + len(end_marker(config))
        text = text[:start] + render(entries, config, experiments_dir) + text[end:]
    if text != original:
        atomic_write_text(path, text)
    return text != original


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mammo_keras.results", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    add = commands.add_parser("record", help="add a finished run (results/<paper>/<table>) to results.yaml")
    add.add_argument("run_folder")
    add.add_argument("--data", default="DIR", help="how the command's --data is shown (default: DIR)")
    parser.add_argument("--write-readmes", action="store_true", help="regenerate the README results blocks")
    args = parser.parse_args(argv)
    if args.command == "record":
        print(f"recorded in {record(args.run_folder, data=args.data)}")
    if args.write_readmes:
        for folder in sorted(p for p in EXPERIMENTS_DIR.iterdir() if (p / "README.md").is_file()):
            if update_readme(folder.name):
                print(f"updated {folder / 'README.md'}")
    if args.command is None and not args.write_readmes:
        parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
