"""The protocol checker on hand-made plans: what it reports, and that it reports it."""
from __future__ import annotations

import pytest

from mammo_keras.protocol import ProtocolError, conformance, resolve, same

PLAN = {"config": "paper/table9", "profile": "paper", "split": {"kind": "cv", "n_splits": 5}, "evaluation": {},
        "rows": [{"label": "a", "model": "m1",
                  "stages": [{"name": "head", "runs": True, "epochs": 30,
                              "layers": [{"name": "block1_conv1", "trainable": False, "lr": None},
                                         {"name": "block5_conv1", "trainable": True},
                                         {"name": "predictions", "trainable": True}]}]},
                 {"label": "b", "model": "m2", "stages": [{"name": "head", "runs": True, "epochs": 10,
                                                           "layers": []}]},
                 {"label": "avg", "model": "ensemble", "ensemble": {"method": "average"}}]}


def fact(fid, expect, **scope):
    return {"id": fid, "cite": "§1", "text": f"text of {fid}", "expect": expect, **scope}


def test_paths_select_by_name_and_by_pattern():
    row = PLAN["rows"][0]
    assert resolve(row, "stages[head].epochs") == [30]
    assert resolve(row, "stages[head].layers[re:^block[15]_].trainable") == [False, True]
    with pytest.raises(ProtocolError, match="no element 'tail'"):
        resolve(row, "stages[tail].epochs")
    with pytest.raises(ProtocolError, match="no element 're:\\^nothing'"):
        resolve(row, "stages[head].layers[re:^nothing].trainable")


def test_an_undeclared_difference_names_the_fact_and_both_values():
    problems = conformance([PLAN], {"facts": [fact("head_epochs", {"stages[head].epochs": 30})]})
    assert problems == ["undeclared deviation: paper/table9 row 'b': fact 'head_epochs' (text of head_epochs) "
                        "at `stages[head].epochs`: the paper says 30, the plan has 10"]


def test_a_declared_deviation_passes_and_a_stale_one_fails():
    facts = [fact("head_epochs", {"stages[head].epochs": 30})]
    assert conformance([PLAN], {"facts": facts, "deviations": [{"fact": "head_epochs", "reason": "r"}]}) == []
    scoped = [fact("head_epochs", {"stages[head].epochs": 30}, rows=["a"])]
    problems = conformance([PLAN], {"facts": scoped, "deviations": [{"fact": "head_epochs", "reason": "r"}]})
    assert problems and problems[0].startswith("stale deviation: fact 'head_epochs'")


def test_scopes_where_and_facts_that_apply_to_nothing():
    facts = [fact("m2_epochs", {"stages[head].epochs": 10}, where={"model": "m2"}),
             fact("split", {"split.n_splits": 5}),
             fact("elsewhere", {"stages[head].epochs": 1}, configs=["table1"])]
    problems = conformance([PLAN], {"facts": facts})
    assert problems == ["fact 'elsewhere' applies to no row of any config (configs ['table1'], rows None)"]


def test_ensemble_rows_only_for_facts_that_name_them():
    facts = [fact("avg", {"ensemble.method": "stack"}, rows=["avg"])]
    assert "the paper says 'stack', the plan has 'average'" in conformance([PLAN], {"facts": facts})[0]


def test_comparisons():
    assert same(1e-4, 0.0001) and not same(1e-4, 1e-3)
    assert same([0.5, 1.5], (0.5, 1.5)) and not same([1], [1, 2])
    assert same({"approx": [0.05, 0.05], "rel": 0.05}, [0.049, 0.051]) and not same({"approx": 0.05, "rel": 0.01}, 0.06)
    assert same({"startswith": "IoU >= 0.5"}, "IoU >= 0.5, greedy") and not same(True, 1.0)
    assert same({"kernel": 0.1}, {"kernel": 0.1, "bias": 0.2}) and not same({"kernel": 0.1}, {"bias": 0.1})
    pretrained = {"not": {"startswith": "random"}}
    assert same(pretrained, "/weights/bvlc_googlenet.h5") and not same(pretrained, "random (the builder's default)")
    reported = {"includes": ["ap", "sens_at_1fpi"]}
    assert same(reported, ["sens_at_1fpi", "mean_iou_tp", "ap"]) and not same(reported, ["ap"])
    assert not same(reported, "ap, sens_at_1fpi")
    only_gaussian = {"keys": ["RandomNormal"]}  # which initialisers, whatever their layer counts
    assert same(only_gaussian, {"RandomNormal": 16}) and not same(only_gaussian, {"RandomNormal": 15, "GlorotUniform": 1})
    assert not same(only_gaussian, {}) and not same(only_gaussian, ["RandomNormal"])


def test_a_decision_naming_profiles_is_held_against_those_plans_only():
    """A cpu-profile choice (precise BatchNorm at 6 steps an epoch) is checked on the cpu plan; the
    paper-profile facts ignore it, and it ignores the paper plan."""
    cpu = {**PLAN, "profile": "cpu", "rows": [{**PLAN["rows"][1], "stages": [{"name": "head", "runs": True,
                                                                            "epochs": 3, "layers": []}]}]}
    decision = {"id": "short", "text": "t", "profiles": ["cpu"], "expect": {"stages[head].epochs": 3}}
    assert conformance([PLAN, cpu], {"decisions": [decision]}) == []
    wrong = {**decision, "expect": {"stages[head].epochs": 10}}  # the paper plan's value: not seen here
    assert conformance([PLAN, cpu], {"decisions": [wrong]})[0].startswith(
        "undeclared deviation: paper/table9 row 'b': fact 'short'")
    assert conformance([PLAN], {"decisions": [decision]}) == [
        "fact 'short' applies to no row of any config (configs None, rows None)"]
    facts = [fact("head_epochs", {"stages[head].epochs": 10}, rows=["b"])]  # paper plans only
    assert conformance([PLAN, cpu], {"facts": facts}) == []


def test_profiles_are_refused_on_facts_and_checked_on_decisions(tmp_path):
    from mammo_keras.protocol import load

    folder = tmp_path / "p"
    folder.mkdir()
    for n, body, message in [
            (1, "facts: [{id: a, cite: x, text: t, expect: {k: 1}, profiles: [cpu]}]", "facts \\['a'\\] name `profiles`"),
            (2, "facts: []\ndecisions: [{id: d, text: t, profiles: [gpu]}]", "decision 'd': `profiles` must be")]:
        (folder / "protocol.yaml").write_text(body + f"\n# {n}\n")
        with pytest.raises(ProtocolError, match=message):
            load("p", tmp_path)


def test_a_plan_prints_only_the_decisions_and_deviations_that_hold_for_its_rows(tmp_path):
    """A decision naming another config, other rows or another profile is not this plan's protocol
    (the 5-class plan listed the VGG16 rows' decisions); one naming none holds everywhere."""
    from mammo_keras.plan import render_markdown
    from mammo_keras.protocol import declared

    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "protocol.yaml").write_text("""
facts:
  - {id: epochs_a, cite: x, text: "row a's epochs", rows: [a], expect: {"stages[head].epochs": 90}}
  - {id: other_table, cite: x, text: "table 8's", configs: [table8], expect: {kind: cv}}
deviations:
  - {fact: epochs_a, reason: "a trains 30"}
  - {fact: other_table, reason: "not here"}
decisions:
  - {id: everywhere, text: "held by every plan"}
  - {id: rows_b, text: "row b's", rows: [b]}
  - {id: rows_z, text: "a row this plan lacks", rows: [z]}
  - {id: pattern, text: "rows matching", rows: "re:^a$"}
  - {id: table8, text: "table 8's", configs: [table8]}
  - {id: table9, text: "table 9's", configs: [table9]}
  - {id: cpu_only, text: "cpu's", profiles: [cpu]}
""")
    shown = declared("paper", PLAN, tmp_path)
    assert [d["id"] for d in shown["decisions"]] == ["everywhere", "rows_b", "pattern", "table9"]
    assert [d["fact"] for d in shown["deviations"]] == ["epochs_a"]
    cpu = declared("paper", {**PLAN, "profile": "cpu"}, tmp_path)
    assert [d["id"] for d in cpu["decisions"]][-1] == "cpu_only"
    assert len(declared("paper", None, tmp_path)["decisions"]) == 7  # no plan: the paper's whole list
    text = render_markdown({**PLAN, "title": "t", "kind": "cv", "source": "s", "datasets": [], "epoch_scale": 1,
                            "deterministic": True, "rows": [], "protocol": shown})
    assert "`rows_b`" in text and "`rows_z`" not in text and "`table8`" not in text
