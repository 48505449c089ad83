"""The package's layers: engine -> topology -> constants -> solve -> export / compat -> train ->
verify -> plots -> cli (runtime below all), with no import cycles and no upward imports, every
import counted (function-local ones too); local imports only of heavy optional packages, and
of the library in the command line (start-up time).

``python tests/test_layering.py`` prints the layer graph (the edges between packages)."""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "kernelshape"
LAYERS = {"runtime": 0, "engine": 1, "topology": 2, "constants": 3, "solve": 4, "export": 5,
          "compat": 5, "integrations": 5, "train": 6, "verify": 7, "plots": 8, "cli": 9,
          "__main__": 9}  # python -m kernelshape: the CLI's entry point
#: third-party packages that may be imported inside functions (optional or slow to import)
LOCAL_OK = {"jax", "jaxlib", "optax", "kfac_jax", "torch", "tensorflow", "matplotlib",
            "mnist1d", "sklearn", "mlxtend", "threadpoolctl"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _target(name: str, imported: str | None) -> str:
    """The module an import names: ``from a.b import c`` is ``a.b.c`` when that is a module."""
    if imported is not None and f"{name}.{imported}" in MODULES:
        return f"{name}.{imported}"
    return name


@cache
def imports() -> list[tuple[str, str, bool]]:
    """(importing module, imported module, inside a function) for every import."""
    found = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text("utf-8"))
        functions = [f for f in ast.walk(tree)
                     if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
        local = {id(n) for f in functions for n in ast.walk(f)}
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and getattr(block.test, "id", "") == "TYPE_CHECKING"
                       for n in ast.walk(block)}
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in typing_only:      # annotations only: not imported at run time
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                targets = [_target(base, a.name) for a in node.names]
            else:
                continue
            found += [(module, t, id(node) in local) for t in targets]
    return found


def layer(module: str) -> int | None:
    """The layer of a kernelshape module (None: the root package, which imports nothing)."""
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else None


def test_every_package_has_a_layer() -> None:
    packages = {m.split(".")[1] for m in MODULES if m.count(".") >= 1}
    assert packages == set(LAYERS), packages ^ set(LAYERS)


def test_no_upward_import() -> None:
    upward = [(a, b) for a, b, _ in imports() if b.startswith("kernelshape.")
              and layer(a) is not None and layer(b) is not None and layer(b) > layer(a)]
    assert not upward, upward


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b, _ in imports():
        if b in MODULES and b != a and not a.startswith(b + "."):   # a package's own __init__
            graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:            # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in list(MODULES):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def optional_modules() -> set[str]:
    """Library modules that import an optional heavy package at module level (the JAX trainer)."""
    return {a for a, b, local in imports() if not local and b.split(".")[0] in LOCAL_OK}


def test_local_imports_only_where_allowed() -> None:
    """Inside functions: optional heavy packages (or library modules built on one) anywhere; the
    rest of the library only in the CLI."""
    optional = optional_modules()
    bad = [(a, b) for a, b, local in imports() if local
           and b.split(".")[0] not in LOCAL_OK and b not in optional
           and not (a.startswith("kernelshape.cli") and b.startswith("kernelshape"))]
    assert not bad, bad


def layer_graph() -> list[str]:
    """Lines ``package -> package (count)`` of the imports between packages."""
    edges: dict[tuple[str, str], int] = defaultdict(int)
    for a, b, _ in imports():
        if b.startswith("kernelshape.") and a.count(".") and a.split(".")[1] != b.split(".")[1]:
            edges[(a.split(".")[1], b.split(".")[1])] += 1
    return [f"{a:>9} -> {b:<9} ({n})" for (a, b), n in
            sorted(edges.items(), key=lambda e: (-LAYERS[e[0][0]], -LAYERS[e[0][1]]))]


if __name__ == "__main__":
    print("\n".join(layer_graph()))
