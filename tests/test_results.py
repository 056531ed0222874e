"""results.yaml (our numbers as data) and the README tables generated from it agree."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from mammo_keras import results
from mammo_keras.config import EXPERIMENTS_DIR, list_configs

FOLDERS = sorted(p.name for p in EXPERIMENTS_DIR.iterdir() if (p / "README.md").is_file())


@pytest.mark.parametrize("paper", FOLDERS)
def test_every_readme_results_block_is_what_results_yaml_renders(paper):
    text = (EXPERIMENTS_DIR / paper / "README.md").read_text(encoding="utf-8")
    entries = results.load(paper)
    for config in results.readme_blocks(text):
        start = text.index(f"<!-- results:begin {config} ")
        end = text.index(results.end_marker(config), start) + len(results.end_marker(config))
        assert text[start:end] == results.render(entries, config), (
            f"experiments/{paper}/README.md: the {config} block differs from results.yaml; "
            "run `python -m mammo_keras.results --write-readmes`")
    configs = set(list_configs())
    for entry in entries:
        assert entry["config"] in configs, entry["config"]
        assert entry["metrics"] and entry["commit"] and entry["command"].startswith("mammo-keras reproduce ")
        if not entry["synthetic"]:
            assert len(entry["data_fingerprint"]) >= 12 and "--data" in entry["command"]
        for fields in entry["metrics"].values():
            assert fields["ci_low"] <= fields["pooled"] + 1e-9 <= fields["ci_high"] + 2e-9


def _run(tmp_path, rows, *, synthetic=False, wall=600.0):
    run = {"config": {"paper": "chougrad2018", "table": "mias_cv", "metrics": ["accuracy", "auc"]},
           "profile": "cpu", "command": "mammo-keras reproduce chougrad2018/mias_cv --profile cpu",
           "git_commit": "abc123def4567890", "data_fingerprints": {"mias": "f" * 64}, "wall_seconds": wall,
           "synthetic": synthetic, "rows": rows}
    (tmp_path / "run").mkdir(exist_ok=True)
    (tmp_path / "run" / "run.json").write_text(json.dumps(run))
    return tmp_path / "run"


ROW = {"dataset": "mias", "model": "levynet", "status": "ok", "n_items": 119, "seconds": 42.0, "collapsed": False,
       "weights": "random", "accuracy_fold_mean": 0.6, "accuracy_fold_std": 0.05, "accuracy_pooled": 0.597,
       "accuracy_ci_low": 0.504, "accuracy_ci_high": 0.681, "auc_fold_mean": 0.55, "auc_fold_std": 0.1,
       "auc_pooled": 0.552, "auc_ci_low": 0.447, "auc_ci_high": 0.658}


def test_record_writes_each_finished_row_and_replaces_a_rerun(tmp_path):
    experiments = tmp_path / "experiments"
    (experiments / "chougrad2018").mkdir(parents=True)
    skipped = {"dataset": "mias", "model": "vgg16_pretrained_2FT", "status": "skipped: set MAMMO_VGG16_WEIGHTS"}
    path = results.record(_run(tmp_path, [ROW, skipped]), experiments_dir=experiments, data="/data")
    [entry] = yaml.safe_load(path.read_text())["results"]
    assert entry["row"] == "levynet" and entry["metrics"]["auc"] == {
        "fold_mean": 0.55, "fold_std": 0.1, "pooled": 0.552, "ci_low": 0.447, "ci_high": 0.658}
    assert entry["command"] == "mammo-keras reproduce chougrad2018/mias_cv --profile cpu --data /data"
    assert (entry["minutes"], entry["run_wall_minutes"], entry["collapsed"]) == (0.7, 10.0, False)
    assert entry["data_fingerprint"] == "f" * 64
    results.record(_run(tmp_path, [{**ROW, "auc_pooled": 0.6, "collapsed": True}]), experiments_dir=experiments)
    [entry] = results.load("chougrad2018", experiments)
    assert entry["metrics"]["auc"]["pooled"] == 0.6 and entry["collapsed"] is True
    block = results.render(results.load("chougrad2018", experiments), "chougrad2018/mias_cv")
    assert "| levynet | 59.7 [50.4, 68.1] | 0.600 [0.447, 0.658] | **yes** | 0.7 |" in block
    with pytest.raises(ValueError, match="no row of this run finished"):
        results.record(_run(tmp_path, [skipped]), experiments_dir=experiments)


def test_a_reused_row_keeps_the_commit_and_wall_time_of_the_run_that_trained_it(tmp_path):
    """A rerun that adds a row beside finished ones reuses their parts: their numbers are the earlier
    run's, and so are their commit and wall time; a row that measured anything else is the new run's."""
    experiments = tmp_path / "experiments"
    (experiments / "chougrad2018").mkdir(parents=True)
    results.record(_run(tmp_path, [ROW]), experiments_dir=experiments, data="/data")
    added = {**ROW, "model": "vgg16_random_unit_scale", "auc_pooled": 0.477}
    later = json.loads((_run(tmp_path, [ROW, added], wall=60.0) / "run.json").read_text())
    later["git_commit"] = "fedcba9876543210"
    (tmp_path / "run" / "run.json").write_text(json.dumps(later))
    results.record(tmp_path / "run", experiments_dir=experiments, data="/data")
    entries = {e["row"]: e for e in results.load("chougrad2018", experiments)}
    assert (entries["levynet"]["commit"], entries["levynet"]["run_wall_minutes"]) == ("abc123def4567890", 10.0)
    assert (entries["vgg16_random_unit_scale"]["commit"], entries["vgg16_random_unit_scale"]["run_wall_minutes"]) == (
        "fedcba9876543210", 1.0)
    retrained = json.loads(json.dumps(later))
    retrained["rows"][0]["seconds"] = 50.0  # a reused row's recorded minutes stay the training run's
    (tmp_path / "run" / "run.json").write_text(json.dumps(retrained))
    results.record(tmp_path / "run", experiments_dir=experiments, data="/data")
    assert {e["row"]: e for e in results.load("chougrad2018", experiments)}["levynet"]["minutes"] == 0.7
    retrained["rows"][0]["auc_pooled"] = 0.56  # trained again: other numbers
    (tmp_path / "run" / "run.json").write_text(json.dumps(retrained))
    results.record(tmp_path / "run", experiments_dir=experiments, data="/data")
    assert {e["row"]: e for e in results.load("chougrad2018", experiments)}["levynet"]["commit"] == "fedcba9876543210"


def test_write_readmes_replaces_only_the_block(tmp_path):
    experiments = tmp_path / "experiments"
    (experiments / "chougrad2018").mkdir(parents=True)
    results.record(_run(tmp_path, [ROW]), experiments_dir=experiments)
    readme = experiments / "chougrad2018" / "README.md"
    readme.write_text(f"intro\n\n{results.begin_marker('chougrad2018/mias_cv')}\nstale\n"
                      f"{results.end_marker('chougrad2018/mias_cv')}\n\noutro\n")
    assert results.update_readme("chougrad2018", experiments) is True
    text = readme.read_text()
    assert text.startswith("intro\n\n") and text.endswith("\n\noutro\n") and "stale" not in text
    assert "| levynet |" in text and results.update_readme("chougrad2018", experiments) is False


def test_an_entry_records_the_libraries_and_cpu_its_run_ran_on(tmp_path):
    """Two runs of one config on two machines can train different networks: the entry says where it ran."""
    from mammo_keras.runner.report import machine

    experiments = tmp_path / "experiments"
    (experiments / "chougrad2018").mkdir(parents=True)
    folder = _run(tmp_path, [ROW])
    run = json.loads((folder / "run.json").read_text())
    run.update(versions={"tensorflow": "2.21.0", "keras": "3.15.1", "numpy": "2.4.6", "python": "3.11.7"},
               machine={"platform": "Linux", "cpu": "AMD EPYC", "cpus": 2})
    (folder / "run.json").write_text(json.dumps(run))
    [entry] = yaml.safe_load(results.record(folder, experiments_dir=experiments).read_text())["results"]
    assert entry["environment"] == {"tensorflow": "2.21.0", "keras": "3.15.1", "numpy": "2.4.6",
                                    "cpu": "AMD EPYC", "cpus": 2}
    here = machine()
    assert here["cpus"] >= 1 and isinstance(here["cpu"], str) and here["cpu"]


def test_a_detection_run_records_its_test_set_metrics_with_their_cis(tmp_path):
    """Detection rows carry one test-set value per metric (no folds): AP and the FROC points."""
    experiments = tmp_path / "experiments"
    (experiments / "hamed2020").mkdir(parents=True)
    row = {"dataset": "mias", "model": "baseline_blobs", "status": "ok", "n_items": 14, "seconds": 8.0,
           "weights": "none (trivial detector)", "ap": 0.0104, "ap_ci_low": 0.0, "ap_ci_high": 0.0672,
           "sens_at_0.5fpi": 0.0, "sens_at_0.5fpi_ci_low": 0.0, "sens_at_0.5fpi_ci_high": 0.0,
           "sens_at_1fpi": 0.0, "sens_at_1fpi_ci_low": 0.0, "sens_at_1fpi_ci_high": 0.1823,
           "sens_at_2fpi": 0.0833, "sens_at_2fpi_ci_low": 0.0, "sens_at_2fpi_ci_high": 0.3636,
           "sensitivity_all": 0.1667, "sensitivity_all_ci_low": 0.0, "sensitivity_all_ci_high": 0.4167,
           "mean_iou_tp": 0.586}
    run = {"config": {"paper": "hamed2020", "table": "table3", "kind": "detection", "metrics": ["accuracy", "auc"]},
           "profile": "cpu", "command": "mammo-keras reproduce hamed2020/table3 --profile cpu",
           "git_commit": "abc123def4567890", "data_fingerprints": {"mias": "e" * 64}, "wall_seconds": 60.0,
           "synthetic": False, "rows": [row]}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps(run))
    [entry] = yaml.safe_load(results.record(tmp_path / "run", experiments_dir=experiments).read_text())["results"]
    assert list(entry["metrics"]) == ["ap", "sens_at_0.5fpi", "sens_at_1fpi", "sens_at_2fpi", "sensitivity_all"]
    assert entry["metrics"]["ap"] == {"pooled": 0.0104, "ci_low": 0.0, "ci_high": 0.0672}
    block = results.render(results.load("hamed2020", experiments), "hamed2020/table3")
    assert "| row | ap test set [95% CI] | sens_at_0.5fpi test set [95% CI]" in block
    assert "| baseline_blobs | 0.010 [0.000, 0.067] | 0.000 [0.000, 0.000] | 0.000 [0.000, 0.182] |" in block


QUOTED = re.compile(r"(?<![\d.])(\d+\.\d+)%? \[(\d+\.\d+), (\d+\.\d+)\]")  # "0.799 [0.779, 0.817]", "33.9% [32.1, 35.8]"
EARLIER_RUN = re.compile(r"commit [0-9a-f]{7,40}")


def _recorded_figures() -> set[tuple[str, str, str]]:
    """Every recorded metric's (value, CI low, CI high) as a README can print it: 3 decimals, or a
    percentage with 1 (both for every metric, as an AUC prints as 0.xxx and an accuracy as xx.x)."""
    figures = set()
    for paper in FOLDERS:
        for entry in results.load(paper):
            for fields in entry["metrics"].values():
                if fields.get("ci_low") is None:
                    continue
                triple = (fields["pooled"], fields["ci_low"], fields["ci_high"])
                figures.add(tuple(f"{value:.3f}" for value in triple))
                figures.add(tuple(f"{100 * value:.1f}" for value in triple))
    return figures


def test_every_figure_with_a_ci_in_a_readmes_prose_is_a_recorded_result():
    """A README sentence quoting a result (value [CI]) outside the generated blocks quotes one of the
    results.yaml entries, unless it names the earlier run it comes from (`commit abc1234`, within
    the 250 characters before it). Checked: the top README and every experiments README with a
    results.yaml (all of them now: the phantom tables of shen2017 and coccomini2021 included)."""
    recorded = _recorded_figures()
    readmes = [EXPERIMENTS_DIR.parent / "README.md"] + [
        EXPERIMENTS_DIR / paper / "README.md" for paper in FOLDERS if (EXPERIMENTS_DIR / paper / "results.yaml").is_file()]
    unrecorded = []
    for readme in readmes:
        text = re.sub(r"<!-- results:begin .*?<!-- results:end [^>]*-->", "", readme.read_text(encoding="utf-8"),
                      flags=re.S)
        for quoted in QUOTED.finditer(text):
            if quoted.groups() in recorded or EARLIER_RUN.search(text[max(0, quoted.start() - 250):quoted.start()]):
                continue
            unrecorded.append(f"{readme.relative_to(EXPERIMENTS_DIR.parent)}: {quoted.group(0)!r}")
    assert len(readmes) >= 4
    assert not unrecorded, "figures quoted in prose that no results.yaml entry has:\n" + "\n".join(unrecorded)


def test_the_prose_check_catches_a_figure_that_is_not_recorded():
    recorded = _recorded_figures()
    assert ("0.799", "0.779", "0.817") in recorded  # task (a)'s precise-BN CNN, as the top README quotes it
    assert QUOTED.search("AUC 0.801 [0.779, 0.817]").groups() not in recorded
    assert QUOTED.search("33.9% [32.1, 35.8] accuracy").groups() in recorded


def test_a_block_shows_the_papers_number_beside_the_row_that_reproduces_it():
    entry = {"config": "jain_levy/table2", "row": "levynet", "profile": "cpu", "dataset": "cbis_ddsm",
             "synthetic": False, "n_items": 100, "data_fingerprint": "f" * 64, "weights": "random",
             "metrics": {"accuracy": {"fold_mean": 0.6, "fold_std": 0.1, "pooled": 0.61, "ci_low": 0.5,
                                      "ci_high": 0.7}},
             "collapsed": False, "minutes": 1.0, "commit": "abc", "run_wall_minutes": 2.0, "command": "mammo-keras reproduce x"}
    on_its_data = results.render([entry], "jain_levy/table2")
    assert "| row | paper: accuracy % | accuracy % pooled [95% CI] |" in on_its_data
    assert "| levynet | 60.4 | 61.0 [50.0, 70.0] |" in on_its_data  # Jain & Levy's test accuracy, 60.4%
    elsewhere = results.render([{**entry, "dataset": "mias"}], "jain_levy/table2")
    assert "| levynet | 60.4 (on ddsm) | 61.0 [50.0, 70.0] |" in elsewhere  # the paper had no mini-MIAS
    no_paper = results.render([{**entry, "config": "mias_tasks/patches_2class", "row": "scratch_cnn"}],
                              "mias_tasks/patches_2class")
    assert "paper:" not in no_paper and "| scratch_cnn | 61.0 [50.0, 70.0] |" in no_paper
