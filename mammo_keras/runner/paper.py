"""The paper's side of a results table: its published numbers (paper_tables.yaml) and its declared
deviations (protocol.yaml)."""
from __future__ import annotations

from pathlib import Path

import yaml

from mammo_keras.config import EXPERIMENTS_DIR, ExperimentConfig, ModelRow


def reported_table(config: ExperimentConfig, experiments_dir: Path = EXPERIMENTS_DIR, *,
                   name: str | None = None) -> dict:
    """The paper's table named by the config (or `name`), from experiments/<paper>/paper_tables.yaml ({} if none)."""
    path = experiments_dir / config.paper / "paper_tables.yaml"
    name = name or config.reported_table
    if not name or not path.is_file():
        return {}
    tables = (yaml.safe_load(path.read_text()) or {}).get("tables", {})
    return dict(tables.get(name) or {})


def row_table(config: ExperimentConfig, row: ModelRow, experiments_dir: Path = EXPERIMENTS_DIR) -> dict:
    """The paper's table a row is compared with: the config's, or the one its `paper_row.table` names."""
    return reported_table(config, experiments_dir, name=row.paper_row.get("table"))


def matching_rows(table: dict, config: ExperimentConfig, model: ModelRow | str, dataset: str | None, *,
                  require_metric: bool = True, trained_on: str | None = None) -> list[int]:
    """Positions of the paper's rows that `model` on `dataset` reproduces in `table`.

    A paper row matches when it carries the model's `paper_keys()` (by default model = label; a list
    value matches any of its items), names the config's key for `dataset` if it names a dataset
    (dataset None: any), names the key of `trained_on` if it names a `train_dataset` (a transfer
    row: Chougrad's MIAS test is of the model trained on the merged set, not of the single sets'),
    and has the reported metric.
    """
    key = None if dataset is None else config.dataset_keys.get(dataset, dataset)
    trained_key = None if trained_on is None else config.dataset_keys.get(trained_on, trained_on)
    metric = config.reported_metric
    keys = model.paper_keys() if isinstance(model, ModelRow) else {"model": model}

    def differs(value, wanted) -> bool:
        options = wanted if isinstance(wanted, (list, tuple)) else [wanted]
        return str(value).lower() not in {str(v).lower() for v in options}

    found = []
    for number, row in enumerate(table.get("rows", [])):
        if any(differs(row.get(k, ""), v) for k, v in keys.items()):
            continue
        if "dataset" in row and key is not None and str(row["dataset"]).lower() != str(key).lower():
            continue
        if ("train_dataset" in row and trained_key is not None
                and str(row["train_dataset"]).lower() != str(trained_key).lower()):
            continue
        if row.get(metric) is not None or not require_metric:
            found.append(number)
    return found


def reported_value(table: dict, config: ExperimentConfig, model: ModelRow | str,
                   dataset: str, *, trained_on: str | None = None) -> tuple[float | None, float | None]:
    """(value, std) the paper reports for this model and dataset (its first matching row), as fractions.

    Values the paper prints in percent (`units: {metric: percent}`) are divided by 100, so the
    paper's number and ours are on one scale whatever the paper's habit.
    """
    found = matching_rows(table, config, model, dataset, trained_on=trained_on)
    if not found:
        return None, None
    metric = config.reported_metric
    scale = 0.01 if (table.get("units") or {}).get(metric) == "percent" else 1.0
    row = table["rows"][found[0]]
    std = row.get(f"{metric}_std")
    return row[metric] * scale, (None if std is None else std * scale)


def reproductions(paper: str, experiments_dir: Path = EXPERIMENTS_DIR) -> dict[tuple[str, int], list[dict]]:
    """For each (table, row position) of a paper's paper_tables.yaml, the config rows that reproduce it."""
    from mammo_keras.config import list_configs, load_config

    found: dict[tuple[str, int], list[dict]] = {}
    for name in list_configs(experiments_dir):
        if not name.startswith(paper + "/"):
            continue
        config = load_config(name, "paper", experiments_dir=experiments_dir)
        detection = config.kind == "detection"  # a survey's rows: other works on other data, matched by model
        for model in config.models:
            table_name = model.paper_row.get("table") or config.reported_table
            table = reported_table(config, experiments_dir, name=table_name)
            for dataset in config.datasets:
                shown = config.test_dataset if config.kind == "transfer" else dataset
                numbers = matching_rows(table, config, model, None if detection else shown,
                                        require_metric=not detection,
                                        trained_on=dataset if config.kind == "transfer" else None)
                for number in numbers if detection else numbers[:1]:
                    found.setdefault((table_name, number), []).append(
                        {"config": config.table, "row": model.label, "dataset": dataset})
    return found


def deviation_lines(paper: str, plan: dict | None = None) -> list[str]:
    """The paper's declared deviations (protocol.yaml), printed under its results tables: with
    `plan`, those of the facts that hold for one of the plan's rows (the plan's protocol block)."""
    from mammo_keras.protocol import declared

    deviations = (plan.get("protocol") or {}).get("deviations", []) if plan else declared(paper)["deviations"]
    if not deviations:
        return []
    return ["Declared deviations from the paper's stated protocol (experiments/"
            f"{paper}/protocol.yaml; `--plan` shows the executed protocol):", "",
            *[f"- {d['stated']} ({d['cite']}): {d['reason']}" for d in deviations], ""]
