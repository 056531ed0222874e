"""A paper's stated protocol as data (experiments/<paper>/protocol.yaml), checked against plans.

    facts:        what the paper states, each with its cite, as expected plan values
    decisions:    what the paper leaves open or ambiguous and what the package does instead
                  (with `expect`, checked like facts, so the text stays true); a decision with
                  `profiles: [cpu]` is one of a reduced profile, checked against that profile's plans
    deviations:   facts the package does differently, each with its reason; printed under every
                  results table of the paper
    no_paper:     (a folder of tasks of our own, not a paper's) why it has no published numbers;
                  its facts are then the tasks' own definitions, checked the same way

A fact:

    - id: shen_whole_stage1_trains_top
      cite: "§3.1.2, whole image step 1"
      text: "train the newly added top layers (30 epochs, lr 1e-4, weight decay 0.001)"
      configs: [table2, table3]          # default: every config of the paper
      rows: [resnet_resnet]              # labels or "re:<pattern>"; default: every model row
      where: {model: shen_whole_resnet50}  # and only rows whose plan has these values
      expect:
        "stages[top].epochs": 30
        "stages[top].layers[re:^top].trainable": true

Paths walk the plan (`mammo_keras.plan`): `a.b` is a key, `name[key]` picks the list element
whose name / step / label is `key`, `name[re:<pattern>]` every element whose name matches (at
least one must, and each must hold the value). Adding a fact to protocol.yaml makes it checked by
tests/experiments/test_protocol.py with no new test code.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from pathlib import Path

import yaml

from mammo_keras.config import EXPERIMENTS_DIR, PROFILES

PROTOCOL_FILE = "protocol.yaml"
CHECKED_PROFILES = ("paper",)
"""The profile facts and decisions are held against unless a decision names its `profiles`."""
_LIST_KEYS = ("name", "step", "label")


class ProtocolError(ValueError):
    """protocol.yaml is malformed, or names a config, row or path that does not exist."""


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """One fact (or checked decision) whose value differs from the plan's."""

    fact: str
    config: str
    row: str
    path: str
    expected: object
    found: object
    text: str = ""

    def __str__(self) -> str:
        return (f"{self.config} row {self.row!r}: fact {self.fact!r} ({self.text}) at `{self.path}`: "
                f"the paper says {self.expected!r}, the plan has {self.found!r}")


@functools.cache
def load(paper: str, experiments_dir: Path = EXPERIMENTS_DIR) -> dict:
    """experiments/<paper>/protocol.yaml ({} when the paper has none), validated."""
    path = Path(experiments_dir) / paper / PROTOCOL_FILE
    if not path.is_file():
        return {}
    raw = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(raw) - {"paper", "citation", "facts", "decisions", "deviations", "no_paper"})
    if unknown:
        raise ProtocolError(f"{path}: unknown sections {unknown}")
    ids = [item.get("id") for item in (raw.get("facts") or []) + (raw.get("decisions") or [])]
    if len(set(ids)) != len(ids) or None in ids:
        raise ProtocolError(f"{path}: every fact and decision needs a unique `id`. Received: {ids}")
    for item in raw.get("facts") or []:
        missing = [key for key in ("id", "cite", "text", "expect") if key not in item]
        if missing:
            raise ProtocolError(f"{path}: fact {item.get('id')!r} lacks {missing}")
    for item in raw.get("decisions") or []:
        missing = [key for key in ("id", "text") if key not in item]
        if missing:
            raise ProtocolError(f"{path}: decision {item.get('id')!r} lacks {missing}")
        profiles = item.get("profiles", list(CHECKED_PROFILES))
        if not (isinstance(profiles, list) and profiles and set(profiles) <= set(PROFILES)):
            raise ProtocolError(f"{path}: decision {item['id']!r}: `profiles` must be a non-empty list of "
                                f"{list(PROFILES)}. Received: {profiles!r}")
    stray = [item["id"] for item in raw.get("facts") or [] if "profiles" in item]
    if stray:
        raise ProtocolError(f"{path}: facts {stray} name `profiles`; a paper's facts hold at the paper profile "
                            "(a choice of a reduced profile is a decision)")
    facts = {item["id"] for item in raw.get("facts") or []}
    for item in raw.get("deviations") or []:
        if item.get("fact") not in facts or not item.get("reason"):
            raise ProtocolError(f"{path}: a deviation names a fact of this file and gives a reason. "
                                f"Received: {item!r}")
    return {**raw, "source": str(path)}


def no_paper(folder: str) -> str:
    """Why experiments/<folder> has no published numbers (its protocol.yaml's `no_paper`), or "" for a paper."""
    return " ".join(str(load(folder).get("no_paper") or "").split())


def declared(paper: str, plan: dict | None = None, experiments_dir: Path = EXPERIMENTS_DIR) -> dict:
    """The deviations and decisions a paper's plans and tables print (with the facts' texts).

    With `plan` (a compiled plan of one config), only those that hold for one of its rows: a
    decision or deviated fact naming other configs, rows or profiles is not this plan's protocol.
    """
    protocol = load(paper, experiments_dir)
    texts = {item["id"]: item for item in protocol.get("facts") or []}

    table = plan["config"].split("/", 1)[-1] if plan is not None else None
    views = [row_view(plan, row) for row in plan.get("rows", [])] if plan is not None else []

    def shown(item: dict) -> bool:
        return plan is None or any(_applies(item, table, view, default_profiles=None) for view in views)

    return {
        "source": protocol.get("source"),
        "facts": len(protocol.get("facts") or []),
        "deviations": [{"fact": d["fact"], "stated": texts[d["fact"]]["text"], "cite": texts[d["fact"]]["cite"],
                        "reason": d["reason"]} for d in protocol.get("deviations") or [] if shown(texts[d["fact"]])],
        "decisions": [{"id": d["id"], "text": _decision_text(d)} for d in protocol.get("decisions") or [] if shown(d)],
    }


def _tokens(path: str) -> list[tuple[str, str | None]]:
    """'a.b[key].c' -> [(a, None), (b, key), (c, None)]; a key may hold brackets (regex classes)."""
    tokens, position = [], 0
    while position < len(path):
        end = position
        while end < len(path) and path[end] not in ".[":
            end += 1
        name, key = path[position:end], None
        if not name:
            raise ProtocolError(f"cannot parse plan path {path!r} at {path[position:]!r}")
        if end < len(path) and path[end] == "[":
            depth, close = 0, end
            while close < len(path):
                depth += {"[": 1, "]": -1}.get(path[close], 0)
                if depth == 0:
                    break
                close += 1
            if depth:
                raise ProtocolError(f"unbalanced brackets in plan path {path!r}")
            key, end = path[end + 1:close], close + 1
        tokens.append((name, key))
        if end < len(path) and path[end] != ".":
            raise ProtocolError(f"cannot parse plan path {path!r} at {path[end:]!r}")
        position = end + 1
    return tokens


def resolve(node, path: str) -> list:
    """The values at `path` in a plan node (one, or several for a `[re:...]` selector)."""
    values = [node]
    for name, key in _tokens(path):
        found = []
        for value in values:
            if not isinstance(value, dict) or name not in value:
                raise ProtocolError(f"plan path {path!r}: no key {name!r} (keys: "
                                    f"{sorted(value) if isinstance(value, dict) else type(value).__name__})")
            item = value[name]
            if key is None:
                found.append(item)
                continue
            if not isinstance(item, list):
                raise ProtocolError(f"plan path {path!r}: {name!r} is not a list")
            if key.startswith("re:"):
                regex = re.compile(key[3:])
                chosen = [e for e in item if any(regex.search(str(e.get(k, ""))) for k in _LIST_KEYS)]
            else:
                chosen = [e for e in item if any(str(e.get(k)) == key for k in _LIST_KEYS if k in e)]
            if not chosen:
                names = [next((e.get(k) for k in _LIST_KEYS if k in e), None) for e in item]
                raise ProtocolError(f"plan path {path!r}: no element {key!r} in {name!r} (elements: {names[:40]})")
            found += chosen if key.startswith("re:") else chosen[:1]
        values = found
    return values


def same(expected, found) -> bool:
    """Equality with a relative tolerance for numbers (1e-9), element-wise for lists and dicts.

    `{approx: value, rel: r}` compares numbers (or lists of them) within relative tolerance r;
    `{startswith: text}` a string's beginning; `{includes: [a, b]}` a list holding each of them (in
    any order, others allowed); `{keys: [a, b]}` a dict with exactly these keys, any values (the
    initialisers a network's kernels were drawn by, whatever their counts); `{not: expected}`
    anything `expected` does not match (a pretrained start: `{not: {startswith: random}}`).
    """
    if isinstance(expected, dict) and set(expected) == {"includes"}:
        return isinstance(found, (list, tuple)) and all(any(same(e, f) for f in found)
                                                        for e in expected["includes"])
    if isinstance(expected, dict) and set(expected) == {"keys"}:
        return isinstance(found, dict) and sorted(map(str, found)) == sorted(map(str, expected["keys"]))
    if isinstance(expected, dict) and set(expected) == {"not"}:
        return not same(expected["not"], found)
    if isinstance(expected, dict) and set(expected) == {"startswith"}:
        return isinstance(found, str) and found.startswith(str(expected["startswith"]))
    if isinstance(expected, dict) and set(expected) == {"approx", "rel"}:
        target = expected["approx"]
        if isinstance(target, (list, tuple)):
            return (isinstance(found, (list, tuple)) and len(found) == len(target)
                    and all(same({"approx": t, "rel": expected["rel"]}, f) for t, f in zip(target, found)))
        return isinstance(found, (int, float)) and math.isclose(float(found), float(target),
                                                                rel_tol=float(expected["rel"]))
    if isinstance(expected, bool) or isinstance(found, bool):  # true is not 1.0
        return isinstance(expected, bool) and isinstance(found, bool) and expected == found
    if isinstance(expected, (int, float)) and isinstance(found, (int, float)):
        return math.isclose(float(expected), float(found), rel_tol=1e-9, abs_tol=1e-15)
    if isinstance(expected, (list, tuple)) and isinstance(found, (list, tuple)):
        return len(expected) == len(found) and all(same(e, f) for e, f in zip(expected, found))
    if isinstance(expected, dict) and isinstance(found, dict):
        return all(k in found and same(v, found[k]) for k, v in expected.items())
    return expected == found


def _decision_text(item: dict) -> str:
    """A decision's text, prefixed by the profiles it holds at when they are not the paper's."""
    profiles = item.get("profiles", list(CHECKED_PROFILES))
    text = " ".join(str(item["text"]).split())
    return text if list(profiles) == list(CHECKED_PROFILES) else f"({', '.join(profiles)} profile) {text}"


def _applies(item: dict, table: str, row: dict, default_profiles: tuple[str, ...] | None = CHECKED_PROFILES) -> bool:
    """Whether a fact or decision holds for one row's view; `default_profiles` are those of an item
    naming none (None: every profile, for printing what a plan's rows run under)."""
    profiles = item.get("profiles", default_profiles)
    if profiles is not None and row.get("profile", "paper") not in profiles:
        return False
    configs = item.get("configs")
    if configs is not None and table not in configs:
        return False
    rows = item.get("rows")
    if isinstance(rows, str) and rows.startswith("re:"):
        if re.search(rows[3:], row["label"]) is None:
            return False
    elif rows is not None and row["label"] not in rows:
        return False
    for path, value in (item.get("where") or {}).items():
        try:
            found = resolve(row, path)
        except ProtocolError:
            return False
        if not all(same(value, f) for f in found):
            return False
    return True


PLAN_LEVEL = ("split", "evaluation", "kind", "profile", "datasets", "epoch_scale")


def row_view(plan: dict, row: dict) -> dict:
    """What a fact's paths see for one row: the row's plan plus the config-level split and evaluation."""
    return {**{key: plan[key] for key in PLAN_LEVEL if key in plan}, **row}


def check_plan(plan: dict, protocol: dict) -> tuple[list[Mismatch], set[str], list[str]]:
    """Hold one config's plan against a paper's facts and checked decisions.

    Returns the mismatches, the ids of the facts and decisions that applied to some row, and
    the paths that do not exist in the plan (a fact written for another plan shape).
    """
    table = plan["config"].split("/", 1)[1]
    mismatches, applied, errors = [], set(), []
    items = list(protocol.get("facts") or []) + [d for d in protocol.get("decisions") or [] if "expect" in d]
    for row in plan["rows"]:
        view = row_view(plan, row)
        for item in items:
            # an ensemble or baseline row (no network of the paper) is checked only by facts that name it
            if ("ensemble" in row or "baseline" in row) and row["label"] not in (item.get("rows") or []):
                continue
            if not _applies(item, table, view):
                continue
            applied.add(item["id"])
            for path, expected in item["expect"].items():
                try:
                    values = resolve(view, path)
                except ProtocolError as error:
                    errors.append(f"{plan['config']} row {row['label']!r}: fact {item['id']!r}: {error}")
                    continue
                for found in values:
                    if not same(expected, found):
                        mismatches.append(Mismatch(item["id"], plan["config"], row["label"], path, expected,
                                                   found, item.get("text", "")))
    return mismatches, applied, errors


def conformance(plans: list[dict], protocol: dict) -> list[str]:
    """Problems of a paper's plans: undeclared differences, stale deviations, facts that apply to
    nothing, deviations that are not real (the plan now matches the fact). Facts and decisions are
    held against the paper-profile plans, a decision naming `profiles` against those profiles' plans;
    plans of other profiles are ignored."""
    problems, applied, differing = [], set(), set()
    for plan in plans:
        mismatches, used, errors = check_plan(plan, protocol)
        problems += errors
        applied |= used
        differing |= {m.fact for m in mismatches}
        declared_facts = {d["fact"] for d in protocol.get("deviations") or []}
        counts: dict[tuple, list] = {}
        for m in mismatches:  # one line per fact, row and path (a regex path may differ in many layers)
            counts.setdefault((m.fact, m.config, m.row, m.path), []).append(m)
        problems += [f"undeclared deviation: {group[0]}" + (f" (and {len(group) - 1} more there)" if len(group) > 1 else "")
                     for (fact, *_), group in counts.items() if fact not in declared_facts]
    for item in list(protocol.get("facts") or []) + [d for d in protocol.get("decisions") or [] if "expect" in d]:
        if item["id"] not in applied:
            problems.append(f"fact {item['id']!r} applies to no row of any config (configs "
                            f"{item.get('configs')}, rows {item.get('rows')})")
    for deviation in protocol.get("deviations") or []:
        if deviation["fact"] in applied and deviation["fact"] not in differing:
            problems.append(f"stale deviation: fact {deviation['fact']!r} is declared as a deviation but "
                            "every plan now matches it; remove the deviation")
    return problems


README_BEGIN = "<!-- protocol:begin (generated from protocol.yaml by `python -m mammo_keras.protocol --write-readmes`) -->"
README_END = "<!-- protocol:end -->"


def readme_block(paper: str) -> str:
    """The protocol section of experiments/<paper>/README.md, generated from protocol.yaml.

    Every fact listed here is checked against every paper-profile plan it applies to
    (tests/experiments/test_protocol.py), so the README says only what the code does.
    """
    loaded = load(paper)
    deviations = {d["fact"]: d["reason"] for d in loaded.get("deviations") or []}
    source = "the task definition" if loaded.get("no_paper") else "the paper"  # a folder of our own tasks
    lines = [README_BEGIN, "", f"### The protocol, as {source} states it and as the code runs it", "",
             f"Each line is a fact of `protocol.yaml`, held against the plan of every config at the paper profile "
             f"(`mammo-keras reproduce {paper}/<config> --profile paper --plan`); a difference fails the tests "
             "unless it is declared below with its reason.", "",
             f"| {source.removeprefix('the ')} states | where | as run |", "|---|---|---|"]
    for fact in loaded.get("facts") or []:
        status = f"**deviation**: {deviations[fact['id']]}" if fact["id"] in deviations else "as stated"
        lines.append(f"| {fact['text']} | {fact['cite']} | {status} |")
    if loaded.get("decisions"):
        lines += ["", f"Where {source} is silent or ambiguous, the package decides (the decisions with plan "
                      "values are checked like the facts):", ""]
        lines += [f"- {_decision_text(d)}" for d in loaded["decisions"]]
    lines += ["", README_END]
    return "\n".join(lines)


def update_readme(paper: str, experiments_dir: Path = EXPERIMENTS_DIR) -> bool:
    """Write the generated block into experiments/<paper>/README.md (appended when it has none);
    returns whether the file changed."""
    path = Path(experiments_dir) / paper / "README.md"
    text = path.read_text()
    block = readme_block(paper)
    if README_BEGIN in text and README_END in text:
        start, end = text.index(README_BEGIN), text.index(README_END) + len(README_END)
        new = text[:start] + block + text[end:]
    else:
        new = text.rstrip() + "\n\n" + block + "\n"
    if new != text:
        path.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mammo_keras.protocol",
                                     description="Regenerate the protocol sections of experiments/*/README.md.")
    parser.add_argument("--write-readmes", action="store_true", help="rewrite the generated README blocks")
    args = parser.parse_args(argv)
    if not args.write_readmes:
        parser.print_help()
        return 0
    from mammo_keras.config import list_configs

    for paper in sorted({name.split("/")[0] for name in list_configs()}):
        print(f"{paper}: {'updated' if update_readme(paper) else 'up to date'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
