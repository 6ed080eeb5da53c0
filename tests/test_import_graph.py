"""The import graph of ``bench/``, ``models/`` and ``strategies/`` has no circle.

Every import counts, at module level or inside a function (a circle kept working by imports inside
functions is still a circle: neither side can be read, tested or changed alone). The one circle
allowed is a registry package with its own members (``models`` ↔ ``models.vse_infty``: the package
imports its members to fill the registry, each member imports ``register`` from the package).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "models", "strategies")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules one import statement loads (``from a import b``: ``a.b`` when it is a module)."""
    out: set[str] = set()
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parent = module.split(".") if is_package else module.split(".")[:-1]
            parent = parent[:len(parent) - (node.level - 1)]
            base = ".".join([*parent, *([base] if base else [])])
        names = [base] + [f"{base}.{a.name}" for a in node.names]
    else:
        return out
    for name in names:
        while name and name not in known:  # the nearest enclosing project module
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: set[str] = set()
        for node in ast.walk(tree):
            edges |= _imported(node, name, path.name == "__init__.py", known)
        for target in list(edges):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            parts = target.split(".")
            edges |= {".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in known}
        edges.discard(name)
        graph[name] = edges
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _registry_with_members(comp: list[str], graph: dict[str, set[str]]) -> bool:
    """A package and modules directly inside it, where every edge of the circle goes to or from the package."""
    packages = [m for m in comp if all(o == m or o.startswith(m + ".") for o in comp)]
    if len(packages) != 1:
        return False
    pkg = packages[0]
    members = set(comp) - {pkg}
    if any(m.rpartition(".")[0] != pkg for m in members):
        return False
    # without the package, the members import no circle among themselves
    sub = {m: graph[m] & members for m in members}
    return not circles(sub)


def test_the_graph_is_read():
    graph = import_graph()
    assert {"bench.train", "bench.spec", "bench.harness.store", "models", "strategies.dbl"} <= set(graph)
    assert "bench.spec" in graph["bench.train"] and "models" in graph["bench.train"]
    assert "bench.train" in graph["bench.harness.store"]  # a function-level import counts
    assert "models.vse_infty" in graph["models"] or "models" in graph["models.vse_infty"]


def test_no_import_circle_but_a_registry_with_its_members():
    graph = import_graph()
    bad = [c for c in circles(graph) if not _registry_with_members(c, graph)]
    assert not bad, "import circles (each a set of modules importing each other):\n" + "\n".join(
        " <-> ".join(c) for c in bad)


def test_the_circle_check_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    g = {"strategies": {"strategies.dbl"}, "strategies.dbl": {"strategies", "strategies.base"},
         "strategies.base": set()}
    assert all(_registry_with_members(c, g) for c in circles(g))
    g2 = {**g, "strategies.base": {"bench.train"}, "bench.train": {"strategies"}}
    assert not all(_registry_with_members(c, g2) for c in circles(g2))


def test_the_spec_depends_on_no_harness_or_trainer():
    graph = import_graph()
    seen, todo = set(), ["bench.spec"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    assert not {m for m in seen if m.startswith("bench.harness") or m == "bench.train"}
