"""The package's shape stays as the README's "Architecture" says: layers import downwards only, no import circles,
and no module reaches into another's private names. Read from the source with ast, so an import inside a function
counts as much as one at the top."""

from __future__ import annotations

import ast
import importlib
import warnings
from pathlib import Path

import pytest

import dlbench
from dlbench.core import moved

ROOT = Path(dlbench.__file__).parent
LAYERS = ["core", "data", "runs", "train", "tools", "cli"]
"""Lowest first: a module may import its own layer and those before it, never one after it."""
TOP = {"dlbench", "dlbench.testing", "dlbench.__main__"}
"""The public face and the entry points: they may import any layer."""


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _target(name: str) -> str | None:
    """The dlbench module an imported dotted name lives in (``dlbench.core.spec.Plugin`` -> ``dlbench.core.spec``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> list[tuple[str, str, int]]:
    """(imported dlbench module, imported name or "", line) for every import statement of ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(t, "", node.lineno) for a in node.names if (t := _target(a.name))]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                as_module = _target(f"{base}.{alias.name}")
                if as_module == f"{base}.{alias.name}":  # from dlbench.core import registry: a module
                    out.append((as_module, "", node.lineno))
                elif (t := _target(base)) is not None:
                    out.append((t, alias.name, node.lineno))
    return [o for o in out if o[0] != module]


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_has_a_layer():
    loose = sorted(m for m in MODULES if m not in TOP and _layer(m) is None)
    assert not loose, f"modules outside the layers {LAYERS}: {loose}; put each in the subpackage its concern belongs to"


def test_layers_import_downwards_only():
    wrong = []
    for module in MODULES:
        own = _layer(module)
        if own is None:
            continue
        for target, _, line in _imports(module):
            layer = _layer(target)
            if target in TOP or (layer is not None and layer > own):
                wrong.append(f"{module}:{line} imports {target}")
    assert not wrong, "imports against the layer order " + " < ".join(LAYERS) + ":\n" + "\n".join(wrong)


def test_no_import_circles():
    graph = {m: {t for t, _, _ in _imports(m)} for m in MODULES}
    index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
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
                circles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert not circles, f"import circles: {circles}"


def test_no_module_imports_anothers_private_names():
    private = [f"{m}:{line} takes {name} from {t}" for m in MODULES for t, name, line in _imports(m)
               if name.startswith("_") and not name.startswith("__")]
    assert not private, "private names imported across modules (make them public or move them):\n" + "\n".join(private)


def test_the_walker_sees_what_it_checks():
    """The checks above would pass on an empty graph: make sure the walker finds real edges, lazy ones included."""
    edges = {(m, t) for m in MODULES for t, _, _ in _imports(m)}
    assert ("dlbench.train.lightning_cli", "dlbench.train.target") in edges
    assert ("dlbench.cli", "dlbench.train.target") in edges
    assert ("dlbench.tools.compress", "dlbench.runs.trained") in edges
    assert len(edges) > 60


@pytest.mark.parametrize("old", sorted(moved.MOVED))
def test_old_module_paths_still_import(old):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(moved.MOVED[old])
    assert any(issubclass(w.category, DeprecationWarning) and moved.MOVED[old] in str(w.message) for w in caught) or \
        old in __import__("sys").modules


@pytest.mark.parametrize("name", dlbench.__all__)
def test_public_names_resolve(name):
    assert getattr(dlbench, name) is not None
