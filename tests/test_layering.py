"""The package's import layers, read from the source (every import, module level and inside functions).

    foundation  errors, fileio, settings, registry, vocabulary   (no TensorFlow, no package imports above)
    config      config, protocol                                 (read YAML; import no TensorFlow)
    data        data/*                                           (readers, prepare tasks, recipes, pipeline)
    models      models/*                                         (Keras builders, weights)
    io          io                                               (model folders: HDF5 + manifest)
    evaluation  evaluation/*                                     (metrics, plots, saliency, baselines)
    training    training/*                                       (stages, fit, cv, ensembling)
    runner      runner/*, plan, reproduce, results                      (a config's rows, run and reported)
    app         app/*                                            (predict, the screening server)
    cli         cli                                              (the console commands)

A module may import its own layer and the layers below it, never one above; and no two modules
import each other through any chain (the graph is acyclic). A new module that needs something
from above is a sign the thing belongs lower down (see README, "Extending the package").
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mammo_keras"
LAYERS = {
    "foundation": ("errors", "fileio", "settings", "registry", "vocabulary", ""),
    "config": ("config", "protocol"),
    "data": ("data",),
    "models": ("models",),
    "io": ("io",),
    "evaluation": ("evaluation",),
    "training": ("training",),
    "runner": ("runner", "plan", "reproduce", "results"),
    "app": ("app",),
    "cli": ("cli",),
}
RANK = {top: rank for rank, tops in enumerate(LAYERS.values()) for top in tops}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in its source)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + [node.module] if node.module else base) if node.level else node.module
                # `from mammo_keras.data import roi` imports the module data.roi, not only data/__init__
                candidates = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module
                              for alias in node.names]
            else:
                continue
            for candidate in candidates:
                while candidate and candidate not in modules and "." in candidate:
                    candidate = candidate.rpartition(".")[0]
                if candidate in modules and candidate != name:
                    targets.add(candidate)
        graph[name] = targets
    return graph


def layer_rank(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    assert top in RANK, f"{module}: its top-level name {top!r} is in no layer of tests/test_layering.py"
    return RANK[top]


def test_every_module_is_in_a_layer_and_imports_only_downwards():
    graph = import_graph()
    assert len(graph) > 50  # the scan found the package
    upward = sorted(f"{module} -> {target}" for module, targets in graph.items() for target in targets
                    if layer_rank(target) > layer_rank(module))
    assert upward == []


def test_the_import_graph_has_no_cycles():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_scan_sees_lazy_and_submodule_imports():
    """The checker itself: an import inside a function counts, as does `from mammo_keras.x import y`."""
    graph = import_graph()
    assert "mammo_keras.data.roi" in graph["mammo_keras.data.recipes"]  # from mammo_keras.data.roi import ...
    assert "mammo_keras.data.limits" in graph["mammo_keras.data.imageio"]
    assert "mammo_keras.data.prepare" in graph["mammo_keras.data.recipes"]  # imported inside methods
    assert "mammo_keras.runner.rows" in graph["mammo_keras.plan"]
