"""The code's shape stays as ARCHITECTURE.md describes it: layers, no import cycle, short modules.

Read from the source (``ast``), so a lazy import inside a function counts as much as one at
the top: a cycle hidden in a function is still a cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict

from helpers import ROOT

PACKAGE = ROOT / "rectool"
MAX_LINES = 500
# a module may import only from its own layer (its own package, for the middle layer) or below
LAYERS = {"cli": 6, "__main__": 6, "tune": 5, "retrieval": 4, "train": 3, "programs": 2, "ingest": 2, "ranking": 2,
          "tree": 2, "": 0, "errors": 0, "console": 0, "faults": 0, "hashing": 0}
FOUNDATION = 1  # every other top-level module: artifacts, commit, badinput, sharding, launch, topk, ...


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = ast.parse(path.read_text(), str(path))
    return out


MODULES = _modules()


def _imports(name: str, tree: ast.Module) -> list[tuple[str, str]]:
    """(module imported, name imported or '') for every rectool import anywhere in the module."""
    package = name if (PACKAGE / name.replace(".", "/").removeprefix("rectool/") / "__init__.py").exists() \
        or name == "rectool" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            if module.startswith("rectool"):
                for alias in node.names:
                    full = f"{module}.{alias.name}"
                    out.append((full, "") if full in MODULES else (module, alias.name))
        elif isinstance(node, ast.Import):
            out += [(a.name, "") for a in node.names if a.name.startswith("rectool")]
    return [(m, n) for m, n in out if m in MODULES and m != name]


def _graph() -> dict[str, set[str]]:
    graph = defaultdict(set)
    for name, tree in MODULES.items():
        graph[name] |= {m for m, _ in _imports(name, tree)}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(MODULES):
        if v not in index:
            visit(v)
    return found


def _layer(module: str) -> tuple[int, str]:
    top = module.split(".")[1] if "." in module else ""
    return LAYERS.get(top, FOUNDATION), top


def test_no_import_cycle_anywhere():
    assert _cycles(_graph()) == []


def test_imports_point_down_the_layers():
    upward = []
    for name, targets in _graph().items():
        (level, top) = _layer(name)
        for target in targets:
            (target_level, target_top) = _layer(target)
            if target_level > level or (target_level == level == 2 and target_top != top):
                upward.append(f"{name} -> {target}")
    assert upward == [], "cli -> tune -> retrieval -> train -> programs/ingest/ranking/tree -> foundation"


def test_no_private_name_is_imported_across_modules():
    private = [f"{name} imports {module}.{alias}" for name, tree in MODULES.items()
               for module, alias in _imports(name, tree)
               if alias.startswith("_") and not (alias.startswith("__") and alias.endswith("__"))]
    assert private == []


def test_no_module_over_500_lines():
    long = {name: n for name in MODULES
            if (n := len((ROOT / (name.replace(".", "/") + ".py")).read_text().splitlines()
                         if (ROOT / (name.replace(".", "/") + ".py")).exists() else [])) > MAX_LINES}
    assert long == {}


def test_every_retrieve_method_has_a_searcher_and_the_cli_offers_each():
    from typing import get_args

    from rectool.cli.retrieval import MethodChoice
    from rectool.retrieval.choices import Method
    from rectool.retrieval.registry import SEARCHERS

    assert list(SEARCHERS) == list(get_args(Method)) == [m.value for m in MethodChoice]
