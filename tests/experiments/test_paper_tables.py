"""experiments/<paper>/paper_tables.yaml: well-formed, cited, and the numbers the runner compares against."""
from __future__ import annotations

import re

import pytest
import yaml
from conftest import REPO

from mammo_keras import protocol
from mammo_keras.config import EXPERIMENTS_DIR, list_configs, load_config
from mammo_keras.runner.paper import reported_table, reported_value
from mammo_keras.runner.report import format_metric

# The papers' text lies beside the repository (../shared/papers), in a checkout as in CI.
PAPERS_TEXT = REPO.parent / "shared" / "papers"
needs_papers_text = pytest.mark.skipif(
    not PAPERS_TEXT.is_dir(), reason=f"the papers' text folder {PAPERS_TEXT} (../shared/papers) is absent")
PAPERS = sorted(p.parent.name for p in EXPERIMENTS_DIR.glob("*/paper_tables.yaml"))


def _tables(paper: str) -> dict:
    return yaml.safe_load((EXPERIMENTS_DIR / paper / "paper_tables.yaml").read_text())


def test_every_paper_has_its_tables():
    assert PAPERS == ["chougrad2018", "coccomini2021", "hamed2020", "jain_levy", "shen2017"]


def test_every_other_folder_says_it_has_no_paper():
    """A folder of configs is a paper's (paper_tables.yaml) or declares `no_paper` in its protocol.yaml, with
    no published table: never both, never neither."""
    folders = {name.split("/")[0] for name in list_configs()}
    own = {folder for folder in folders if protocol.no_paper(folder)}
    assert own == {"mias_tasks"} and not own & set(PAPERS) and own | set(PAPERS) == folders
    for name in (n for n in list_configs() if n.split("/")[0] in own):
        assert not load_config(name, "paper").reported_table, name


@pytest.mark.parametrize("paper", PAPERS)
def test_tables_are_cited_and_every_value_has_a_unit(paper):
    data = _tables(paper)
    assert data["paper"]["key"] == paper and len(data["paper"]["citation"]) > 40
    for name, table in data["tables"].items():
        assert table["title"] and table["source"], name
        assert table["rows"], name
        units = table["units"]
        for row in table["rows"]:
            assert "model" in row, (name, row)
            for metric in table["metrics"]:
                assert metric in units, (name, metric)
            for key, value in row.items():
                if key.endswith("_std"):
                    assert key[:-4] in units, (name, key)
                elif key in units and value is not None:
                    assert isinstance(value, (int, float)), (name, key, value)
                    if units[key] == "fraction":
                        assert 0.0 <= value <= 1.0, (name, key, value)
                    if units[key] == "percent":
                        assert 0.0 <= value <= 100.0, (name, key, value)


@pytest.mark.parametrize("experiment", list_configs())
def test_configs_name_existing_tables_and_find_the_papers_numbers(experiment):
    config = load_config(experiment, "paper")
    if protocol.no_paper(config.paper):  # tasks of our own: no published numbers (the test above)
        assert reported_table(config) == {}
        return
    table = reported_table(config)
    assert table, f"{experiment}: reported_table {config.reported_table!r} not in paper_tables.yaml"
    for row in config.models:  # a row may look in another table of the paper
        if "table" in row.paper_row:
            assert reported_table(config, name=row.paper_row["table"]), (experiment, row.label)
    found = [reported_value(reported_table(config, name=row.paper_row.get("table")), config, row, dataset)[0]
             for dataset in config.datasets for row in config.models]
    if config.table == "table2":  # every paper's Table 2 is compared row by row
        assert any(value is not None for value in found), f"{experiment}: no model/dataset matches the paper's rows"
    assert all(value is None or 0.0 <= value <= 1.0 for value in found)


def test_published_values_are_normalised_to_fractions():
    config = load_config("chougrad2018/table2", "paper")
    table = reported_table(config)
    value, std = reported_value(table, config, "inceptionv3", "merged")
    assert value == pytest.approx(0.9894) and std == pytest.approx(0.0022)
    assert format_metric("accuracy", value) == "98.9" and format_metric("auc", 0.9123) == "0.912"
    assert reported_value(table, config, "inceptionv3", "mias") == (None, None)


def test_the_mias_test_number_is_that_of_the_model_trained_on_the_merged_set_only():
    """Chougrad's 98.23% on MIAS is Inceptionv3-MD's: a model trained on one dataset is not compared with it."""
    config = load_config("chougrad2018/mias_test", "paper")
    table = reported_table(config)
    assert reported_value(table, config, "inceptionv3", "mias", trained_on="merged")[0] == pytest.approx(0.9823)
    for single in ("cbis_ddsm", "bcdr", "inbreast"):
        assert reported_value(table, config, "inceptionv3", "mias", trained_on=single) == (None, None)


def _paper_text(paper: str) -> str:
    """The text file named in the header of experiments/<paper>/paper_tables.yaml (it must exist)."""
    header = (EXPERIMENTS_DIR / paper / "paper_tables.yaml").read_text()
    named = re.search(r"\.\./shared/papers/(\S+?\.txt)", header)
    assert named, f"{paper}/paper_tables.yaml does not name its text in ../shared/papers"
    path = PAPERS_TEXT / named.group(1)
    assert path.is_file(), f"{paper}/paper_tables.yaml names {path}, which is not there"
    return path.read_text(errors="replace")


@needs_papers_text
@pytest.mark.parametrize("paper", PAPERS)
def test_every_number_and_quote_appears_in_the_papers_text(paper):
    """Each number of every table row is a number printed in the paper; a `reported` quote is its text."""
    text = _paper_text(paper)
    printed = {float(number) for number in re.findall(r"\d+(?:\.\d+)?", text)}
    flat = " ".join(text.replace("\u2013", "-").replace("\u2014", "-").split())  # dashes as "-", one space
    checked = 0
    for name, table in _tables(paper)["tables"].items():
        for row in table["rows"]:
            for key, value in row.items():
                numeric = key in table["units"] or (key.endswith("_std") and key[:-4] in table["units"])
                if numeric and value is not None:
                    assert value in printed, (paper, name, row["model"], key, value)
                    checked += 1
            if "reported" in row:
                assert " ".join(row["reported"].split()) in flat, (paper, name, row["reported"])
    assert checked >= 5


@needs_papers_text
def test_chougrad_table2_is_the_papers_table_2_row_by_row():
    """The paper's Table 2 lines (dataset carried down, "97.12%", "$\\pm 0.30$", minutes) are our rows."""
    text = _paper_text("chougrad2018")
    header, *lines = text[text.index("**Table 2 "):].split("\n\n")[1].splitlines()
    assert header.split("\t")[3:] == ["Accuracy (%)", "Std (%)", "Time elapsed (Min)"]
    printed, dataset = {}, None
    for line in lines:
        cells = [cell.strip() for cell in line.split("\t")]
        dataset = cells[0].lower() or dataset
        accuracy = float(re.sub(r"[^0-9.]", "", cells[3]))
        std = float(re.search(r"\d+\.\d+", cells[4]).group())
        printed[(dataset, cells[2].lower())] = (accuracy, std, float(cells[5]))
    ours = {(row["dataset"], row["model"]): (row["accuracy"], row["accuracy_std"], row["training_minutes"])
            for row in _tables("chougrad2018")["tables"]["table2"]["rows"]}
    assert len(printed) == 12 and ours == printed


@pytest.mark.parametrize("paper", PAPERS)
def test_every_paper_row_names_the_config_rows_that_reproduce_it(paper):
    """`reproduced_by: [config:row@dataset]` is what the configs really match, row by row; a table
    with rows no config reproduces says why (`not_reproduced`)."""
    from mammo_keras.runner.paper import reproductions

    found = reproductions(paper)
    for name, table in _tables(paper)["tables"].items():
        for number, row in enumerate(table["rows"]):
            computed = sorted(f"{e['config']}:{e['row']}@{e['dataset']}" for e in found.get((name, number), []))
            assert sorted(row["reproduced_by"]) == computed, (name, number, row.get("model"))
            if not computed:
                assert table.get("not_reproduced"), f"{paper} {name}: rows nothing reproduces need `not_reproduced`"
