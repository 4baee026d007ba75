"""The kernel's own OOM kills, read from /dev/kmsg.

When the kernel's OOM killer (the global one, or a memory cgroup's at its
limit) kills anyway, pyoomd reports it.  A ``KmsgFollower`` runs in its own
thread, blocked in ``poll`` on a non-blocking /dev/kmsg fd and a stop pipe:
nothing is added to the sampling path (the C idle wait and the tick never
look at it).  A kill found is handed to the daemon's loop through a callback
(the daemon queues it and wakes its idle wait), which logs the event.

The lines (mm/oom_kill.c; as recorded on 6.18 here, and the same since 5.x)::

    oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a/b,task_memcg=/a/b/c,task=COMM,pid=PID,uid=UID
    Memory cgroup out of memory: Killed process PID (COMM) total-vm:221580kB, anon-rss:7040kB, file-rss:6788kB, shmem-rss:57856kB, UID:0 pgtables:188kB oom_score_adj:0

The global killer writes ``Out of memory: Killed process ...`` (or ``Out of
memory (oom_kill_allocating_task): ...``) and ``,global_oom,`` in place of
``oom_memcg=``; the summary line comes just before the kill line, and only
when the OOM report is not rate-limited (then the memcg is unknown).  The
pid is as the kernel sees it: the initial PID namespace's.

COMM is the victim's ``comm``, 15 bytes anyone can set (``prctl``), with
spaces, commas, parentheses and ``=`` in it; /dev/kmsg escapes control bytes,
bytes >= 127 and the backslash as ``\\xNN``.  So the kill line is split at
the last ``) total-vm:`` (the fixed tail has no ``)``), and the summary is
matched against the COMM and pid of the kill line from its right end.

/dev/kmsg (Documentation/ABI/testing/dev-kmsg): one record per read, as
``PRIO,SEQ,USEC,FLAGS;MESSAGE`` plus continuation lines starting with a
space; ``lseek(SEEK_END)`` skips the records already there (so a restart
does not report old kills again); a read returns EPIPE when the ring
overwrote records we had not read yet (the next read goes on with the oldest
left: the loss is counted from the sequence numbers).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any

KMSG = "/dev/kmsg"
# A record is at most 8 KiB (CONSOLE_EXT_LOG_MAX); a smaller read gets EINVAL.
READ_SIZE = 8192
# A stand-in that is a file or a FIFO without a writer (tests) is read again
# this often; /dev/kmsg itself never reads as empty, it blocks.
EOF_RETRY_S = 0.2
# Lost records (the ring overwrote them) are reported at most this often.
OVERRUN_EVERY_S = 10.0
# Only lines with one of these are decoded at all (an OOM report is
# hundreds of lines of task list and memory state).
_SUMMARY = "oom-kill:"
_KILLED = ": Killed process "
# The kill line's prefixes, and the kind they mean.
KINDS = {"Out of memory": "global", "Out of memory (oom_kill_allocating_task)": "global",
         "Memory cgroup out of memory": "memcg"}
_SIZES = {"total-vm": "total_vm_kib", "anon-rss": "anon_rss_kib", "file-rss": "file_rss_kib",
          "shmem-rss": "shmem_rss_kib", "pgtables": "pgtables_kib"}


@dataclasses.dataclass(frozen=True, slots=True)
class KernelOomKill:
    """One kill by the kernel's OOM killer, as it logged it."""

    pid: int
    comm: str
    kind: str  # "global" | "memcg"
    memcg: str | None = None  # the cgroup whose limit was hit (memcg kind), from the summary line
    task_memcg: str | None = None  # the victim's memory cgroup, from the summary line
    constraint: str | None = None  # CONSTRAINT_NONE | _MEMCG | _CPUSET | _MEMORY_POLICY
    total_vm_kib: int | None = None
    anon_rss_kib: int | None = None
    file_rss_kib: int | None = None
    shmem_rss_kib: int | None = None
    pgtables_kib: int | None = None
    uid: int | None = None
    oom_score_adj: int | None = None
    seq: int | None = None  # the record's sequence number in the kernel log
    line: str = ""  # the kill line, as logged (escapes kept)

    def fields(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def unescape(text: str) -> str:
    """/dev/kmsg's ``\\xNN`` escapes back to bytes, decoded as UTF-8."""
    if "\\x" not in text:
        return text
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 3 < n and text[i + 1] == "x" and _is_hex(text[i + 2:i + 4]):
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            out += c.encode("utf-8", "surrogateescape")
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(s: str) -> bool:
    return len(s) == 2 and all(ch in "0123456789abcdefABCDEF" for ch in s)


def parse_record(raw: bytes) -> tuple[int | None, str] | None:
    """``PRIO,SEQ,USEC,FLAGS;MESSAGE`` -> (seq, message); None for a
    continuation line (leading space) or an empty one.  A line without the
    header (a plain-text stand-in) is taken whole, with no sequence."""
    if not raw or raw[:1] == b" ":
        return None
    text = raw.decode("ascii", "replace")
    head, sep, msg = text.partition(";")
    if sep:
        parts = head.split(",")
        if len(parts) >= 3 and parts[0].isdigit() and parts[1].isdigit():
            return int(parts[1]), msg
    return None, text


def parse_kill_line(msg: str) -> KernelOomKill | None:
    """``<prefix>: Killed process PID (COMM) total-vm:...`` -> the kill (no
    memcg yet), or None when ``msg`` is not one."""
    at = msg.find(_KILLED)
    if at < 0:
        return None
    kind = KINDS.get(msg[:at])
    if kind is None:
        return None
    rest = msg[at + len(_KILLED):]
    pid_s, sp, rest = rest.partition(" (")
    if not sp or not pid_s.isdigit():
        return None
    end = rest.rfind(") total-vm:")
    if end < 0:
        return None
    comm, tail = rest[:end], rest[end + 2:]
    values: dict[str, int] = {}
    for token in tail.replace(",", " ").split():
        key, colon, value = token.partition(":")
        if not colon:
            return None
        value = value.removesuffix("kB")
        try:
            number = int(value)
        except ValueError:
            return None
        if key in _SIZES:
            values[_SIZES[key]] = number
        elif key == "UID":
            values["uid"] = number
        elif key == "oom_score_adj":
            values["oom_score_adj"] = number
    if "total_vm_kib" not in values:
        return None
    return KernelOomKill(pid=int(pid_s), comm=unescape(comm), kind=kind, line=msg, **values)  # type: ignore[arg-type]


def apply_summary(kill: KernelOomKill, summary: str) -> KernelOomKill:
    """The memcg paths and constraint of ``summary`` (an ``oom-kill:`` line)
    added to ``kill`` when it names the same victim; ``kill`` unchanged
    otherwise.  The raw (escaped) COMM of the kill line is matched at the
    summary's end, so a COMM with ``,pid=`` in it cannot mislead."""
    raw_comm = kill.line[kill.line.find(" (") + 2:kill.line.rfind(") total-vm:")]
    suffix = f",task={raw_comm},pid={kill.pid},uid="
    at = summary.rfind(suffix)
    if not summary.startswith(_SUMMARY) or at < 0 or not summary[at + len(suffix):].isdigit():
        return kill
    head = summary[len(_SUMMARY):at]  # constraint=...,nodemask=...[,cpuset=..,mems_allowed=..],<memcgs>
    constraint = head.partition(",")[0].removeprefix("constraint=") if head.startswith("constraint=") else None
    memcg = task_memcg = None
    m = head.find(",oom_memcg=")
    g = head.find(",global_oom")
    if m >= 0:
        rest = head[m + len(",oom_memcg="):]
        splits = [i for i in _find_all(rest, ",task_memcg=")]
        # Cgroup names may hold ",task_memcg=" too: the split where the
        # victim's cgroup is at or below the one whose limit was hit.
        for i in splits:
            oom, task = rest[:i], rest[i + len(",task_memcg="):]
            if task == oom or task.startswith(oom.rstrip("/") + "/"):
                memcg, task_memcg = oom, task
                break
        else:
            if splits:
                memcg, task_memcg = rest[:splits[0]], rest[splits[0] + len(",task_memcg="):]
            else:
                memcg = rest
    elif g >= 0:
        rest = head[g + len(",global_oom"):]
        if rest.startswith(",task_memcg="):
            task_memcg = rest[len(",task_memcg="):]
    return dataclasses.replace(kill, constraint=constraint,
                               memcg=unescape(memcg) if memcg is not None else None,
                               task_memcg=unescape(task_memcg) if task_memcg is not None else None)


def _find_all(text: str, sub: str) -> list[int]:
    out, i = [], text.find(sub)
    while i >= 0:
        out.append(i)
        i = text.find(sub, i + 1)
    return out


class OomLines:
    """Kernel log messages in, kills out: remembers the last ``oom-kill:``
    summary for the kill line that follows it."""

    def __init__(self) -> None:
        self.summary: str | None = None

    def feed(self, msg: str, seq: int | None = None) -> KernelOomKill | None:
        if msg.startswith(_SUMMARY):
            self.summary = msg
            return None
        kill = parse_kill_line(msg)
        if kill is None:
            return None
        if self.summary is not None:  # kept: it names one pid, so a stale one never matches
            kill = apply_summary(kill, self.summary)
        return dataclasses.replace(kill, seq=seq)


# (severity, event, fields): what the follower hands the daemon.
Report = Callable[[str, str, dict[str, Any]], None]


class KmsgFollower:
    """Follows a kernel log (``path``: /dev/kmsg, or a file or FIFO standing
    in for it) from its end, in a thread; each kernel OOM kill becomes a
    ``kernel_oom_kill`` report, lost records a ``kernel_log_overrun`` one,
    and a read error a ``kernel_log_failed`` one (the thread then ends)."""

    def __init__(self, report: Report, path: str = KMSG) -> None:
        self.report = report
        self.path = path
        self.fd: int | None = None
        self.lines = OomLines()
        self.last_seq: int | None = None
        self.lost = 0  # records overwritten before we read them
        self.kills = 0
        self._buf = b""
        self._overrun = False
        self._overrun_said = -1e9
        self._prev = b""  # the last record read (its sequence number, after an overrun)
        self._thread: threading.Thread | None = None
        self._stop_r, self._stop_w = -1, -1

    def open(self) -> str | None:
        """Open ``path`` at its end: None, or why it cannot be followed."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            return f"{self.path}: {e.strerror or e}"
        try:
            os.lseek(fd, 0, os.SEEK_END)
        except OSError:
            pass  # a FIFO: there is no past to skip
        self.fd = fd
        return None

    def start(self) -> KmsgFollower:
        assert self.fd is not None, "open() first"
        self._stop_r, self._stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="pyoomd-kmsg", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            try:
                os.write(self._stop_w, b"x")
            except OSError:
                pass
            self._thread.join(5)
            self._thread = None
        for fd in (self._stop_r, self._stop_w):
            if fd >= 0:
                os.close(fd)
        self._stop_r = self._stop_w = -1
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _run(self) -> None:
        assert self.fd is not None
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            ready = dict(poller.poll())
            if self._stop_r in ready:
                return
            if not self.read_available():
                return
            # A file at its end or a FIFO without a writer: poll says ready
            # for ever (/dev/kmsg never reads empty); look again a little later.
            if self._at_eof and select.select([self._stop_r], [], [], EOF_RETRY_S)[0]:
                return

    _at_eof = False

    def read_available(self) -> bool:
        """Read what is there now and report the kills in it.  False when
        following must end (an error, reported)."""
        assert self.fd is not None
        self._at_eof = False
        while True:
            try:
                data = os.read(self.fd, READ_SIZE)
            except BlockingIOError:
                return True
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno == errno.EPIPE:  # the ring overwrote records we had not read
                    self._overrun = True
                    continue
                self.report("warning", "kernel_log_failed", {"path": self.path, "error": e.strerror or str(e),
                                                              "kills_seen": self.kills})
                return False
            if not data:
                self._at_eof = True
                return True
            self.feed(data)

    def feed(self, data: bytes) -> None:
        """Bytes read from the log: whole lines are parsed, a partial last
        line kept for the next read (a FIFO may cut records anywhere)."""
        buf = self._buf + data
        *lines, self._buf = buf.split(b"\n")
        for raw in lines:
            self._line(raw)

    def _line(self, raw: bytes) -> None:
        # Most records are not ours (an OOM report is a task list of one
        # line per process): they cost a reference and two substring tests
        # (measured: ~1 us a record, 10,000 in ~10 ms), the header is only
        # parsed for the lines we report and after lost records.
        if self._overrun:
            self._count_overrun(raw)
        self._prev = raw
        if b"oom-kill:" not in raw and b"Killed process " not in raw:
            return
        seq, usec, kernel = _header(raw)
        # Facility 0 only: what user space writes to /dev/kmsg gets facility
        # 1 (user) or more, whatever it asks for.
        if not kernel:
            return
        if seq is not None:
            if self.last_seq is not None and seq <= self.last_seq:
                return  # seen already
            self.last_seq = seq
        rec = parse_record(raw)
        if rec is None:
            return
        kill = self.lines.feed(rec[1], seq)
        if kill is not None:
            self.kills += 1
            fields = event_fields(kill)
            if usec is not None:
                # The record's time (printk's clock, local_clock: since boot, near
                # CLOCK_MONOTONIC but drifting from it by tens of ms on a VM after
                # hours up, so read_after_s can come out slightly negative) and
                # how long it took us to read it.
                fields["kernel_time_s"] = usec / 1e6
                fields["read_after_s"] = round(time.monotonic() - usec / 1e6, 4)
            self.report("warning" if kill.kind == "global" else "info", "kernel_oom_kill", fields)

    def _count_overrun(self, raw: bytes) -> None:
        """The first record after an EPIPE: the gap in sequence numbers
        since the one before it is what the ring overwrote."""
        self._overrun = False
        now_seq = _header(raw)[0]
        before = _header(self._prev)[0] if self._prev else None
        if now_seq is not None and before is not None and now_seq > before + 1:
            self.lost += now_seq - before - 1
        now = time.monotonic()
        if now - self._overrun_said >= OVERRUN_EVERY_S:  # an OOM storm may overrun the ring often
            self._overrun_said = now
            self.report("warning", "kernel_log_overrun", {"path": self.path, "lost_total": self.lost})


def _header(raw: bytes) -> tuple[int | None, int | None, bool]:
    """(seq, usec, from the kernel) of a ``PRIO,SEQ,USEC,FLAGS;`` record;
    (None, None, True) for a line without one (a plain stand-in)."""
    head = raw[:64]
    if b";" not in head or not raw[:1].isdigit():
        return None, None, True
    parts = head.partition(b";")[0].split(b",")
    try:
        return int(parts[1]), int(parts[2]), int(parts[0]) < 8
    except (IndexError, ValueError):
        return None, None, True


def event_fields(kill: KernelOomKill) -> dict[str, Any]:
    """The ``kernel_oom_kill`` event's fields; a global kill says that
    pyoomd did not prevent it."""
    f = kill.fields()
    if kill.kind == "global":
        f["message"] = (f"the kernel's OOM killer killed pid {kill.pid} ({kill.comm}): "
                        f"pyoomd did not prevent it")
    else:
        f["message"] = (f"memory cgroup {kill.memcg or '(unknown)'} hit its limit: the kernel killed "
                        f"pid {kill.pid} ({kill.comm})")
    return f
