"""The package's shape: no import cycle between pyoomd's modules, no class
too long.

The import graph is read from the source with ``ast``: absolute
(``import pyoomd.x``, ``from pyoomd.x import y``) and relative imports
(``from . import x`` names the submodule ``x`` when there is one), those
inside functions included (an import put off until a call is still a
dependency), those under ``if TYPE_CHECKING:`` left out (they never run).
A module depends on the module it imports from, and on each package whose
``__init__`` runs first.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pyoomd"
MAX_CLASS_LINES = 250
# Classes over MAX_CLASS_LINES that are being split: none (Daemon was, issue 15).
LONG_CLASSES_ALLOWED: set[str] = set()


def module_files() -> dict[str, Path]:
    """Dotted module name -> its file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, but not under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _with_parents(name: str, modules: dict[str, Path]) -> set[str]:
    """``name`` and the packages above it that are pyoomd modules."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & modules.keys()


def dependencies(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The pyoomd modules that importing ``name`` imports."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    deps: set[str] = set()
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                deps |= _with_parents(alias.name, modules)
            continue
        if node.level:
            base_parts = package.split(".")
            base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        deps |= _with_parents(base, modules)
        for alias in node.names:  # `from . import x`: the submodule x, if it is one
            sub = f"{base}.{alias.name}"
            if sub in modules:
                deps.add(sub)
    deps.discard(name)
    # A module's own packages are always imported before it (``pyoomd.daemon``
    # before ``pyoomd.daemon.core``): ``from .base import X`` in a submodule
    # names its package but cannot start it again.  So a package that
    # re-exports its submodules (``pyoomd/daemon/__init__.py``) is no cycle;
    # two siblings that import each other still are.
    return deps - (_with_parents(name, modules) - {name})


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: dependencies(name, path, modules) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                out.append(sorted(comp))
    return out


def a_cycle(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """One cycle through the component's first module (for the message)."""
    members = set(comp)
    start = comp[0]
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if child not in prev:
                    prev[child] = node
                    nxt.append(child)
        frontier = nxt
    return comp


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    msg = "\n".join(f"{' <-> '.join(c)}\n    e.g. {' -> '.join(a_cycle(graph, c))}" for c in cycles)
    assert not cycles, f"import cycles in pyoomd/:\n{msg}"


def test_graph_sees_each_kind_of_import(tmp_path: Path) -> None:
    """The graph builder on a small package: relative, absolute, in a
    function, ``from . import submodule``; TYPE_CHECKING left out."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from .a import g\n",  # a package re-exporting its submodule: no cycle
        "a.py": "from . import b\nfrom .sub import c\n",
        "b.py": "def f():\n    import pkg.sub.c\n",
        "sub/__init__.py": "",
        "sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import a\n"
                    "from ..b import f\n",
        "d.py": "from .sub.c import x\nfrom . import nothing\n",
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    modules = {}
    for path in sorted(pkg.rglob("*.py")):
        parts = list(path.relative_to(tmp_path).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    graph = {n: dependencies(n, p, modules) for n, p in modules.items()}
    # (a module's own packages are left out: they are imported before it)
    assert graph["pkg"] == {"pkg.a"}
    assert graph["pkg.a"] == {"pkg.b", "pkg.sub", "pkg.sub.c"}
    assert graph["pkg.b"] == {"pkg.sub", "pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.b"}  # not pkg.a: only under TYPE_CHECKING
    assert graph["pkg.d"] == {"pkg.sub", "pkg.sub.c"}
    comps = [c for c in strongly_connected(graph) if len(c) > 1]
    assert comps == [["pkg.b", "pkg.sub.c"]]
    assert a_cycle(graph, comps[0]) in (["pkg.b", "pkg.sub.c", "pkg.b"],)


def long_classes() -> dict[str, int]:
    """``module.Class`` -> its length in lines, for classes over the limit."""
    out = {}
    for name, path in module_files().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ClassDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = (node.end_lineno or node.lineno) - first + 1
                if lines > MAX_CLASS_LINES:
                    out[f"{name}.{node.name}"] = lines
    return out


def test_no_class_over_250_lines() -> None:
    too_long = {k: v for k, v in long_classes().items() if k.rpartition(".")[2] not in LONG_CLASSES_ALLOWED}
    assert not too_long, f"classes over {MAX_CLASS_LINES} lines: {too_long}"
