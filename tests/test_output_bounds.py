"""Output that hostile names cannot break (issue 13, item 7): the console
renderer escapes every control character; rank/explain tables stay one
line per process; notification bodies carry no markup; one log line stays
below journald's LineMax."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st

from pyoomd.cli.dispatch import main
from pyoomd.report import log as plog
from pyoomd.report.notify import kill_message
from pyoomd.textsafe import LINE_MAX_BYTES, escape_nonprintable, markup_escape

CONTROLS = ["\x1b", "\x0b", "\x0c", "\x85", "\u2028", "\u2029", "\x7f", "\x00", "\u202e", "\r", "\n", "\x9b", "\t"]
JOURNALD_LINE_MAX = 48 * 1024
# 15 bytes of comm: a newline, a screen-clearing CSI, a vertical tab.
HOSTILE_COMM = "ab\n\x1b[2J\x1b[31mc\x0b"


def _lines(fmt: str, *events: tuple[str, dict[str, Any]]) -> list[str]:
    buf = io.StringIO()
    plog.configure(fmt, buf)
    try:
        for event, fields in events:
            plog.get_logger().warning(event, **fields)
    finally:
        plog.configure("json")
    return buf.getvalue().splitlines()


def _raw_controls(text: str) -> list[str]:
    return [c for c in text if not c.isprintable()]


@pytest.mark.parametrize("ch", CONTROLS)
def test_console_renderer_escapes_every_control_character(ch: str) -> None:
    fields = {"comm": f"a{ch}b", "cmdline": f"x{ch}", "rules": [f"r{ch}"], "growth": {"k": f"v{ch}"},
              "obj": type("Evil", (), {"__repr__": lambda self: f"<evil{ch}>"})(), f"key{ch}": 1}
    lines = _lines("console", (f"kill{ch}", fields))
    assert len(lines) == 1 and not _raw_controls(lines[0]), lines


@fuzz(dev=300, ci=5_000)
@given(st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(st.text(), st.lists(st.text(), max_size=3)),
                       max_size=5), st.text(min_size=1))
def test_console_renderer_fuzz_one_printable_line(fields: dict[str, Any], event: str) -> None:
    fields = {k: v for k, v in fields.items() if k not in ("event", "level", "timestamp")}
    lines = _lines("console", (event, fields))
    assert len(lines) == 1 and not _raw_controls(lines[0])
    json_lines = _lines("json", (event, fields))
    assert len(json_lines) == 1 and json.loads(json_lines[0])["event"] == event


@pytest.fixture
def hostile() -> Iterator[subprocess.Popen[bytes]]:
    code = ("import ctypes, sys, time; open('/proc/self/oom_score_adj', 'w').write('1000'); "
            "ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0); "
            "sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, HOSTILE_COMM], stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline() == b"ready\n"
    assert Path(f"/proc/{p.pid}/comm").read_bytes() == HOSTILE_COMM.encode() + b"\n"
    yield p
    p.kill()
    p.wait()


def test_rank_and_explain_tables_escape_a_hostile_comm(hostile: subprocess.Popen[bytes], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    escaped = escape_nonprintable(HOSTILE_COMM, backslash=True)
    assert main(["rank", "--top", "5", "--policy", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    ours = [line for line in out.splitlines() if f" {hostile.pid} " in line]
    assert len(ours) == 1 and escaped in ours[0], out
    assert not [c for c in out if not c.isprintable() and c != "\n"]
    assert main(["explain", "--policy", str(tmp_path), str(hostile.pid)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"pid {hostile.pid} ({escaped})")
    assert "\x1b" not in out and "\x0b" not in out


def test_notification_body_escapes_markup() -> None:
    comm = "<b>x</b>&<a href='http://evil'><img src=/x>"
    body = kill_message({"comm": comm, "pid": 7, "rss_kib": 1024}).body
    assert "<" not in body and ">" not in body
    assert "&lt;b&gt;x&lt;/b&gt;&amp;&lt;a href='http://evil'&gt;&lt;img src=/x&gt;" in body


ENTITY = re.compile(r"&(amp|lt|gt);")


@fuzz(dev=300, ci=5_000)
@given(st.text(max_size=64), st.booleans())
def test_notification_body_fuzz(comm: str, dry_run: bool) -> None:
    body = kill_message({"comm": comm, "pid": 1, "rss_kib": 1, "dry_run": dry_run}).body
    assert "<" not in body and ">" not in body and body.isprintable()
    assert "&" not in ENTITY.sub("", body)
    assert markup_escape(comm) in body


def test_a_kill_event_with_a_64k_cmdline_is_one_line_below_journalds_line_max() -> None:
    cmdline = (b"\xff" * 65536).decode("utf-8", "replace")  # what the scan reads from /proc/PID/cmdline
    kill = {"pid": 4242, "comm": "hog", "cmdline": cmdline, "signal": "SIGTERM",
            "candidates": [{"pid": i, "comm": "c", "cmdline": cmdline} for i in range(5)]}
    for fmt in ("json", "console"):
        (line,) = _lines(fmt, ("kill", kill))
        assert len(line.encode()) <= LINE_MAX_BYTES < JOURNALD_LINE_MAX, (fmt, len(line.encode()))
        assert "chars cut]" in line
    doc = json.loads(_lines("json", ("kill", kill))[0])
    assert doc["event"] == "kill" and doc["pid"] == 4242 and doc["cmdline"].startswith("\ufffd" * 16)
    assert kill["cmdline"] == cmdline  # the caller's fields (hooks, metrics get them) are not cut
    # a list too long for any cut: the line keeps the event and says how long it was
    huge = {"candidates": [{"pid": i} for i in range(20000)]}
    (line,) = _lines("json", ("kill", huge))
    doc = json.loads(line)
    assert doc["event"] == "kill" and doc["truncated_bytes"] > LINE_MAX_BYTES
