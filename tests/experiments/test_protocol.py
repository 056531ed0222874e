"""Every config's plan compiles at every profile, and each paper's paper-profile plans keep the facts
its protocol.yaml states (a decision naming `profiles` is held against those profiles' plans) (an undeclared difference fails, naming the fact, the paper's value and the
plan's). Adding a fact to a protocol.yaml makes it checked here with no new test code."""
from __future__ import annotations

import pytest

from mammo_keras import protocol
from mammo_keras.config import EXPERIMENTS_DIR, PROFILES, list_configs, load_config
from mammo_keras.plan import compile_plan

PAPERS = sorted({name.split("/")[0] for name in list_configs()})


def test_every_paper_states_its_protocol():
    for paper in PAPERS:
        loaded = protocol.load(paper)
        assert loaded.get("facts"), f"experiments/{paper}/protocol.yaml states no facts"
        assert all(f["cite"] for f in loaded["facts"])


@pytest.mark.parametrize("paper", PAPERS)
def test_plans_compile_at_every_profile_and_the_paper_profile_conforms(paper):
    cache: dict = {}  # models shared by the configs and profiles of one paper are built once
    plans = {}
    for profile in PROFILES:
        for name in (n for n in list_configs() if n.startswith(paper + "/")):
            plan = compile_plan(load_config(name, profile), cache)
            assert plan["rows"] and plan["profile"] == profile
            for row in plan["rows"]:  # every row that trains has stages that run
                if "stages" in row:
                    assert any(stage["runs"] for stage in row["stages"]), (name, profile, row["label"])
            plans[name, profile] = plan
    problems = protocol.conformance(list(plans.values()), protocol.load(paper))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("paper", PAPERS)
def test_readme_protocol_sections_are_generated_from_protocol_yaml(paper):
    """The README states the protocol only through the block generated from protocol.yaml, whose facts
    the test above holds against the plans."""
    text = (EXPERIMENTS_DIR / paper / "README.md").read_text()
    assert protocol.readme_block(paper) in text, \
        f"experiments/{paper}/README.md is stale: run `python -m mammo_keras.protocol --write-readmes`"


def test_a_row_that_cannot_be_built_at_a_profile_is_refused_at_once_naming_it():
    """Before: the bare Keras message ("Input size must be at least 75x75 ..."), naming no config or row."""
    import dataclasses

    config = load_config("chougrad2018/mias_cv", "tiny", overrides={"input_size": 64})
    config = dataclasses.replace(config, models=tuple(m for m in config.models if m.label == "inceptionv3_random"))
    with pytest.raises(ValueError, match=r"mias_cv\.yaml: row 'inceptionv3_random' \(chougrad_inceptionv3\) cannot "
                                         r"be built at the tiny profile with input_size \[64, 64\]: .*at least 75x75"):
        compile_plan(config)
