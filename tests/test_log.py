"""report/log.py: the stdlib logger prints what structlog printed (JSON lines
and console lines), swallows a vanished destination, and keeps key order."""

from __future__ import annotations

import io
import json
import re
import time
from datetime import datetime, timezone
from typing import Any

import pytest

from pyoomd.report import log as plog

EVENTS: list[tuple[str, str, dict[str, Any]]] = [
    ("info", "startup", {"pid": 42, "dry_run": True, "mem_term": "10%", "policy_rules": ["a", "b"],
                         "wakeup": "psi-trigger some 150ms/2s", "zram": False, "x": None, "f": 0.25}),
    ("warning", "kill", {"comm": "Web Content", "cmdline": "a=b 'q'", "growth": {"points": 3, "w": 1.5},
                         "candidates": [{"pid": 1, "comm": "x"}], "uni": "caf\u00e9 \u2603"}),
    ("error", "reload_failed", {"error": "/etc/x.yaml:3:1: memory.trem: Extra inputs are not permitted"}),
    ("warn", "w", {"obj": object(), "err": ValueError("bad")}),
    ("exception", "e", {}),
    ("critical", "a_very_long_event_name_that_is_longer_than_thirty", {"k": "v"}),
    ("debug", "d", {"tab": "a\tb", "eq": "a=b", "plain": "abc"}),
]
TS_JSON = re.compile(r'"timestamp": "[^"]*"')
TS_CONSOLE = re.compile(r"^\S+Z ", re.MULTILINE)


def _ours(fmt: str) -> str:
    buf = io.StringIO()
    plog.configure(fmt, buf)
    try:
        log = plog.get_logger()
        for method, event, fields in EVENTS:
            getattr(log, method)(event, **fields)
    finally:
        plog.configure("json")
    return buf.getvalue()


def _structlog(fmt: str) -> str:
    structlog = pytest.importorskip("structlog")
    buf = io.StringIO()
    processors: list[Any] = [structlog.processors.add_log_level,
                             structlog.processors.TimeStamper(fmt="iso", utc=True)]
    if fmt == "json":
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(processors=processors, logger_factory=structlog.WriteLoggerFactory(file=buf),
                        cache_logger_on_first_use=False)
    try:
        log = structlog.get_logger("pyoomd")
        for method, event, fields in EVENTS:
            getattr(log, method)(event, **fields)
    finally:
        structlog.reset_defaults()
    return buf.getvalue()


def test_json_lines_are_structlogs() -> None:
    ours, theirs = _ours("json"), _structlog("json")
    # repr(object) differs by address only
    norm = [re.sub(r"0x[0-9a-f]+", "0x", TS_JSON.sub('"timestamp": T', t)) for t in (ours, theirs)]
    assert norm[0] == norm[1]
    first = json.loads(ours.splitlines()[0])
    assert list(first)[-3:] == ["event", "level", "timestamp"]
    assert list(first)[:3] == ["pid", "dry_run", "mem_term"]


def test_console_lines_are_structlogs() -> None:
    ours, theirs = _ours("console"), _structlog("console")
    norm = [re.sub(r"0x[0-9a-f]+", "0x", TS_CONSOLE.sub("T ", t)) for t in (ours, theirs)]
    assert norm[0] == norm[1]
    assert ours.splitlines()[0].split()[1:3] == ["[info", "]"]


def test_timestamp_is_iso_utc_with_z() -> None:
    ns = time.time_ns()
    ts = plog.timestamp(ns)
    assert ts.endswith("Z")
    parsed = datetime.fromisoformat(ts[:-1]).replace(tzinfo=timezone.utc)
    assert abs(parsed.timestamp() - ns / 1e9) < 1e-5
    assert plog.timestamp(1_700_000_000 * 10**9) == "2023-11-14T22:13:20Z"  # as isoformat(): no .000000
    assert plog.timestamp(1_700_000_000 * 10**9 + 1500) == "2023-11-14T22:13:20.000001Z"


def test_a_vanished_destination_is_swallowed() -> None:
    class Gone(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    plog.configure("json", Gone())
    try:
        plog.get_logger().error("x", a=1)  # no exception
    finally:
        plog.configure("json")


def test_the_logger_imports_no_structlog() -> None:
    import subprocess
    import sys

    code = ("import sys, io; from pyoomd.report import log; log.configure('json', io.StringIO()); "
            "log.get_logger().info('x'); print('structlog' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"
