"""Loads the hypothesis profile (tests/fuzzing.py) and reports, at the end
of the run, how many examples each property ran; the ``no_daemon_loop``
fixture of the CLI tests (the shared helpers are in helpers.py)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fuzzing

_COUNTS: dict[str, int] = {}
_CASES = re.compile(r"(\d+) passing, (\d+) failing, and (\d+) invalid")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    yield
    stats = getattr(item, "hypothesis_statistics", None)
    if call.when == "teardown" and stats and item.nodeid not in _COUNTS:
        # examples run to the end, every phase (explicit, reuse, generate,
        # shrink); draws a strategy rejected (filters, assume) are not counted
        _COUNTS[item.nodeid] = sum(int(p) + int(f) for p, f, _ in _CASES.findall(stats))


@pytest.fixture
def no_daemon_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that reaches the tick loop is wrong: fail instead of looping.
    CLI test modules take it for every test: ``pytestmark =
    pytest.mark.usefixtures("no_daemon_loop")`` (and drive ``helpers.run_main``)."""
    from pyoomd import daemon
    from pyoomd.cli import options

    def refuse(self: daemon.Daemon) -> None:
        pytest.fail("the daemon loop was started")

    monkeypatch.setattr(daemon.Daemon, "run", refuse)
    # A real /etc/pyoomd/config.yaml on the test host must not leak in.
    monkeypatch.setattr(options, "DEFAULT_CONFIG_PATH", "/nonexistent/pyoomd/config.yaml")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _COUNTS:
        return
    terminalreporter.section(f"hypothesis examples (profile {fuzzing.PROFILE})")
    for nodeid, n in sorted(_COUNTS.items()):
        terminalreporter.write_line(f"{n:>7}  {nodeid}")
    terminalreporter.write_line(f"{sum(_COUNTS.values()):>7}  in all, {len(_COUNTS)} properties")
