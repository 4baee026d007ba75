"""Native journal entries, when stderr is the journal (issue 14).

systemd sets ``$JOURNAL_STREAM`` to ``DEVICE:INODE`` of the stream it gave a
service as stdout/stderr.  When that names our stderr, the log goes to
journald's native socket instead (``/run/systemd/journal/socket``, one
datagram an entry, systemd's "Native Journal Protocol"), so that
``journalctl -p warning -u pyoomd`` and ``journalctl MESSAGE_ID=...`` work:

- ``PRIORITY`` from the level (syslog numbers: warning 4, error 3, ...);
- ``MESSAGE``: one human sentence ("Killed firefox (pid 4242, 7.1 GiB) to
  relieve memory: MemAvailable ...");
- ``MESSAGE_ID``: a fixed id for each event kind that matters (kill,
  escalate, victim stuck, kernel OOM kill seen, reload failed, low memory,
  memory recovered), as systemd-oomd has one for its kills;
- ``SYSLOG_IDENTIFIER=pyoomd``, ``PYOOMD_EVENT``, and every field of the
  event as ``PYOOMD_<FIELD>`` (strings as they are, anything else as JSON).

Fields are bounded as for the JSON line (report/log.py: bound_strings), so an
entry stays far below the datagram limit.  A send that fails (journald
restarting, the socket gone) writes the JSON line to stderr instead: no
event is lost.  Everywhere else the log stays JSON or console lines.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any

from ..units import human_kib

JOURNAL_SOCKET = "/run/systemd/journal/socket"

# syslog priorities (sd-daemon.h: LOG_CRIT 2 ... LOG_DEBUG 7)
PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}

# MESSAGE_ID of each event kind that matters (fixed; `journalctl MESSAGE_ID=`).
MESSAGE_IDS = {
    "kill": "4e0b2c9f6a1d4c7e9d3b8a5f1e6c2d70",
    "escalate": "8c1f5a2e9b3d4f6a8e7c1b5d2a9f3e41",
    "victim_stuck": "2d7e9a4c1f8b4e3d9a6c5b2f7e1d8a62",
    "kernel_oom_kill": "b5a3e8d1c6f24a9e8b7d3c1f5a2e6d93",
    "reload_failed": "6f2a9c4e1d7b4a8c9e3f5b1d6a2c7e84",
    "low_memory": "9a4d2f7c3e1b4c6a8d5f9e2b7c1a3d55",
    "memory_recovered": "1c8e5b3a7f2d4e9c8a6b1d5f3e7c2a16",
}


def stderr_is_journal(stream_fd: int = 2, environ: dict[str, str] | None = None) -> bool:
    """True when ``$JOURNAL_STREAM`` names ``stream_fd``'s device and inode
    (systemd's documented test: the variable alone may be inherited)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(stream_fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def _mib(kib: Any) -> str:
    return human_kib(kib, 1) if isinstance(kib, int) else "?"


def message(fields: dict[str, Any]) -> str:
    """One line a person reads in ``journalctl``; the fields carry the rest."""
    ev = fields.get("event", "")
    f = fields.get
    who = f"{f('comm')} (pid {f('pid')}"
    if ev == "kill":
        verb = "Would kill" if f("dry_run") else "Killed"
        size = _mib((f("rss_kib") or 0) + (f("swap_kib") or 0))
        sig = "" if f("signal") in (None, "SIGTERM") else f" with {f('signal')}"
        return f"{verb} {who}, {size}){sig} to relieve memory: {f('reason')}"
    if ev == "escalate":
        return f"Sent SIGKILL to pid {f('pid')}: {f('reason')}"
    if ev == "victim_stuck":
        return f"Victim {who}) did not exit after SIGKILL; choosing another"
    if ev == "kernel_oom_kill":
        kind = "a memory cgroup's" if f("kind") == "memcg" else "the kernel's global"
        tail = "" if f("kind") == "memcg" else ": pyoomd did not prevent it"
        return f"{kind[0].upper()}{kind[1:]} OOM killer killed {who}){tail}"
    if ev == "reload_failed":
        return f"Reload failed, the running configuration stays: {f('error')}"
    if ev == "low_memory":
        return f"Low memory ({f('oom_level')}): {f('reason')}"
    if ev == "memory_recovered":
        return f"Memory recovered after {f('kills')} kill(s)"
    rest = " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("event", "level", "timestamp"))
    return f"{ev} {rest}".strip()


def _field_name(key: str) -> str:
    name = "".join(c if c.isalnum() else "_" for c in key.upper())
    return ("PYOOMD_" + name)[:64]


def _append(out: bytearray, name: str, value: str) -> None:
    data = value.encode("utf-8", "surrogateescape")
    if b"\n" in data:  # the protocol's binary form: name, newline, 64-bit LE length, data
        out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    else:
        out += name.encode() + b"=" + data + b"\n"


def entry(fields: dict[str, Any]) -> bytes:
    """The datagram for one event (``fields`` bounded, with event/level)."""
    out = bytearray()
    _append(out, "MESSAGE", message(fields))
    _append(out, "PRIORITY", str(PRIORITY.get(str(fields.get("level")), 6)))
    _append(out, "SYSLOG_IDENTIFIER", "pyoomd")
    mid = MESSAGE_IDS.get(str(fields.get("event")))
    if mid:
        _append(out, "MESSAGE_ID", mid)
    for key, value in fields.items():
        if key == "timestamp":
            continue  # the journal stamps every entry itself
        text = value if isinstance(value, str) else json.dumps(value, default=repr)
        _append(out, _field_name(key), text)
    return bytes(out)


class JournalSink:
    """Sends entries to journald's native socket; False when it cannot (the
    caller then writes the line to stderr)."""

    def __init__(self, path: str = JOURNAL_SOCKET) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def send(self, fields: dict[str, Any]) -> bool:
        try:
            self._sock.sendto(entry(fields), self.path)
        except OSError:
            return False
        return True

    def close(self) -> None:
        self._sock.close()
