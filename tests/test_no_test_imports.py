"""Test modules share code through helpers (tests/helpers.py,
logcapture.py, fuzzing.py, integration/harness.py, ...), never by
importing one another: importing a test module runs its module-level code
again under another name and, for pytest, collects its fixtures (autouse
ones too) into the importer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# every Python file of the two suites, the test modules and the helpers alike
SOURCES = sorted(p for d in ("tests", "integration") for p in (ROOT / d).rglob("*.py"))


def is_test_module(dotted: str) -> bool:
    return dotted.rsplit(".", 1)[-1].startswith("test_")


def imported_test_modules(tree: ast.AST) -> list[str]:
    """The test modules ``tree`` imports, at any depth (function bodies too)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if is_test_module(a.name)]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if is_test_module(module):
                found.append(module)
            else:  # from tests import test_x, from . import test_x
                found += [f"{module}.{a.name}" for a in node.names if is_test_module(a.name)]
    return found


def test_the_sources_are_found() -> None:
    names = {p.name for p in SOURCES}
    assert {"test_snapshot.py", "helpers.py", "test_core.py", "harness.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_test_module(path: Path) -> None:
    assert imported_test_modules(ast.parse(path.read_bytes(), str(path))) == []


@pytest.mark.parametrize("source", [
    "from test_cli import run_main", "from tests.test_notify import _wait_for", "import test_snapshot",
    "import tests.test_loop as tl", "from tests import test_idle", "from . import test_readers",
    "from .test_snapshot import build", "def f():\n    from test_loop import ENV\n",
])
def test_the_check_sees_every_form(source: str) -> None:
    assert imported_test_modules(ast.parse(source))


@pytest.mark.parametrize("source", ["from helpers import build", "from logcapture import Log",
                                    "from integration.harness import run", "import fuzzing",
                                    "from pyoomd.sense import sample", "import pytest"])
def test_helpers_may_be_imported(source: str) -> None:
    assert imported_test_modules(ast.parse(source)) == []
