"""Trace files: the flight recorder's ring on disk (format: TRACE.md).

gzip-compressed JSON Lines.  Line 1 is the header (format name, format
version, pyoomd version, the plan in force: settings and policy), every
other line one entry ``[kind, t, ...]`` in time order.  File contents
(bytes) are written as latin-1 text, so they round-trip exactly.

Imported only when a trace is written or read: the loop stays light.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import time
import zlib
from dataclasses import dataclass
from typing import Any

from . import __version__

FORMAT = "pyoomd-trace"
# Major version: a reader refuses a larger one.  Minor: additions a reader
# of the same major may ignore (new header keys, new entry kinds).
FORMAT_VERSION = 1
FORMAT_MINOR = 0
TRACE_SUFFIX = ".trace.gz"


class TraceError(Exception):
    """A trace that cannot be read; the message names the file."""


@dataclass
class Trace:
    header: dict[str, Any]
    entries: list[tuple[Any, ...]]
    path: str = ""

    @property
    def t0(self) -> float:
        return self.entries[0][1] if self.entries else 0.0

    @property
    def t1(self) -> float:
        return self.entries[-1][1] if self.entries else 0.0

    def events(self) -> list[tuple[float, str, dict[str, Any]]]:
        return [(e[1], e[2], e[3]) for e in self.entries if e[0] == "e"]


def make_header(settings_plan: Any, policy_plan: Any, **extra: Any) -> dict[str, Any]:
    return {"format": FORMAT, "version": FORMAT_VERSION, "minor": FORMAT_MINOR, "pyoomd": __version__,
            "created": time.time(), "created_monotonic": time.monotonic(), "host": socket.gethostname(),
            "kernel": os.uname().release, "clk_tck": os.sysconf("SC_CLK_TCK"),
            "settings": settings_plan, "policy": policy_plan, **extra}


def _encode(e: tuple[Any, ...]) -> list[Any]:
    return [x.decode("latin-1") if isinstance(x, bytes) else x for x in e]


# Which positions of an entry hold file contents (bytes), by kind.
_BYTES_AT = {"r": 3, "a": 4}


def _decode(row: list[Any]) -> tuple[Any, ...]:
    i = _BYTES_AT.get(row[0])
    if i is not None and isinstance(row[i], str):
        row[i] = row[i].encode("latin-1")
    for i, v in enumerate(row):
        if isinstance(v, list) and row[0] in ("l", "c", "v"):
            row[i] = tuple(v)
    if row[0] == "s" and isinstance(row[7], list):
        p = row[7]
        row[7] = (*p[:4], tuple(p[4]) if p[4] is not None else None)
    return tuple(row)


def write_trace(path: str, header: dict[str, Any], entries: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Write atomically (temp file + rename), mode 0600 (cmdlines are
    private), the directory made 0700 if missing.  Returns what the
    ``trace_written`` event says."""
    d = os.path.dirname(path) or "."
    os.makedirs(d, mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as f:
            f.write(json.dumps(header, default=str).encode() + b"\n")
            for e in entries:
                f.write(json.dumps(_encode(e), default=str).encode() + b"\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    span = entries[-1][1] - entries[0][1] if entries else 0.0
    return {"path": path, "bytes": os.path.getsize(path), "entries": len(entries), "seconds": round(span, 3)}


def read_trace(path: str) -> Trace:
    """Read a trace; TraceError names the file and what is wrong (a newer
    format version than this pyoomd reads is refused, saying so)."""
    try:
        with gzip.open(path, "rb") as f:
            header = _header(path, f.readline())
            body = [line for line in f.read().split(b"\n") if line.strip()]
        # one parse of all lines as a JSON array (a C call; ~2x faster than a
        # json.loads per line for the ~35,000 lines of a busy 120 s trace)
        entries = [_decode(row) for row in json.loads(b"[" + b",".join(body) + b"]")]
    except (OSError, EOFError, zlib.error) as e:  # EOFError: a truncated gzip stream
        raise TraceError(f"{path}: cannot read: {e}") from None
    except (ValueError, IndexError, TypeError) as e:
        raise TraceError(f"{path}: not a valid pyoomd trace: {e}") from None
    entries.sort(key=lambda e: e[1])  # stable: same-time entries keep their order
    return Trace(header, entries, path)


def _header(path: str, line: bytes) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise TraceError(f"{path}: not a pyoomd trace (no '{FORMAT}' header)")
    v = header.get("version")
    if not isinstance(v, int):
        raise TraceError(f"{path}: trace header has no integer format version (got {v!r})")
    if v > FORMAT_VERSION:
        raise TraceError(f"{path}: trace format version {v} (written by pyoomd {header.get('pyoomd', '?')}) is "
                         f"newer than this pyoomd {__version__} reads (version {FORMAT_VERSION}): replay it "
                         f"with a newer pyoomd")
    return header


def trace_name(header: dict[str, Any]) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(header.get("created", time.time())))
    ms = int((header.get("created", 0.0) % 1) * 1000)
    victim = header.get("victim")
    who = f"-pid{victim}" if victim is not None else f"-{header.get('reason', 'dump')}"
    return f"{stamp}.{ms:03d}{who}{TRACE_SUFFIX}"


def prune_dir(d: str, max_files: int, max_bytes: int) -> list[str]:
    """Remove the oldest traces until at most ``max_files`` remain and they
    take at most ``max_bytes``; only our own ``*.trace.gz`` files."""
    files = []
    for name in os.listdir(d):
        if name.endswith(TRACE_SUFFIX):
            p = os.path.join(d, name)
            try:
                st = os.stat(p)
            except OSError:
                continue
            files.append((st.st_mtime, name, p, st.st_size))
    files.sort()
    total = sum(f[3] for f in files)
    removed = []
    while files and (len(files) > max_files or total > max_bytes) and len(files) > 1:
        _, name, p, size = files.pop(0)
        try:
            os.unlink(p)
        except OSError:
            continue
        total -= size
        removed.append(name)
    return removed
