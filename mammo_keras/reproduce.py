"""The one runner behind `mammo-keras reproduce <paper>/<table>`: a short loop over rows.

    out = reproduce(load_config("chougrad2018/table2", "tiny"))

It writes the plan first (`plan.py`: every row's protocol, built before any data is read, so a
selector that matches nothing or an input too small for a network stops the run at once), reads
and prepares the datasets through the config's kind (`runner.kinds`), runs every (dataset, row),
and writes the tables, plots and run record (`runner.report`). Rows whose dataset is absent say
where it was looked for and carry the paper's number alone; rows whose earlier run (a chained
table), local weights file or ensemble members are missing say which command to run first. A row
that starts from another run's saved model is refused, naming the patients, when it would validate
or test on women that model learned from (`runner.lineage`).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from mammo_keras.config import ExperimentConfig, ModelRow
from mammo_keras.data import check_data_dir
from mammo_keras.runner import report
from mammo_keras.runner.inputs import check_found
from mammo_keras.runner.kinds import RowRun, kind_for_row, kind_of
from mammo_keras.runner.lineage import check_references, references
from mammo_keras.runner.paper import reported_value, row_table
from mammo_keras.runner.reuse import check_reusable, record_dataset, record_row
from mammo_keras.runner.rows import describe_weights, expand_options, resolve_results


def reproduce(config: ExperimentConfig, *, data_dir: str | Path | None = None,
              results_dir: str | Path = "results", progress: Callable[[str], None] = print) -> Path:
    """Run every (dataset, row) of `config`; returns the results folder."""
    from mammo_keras.plan import compile_plan, write_plan

    check_data_dir(data_dir)
    started, commit = time.perf_counter(), report.git_commit()  # the code at the start, not after edits
    out = Path(results_dir) / config.paper / config.table
    plan = compile_plan(config)
    check_reusable(out, plan)  # before the plan is replaced: finished parts are reused only under their own
    write_plan(plan, out)
    plans = {entry["label"]: entry for entry in plan["rows"]}
    progress(f"{config.name} [{config.profile} profile]: {report.profile_title(config)}; plan in {out / 'plan.md'}")
    kind = kind_of(config)
    inputs = kind.datasets(config, data_dir, out, progress)
    check_found(config, inputs, data_dir)
    test_inputs = kind.test_inputs(config, data_dir, out, progress)
    rows, fingerprints = [], {}
    for dataset in config.datasets:
        data = inputs[dataset]
        fingerprints[dataset] = data.fingerprint
        for key, extra in getattr(data, "unlabelled", {}).items():  # another task's items some rows pretrain on
            fingerprints[f"unlabelled:{key}:{dataset}"] = extra.fingerprint
        shown, compared = dataset, dataset
        if test_inputs is not None:  # a transfer row: trained on `dataset`, tested on the test set
            fingerprints[f"test:{config.test_dataset}"] = test_inputs.fingerprint
            shown, compared = f"{dataset} -> {config.test_dataset}", config.test_dataset
            if test_inputs.absent and not data.absent:
                data = dataclasses.replace(data, absent=f"test set {test_inputs.absent}")
        if not data.absent:
            record_dataset(out / dataset, plan)
        split, split_missing = kind.dataset_split(config, dataset, data, out, results_dir, progress)
        finished: set[str] = set()
        for row in config.models:
            options, needs = row_options(row, results_dir, dataset, finished)
            status = data.absent or (f"skipped: {split_missing}" if split_missing else "") or needs or "ok"
            result = report.ResultRow(shown + (" (synthetic)" if data.synthetic else ""), row.label, status,
                                      *reported_value(row_table(config, row), config, row, compared,
                                                      trained_on=dataset if test_inputs is not None else None),
                                      weights=row_weights(row, options), extra=paper_text(config, row))
            if status != "ok":
                progress(f"{dataset} / {row.label}: {status}")
            else:
                progress(f"{dataset} / {row.label}: {kind_for_row(kind, row).name}")
                job = RowRun(config, row, dataset, data, out / dataset, options, progress, split, test_inputs)
                check_references(job, references(row.options), results_dir)  # before it trains or is reused
                record_row(job.folder, plans[row.label], plan["plan_version"])  # compile_plan plans every row
                _, outcome = kind_for_row(kind, row).run(job)
                result.status = outcome.pop("status", "ok")
                result.extra.update(outcome.pop("extra", {}))
                for key in ("n_items", "seconds", "epochs", "metrics", "collapsed"):
                    if key in outcome:
                        setattr(result, key, outcome[key])
                if result.status == "ok":  # ensembles wait for members that have scores
                    finished.add(row.label)
            result.extra.update(report.curve_point(row, out / dataset / row.label))  # a learning curve's point
            rows.append(result)
    synthetic = any(d.synthetic for d in inputs.values()) or bool(test_inputs and test_inputs.synthetic)
    report.write_run(config, rows, out, commit=commit, started=started, fingerprints=fingerprints,
                     synthetic=synthetic, plan=plan)
    return out


def row_options(row: ModelRow, results_dir, dataset: str, finished: set[str]) -> tuple[dict, str]:
    """The row's builder options ($VARs expanded, earlier runs' files resolved), and why it must wait."""
    options, unset = expand_options(row.options)
    options, pending = resolve_results(options, results_dir, dataset)
    waiting = sorted(set(row.ensemble.get("members", [])) - finished)
    needs = ((f"skipped: set {', '.join(unset)} (a local weights file)" if unset else "")
             or (f"skipped: {pending[0]}" if pending else "")
             or (f"skipped: members without results: {', '.join(waiting)}" if waiting else ""))
    return options, needs


def row_weights(row: ModelRow, options: dict) -> str:
    if row.ensemble:
        return f"ensemble of {', '.join(row.ensemble['members'])}"
    if row.baseline and "detector" in row.baseline:
        return f"none (trivial detector: {row.baseline['detector']}, options chosen on the non-test images)"
    if row.baseline:
        return f"none (classical baseline: {row.baseline['classifier']} on scikit-image features)"
    weights = describe_weights(options.get("weights") or options.get("patch_weights"))
    if row.pretrain:  # the encoder is pretrained per part before training: say so wherever weights are shown
        from mammo_keras.training.contrastive import Pretraining

        spec = Pretraining.from_config(row.pretrain, f"row {row.label!r}: pretrain")
        return (f"{weights}, then {spec.method} pretraining per part on "
                + (f"unlabelled `{spec.unlabelled['task']}` items" if spec.unlabelled else "its training items (labels unused)"))
    return weights


def paper_text(config: ExperimentConfig, row: ModelRow) -> dict:
    """A survey's detection rows: the printed numbers of the works the row stands for (other data)."""
    if config.kind != "detection":
        return {}
    refs = row.paper_row.get("ref")
    refs = refs if isinstance(refs, list) else [refs]
    rows = row_table(config, row).get("rows", [])
    return {"paper_text": "; ".join(f"{r['ref']}: {r['reported']}" for r in rows if r.get("ref") in refs)}
