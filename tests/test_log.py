"""report/log.py: structlog is the pipeline; these check what each of our
processors adds, the lines it renders, and that capture_logs sees events."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import datetime, timezone
from typing import Any

import structlog
from structlog.testing import capture_logs

from pyoomd.report import log as plog


def _lines(fmt: str, calls: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    buf = io.StringIO()
    plog.configure(fmt, buf)
    try:
        log = plog.get_logger()
        for method, event, fields in calls:
            getattr(log, method)(event, **fields)
    finally:
        plog.configure("json")
    return buf.getvalue().splitlines()


def test_json_line_keeps_the_callers_order_then_event_level_timestamp() -> None:
    (line,) = _lines("json", [("info", "startup", {"pid": 42, "dry_run": True, "mem_term": "10%"})])
    d = json.loads(line)
    assert list(d) == ["pid", "dry_run", "mem_term", "event", "level", "timestamp"]
    assert d["event"] == "startup" and d["level"] == "info"
    assert d["timestamp"].endswith("Z")
    stamp = datetime.fromisoformat(d["timestamp"][:-1]).replace(tzinfo=timezone.utc)
    assert abs(stamp.timestamp() - datetime.now(timezone.utc).timestamp()) < 60


def test_levels_as_structlog_names_them() -> None:
    calls = [(m, "e", {}) for m in ("debug", "info", "warning", "warn", "error", "exception", "critical")]
    levels = [json.loads(x)["level"] for x in _lines("json", calls)]
    assert levels == ["debug", "info", "warning", "warning", "error", "error", "critical"]


def test_killed_process_gets_the_kernels_line() -> None:
    fields = {"pid": 7, "comm": "Web Content", "uid": 1000, "total_vm_kib": 10, "anon_rss_kib": 5,
              "file_rss_kib": 2, "shmem_rss_kib": 0}
    (line,) = _lines("json", [("warning", "killed_process", fields)])
    assert json.loads(line)["line"] == ("Killed process 7 (Web Content) total-vm:10kB, anon-rss:5kB, "
                                        "file-rss:2kB, shmem-rss:0kB, UID:1000")
    # the processor alone, as structlog calls it
    out = plog.killed_process_line(None, "warning", {"event": "killed_process", **fields})
    assert out["line"].startswith("Killed process 7 (Web Content)")
    assert "line" not in plog.killed_process_line(None, "info", {"event": "kill", **fields})


def test_console_line_escapes_what_a_name_carries() -> None:
    (line,) = _lines("console", [("warning", "kill", {"comm": "a\x1b[2Jb\u202e", "pid": 3})])
    assert "\x1b" not in line and "\u202e" not in line
    assert "\\x1b[2Jb\\u202e" in line
    assert line.split()[1:3] == ["[warning", "]"]


def test_long_strings_and_huge_lines_are_bounded() -> None:
    lines = _lines("json", [("info", "long", {"cmdline": "a" * 100_000}),
                            ("info", "huge", {"items": ["x" * 4000] * 200})])
    long_ = json.loads(lines[0])
    assert long_["cmdline"].endswith("...[95904 chars cut]") and len(lines[0]) < 5000
    huge = json.loads(lines[1])
    assert len(lines[1].encode()) < plog.LINE_MAX_BYTES and huge["event"] == "huge"


def test_capture_logs_sees_pyoomd_events() -> None:
    plog.configure("json", io.StringIO())
    with capture_logs() as logs:
        plog.get_logger().warning("kill", pid=1, comm="x")
    assert logs == [{"pid": 1, "comm": "x", "event": "kill", "log_level": "warning"}]
    # and with our processors in front, as the daemon runs them
    with capture_logs(processors=[plog.bound_strings]) as logs:
        plog.get_logger().info("k", cmdline="z" * 5000)
    assert logs[0]["cmdline"].endswith("...[904 chars cut]")


def test_observers_get_the_fields_whole() -> None:
    fields = {"cmdline": "q" * 5000}
    with capture_logs(processors=[plog.bound_strings]):
        plog.get_logger().info("k", **fields)
    assert len(fields["cmdline"]) == 5000


def test_a_vanished_destination_is_swallowed() -> None:
    class Gone(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    plog.configure("json", Gone())
    try:
        plog.get_logger().error("x", a=1)  # no exception
    finally:
        plog.configure("json")


def test_unconfigured_get_logger_configures_stderr_json() -> None:
    code = ("import structlog, sys; from pyoomd.report import log; "
            "log.get_logger().warning('hello', n=1); print(structlog.is_configured())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "True"
    d = json.loads(r.stderr.strip().splitlines()[-1])
    assert (d["event"], d["n"], d["level"]) == ("hello", 1, "warning")


def test_reconfigure_takes_effect_on_a_logger_already_held() -> None:
    held = plog.get_logger()
    a, b = io.StringIO(), io.StringIO()
    try:
        plog.configure("json", a)
        held.info("one")
        plog.configure("console", b)
        held.info("two")
    finally:
        plog.configure("json")
    assert json.loads(a.getvalue())["event"] == "one" and "two" in b.getvalue() and "{" not in b.getvalue()
    assert structlog.is_configured()
