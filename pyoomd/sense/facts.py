"""Richer facts about a few processes, through psutil: the user's name and
USS/PSS/swap (``psutil.Process.memory_full_info``, /proc/PID/smaps_rollup).

Not for the hot path: the scan of every pid, the lazy ranking and growth
following stay on ``Procfs`` (one small read each).  smaps_rollup walks the
page tables of the whole process under its mmap lock: 50-90 ms for a
1.5 GiB process here.  So this is read only for the rows a tool shows
(``rank``, ``explain``, ``watch``, ``status``) and, in the daemon, for the
likely victim during the approach to TERM (``FreesReader``, in a thread,
never between the crossing and the SIGTERM).

psutil is imported at the first read, not with this module: the idle daemon
never loads it (tests/test_loop.py).

``frees_kib``: what a process's death gives back, USS + swap.  Shared pages
(libraries, shared memory, pages shared with a parent since fork) stay with
the other processes that map them; RSS counts them, USS does not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import ParseError
from ..model import ProcInfo
from . import parse
from .procfs import Procfs


class Facts(NamedTuple):
    """What psutil read about one process; ``why`` (then every other field
    None) when it could not: the process is gone, or we may not read it."""

    user: str | None = None
    uss_kib: int | None = None
    pss_kib: int | None = None
    swap_kib: int | None = None
    rss_kib: int | None = None  # RSS at the read (statm), for estimating growth since
    why: str | None = None

    @property
    def frees_kib(self) -> int | None:
        """USS + swap: what this process's death frees."""
        if self.uss_kib is None or self.swap_kib is None:
            return None
        return self.uss_kib + self.swap_kib

    def as_dict(self) -> dict[str, Any]:
        """For JSON output (rank, explain, watch)."""
        return {"user": self.user, "uss_kib": self.uss_kib, "pss_kib": self.pss_kib,
                "swap_kib": self.swap_kib, "frees_kib": self.frees_kib, "why": self.why}


GONE = "gone"
DENIED = "denied"
_psutil_lock = threading.Lock()  # psutil.PROCFS_PATH is one global


def _start_time(procfs: Procfs, pid: int) -> int | None:
    try:
        return parse.parse_stat(procfs.read_pid(pid, "stat", 4096), procfs.pid_file(pid, "stat")).start_time
    except (OSError, ParseError):
        return None


def read_facts(procfs: Procfs, pid: int, start_time: int | None = None) -> Facts:
    """``pid``'s user name and USS/PSS/swap.  With ``start_time``, a pid
    reused by another process (before or during the read) is ``gone``.
    Never raises for a process that vanished or that we may not read."""
    import psutil  # lazily: see the module's docstring

    try:
        with _psutil_lock:  # the Process keeps the path it was made with; psutil's global is put back
            saved, psutil.PROCFS_PATH = psutil.PROCFS_PATH, procfs.root
            try:
                proc = psutil.Process(pid)
            finally:
                psutil.PROCFS_PATH = saved
        with proc.oneshot():
            user = proc.username()
            mem = proc.memory_full_info()
    except psutil.AccessDenied:
        return Facts(why=DENIED)
    except (psutil.Error, OSError, ValueError):  # NoSuchProcess, ZombieProcess; odd files in a fixture tree
        return Facts(why=GONE)
    if start_time is not None and _start_time(procfs, pid) != start_time:
        return Facts(why=GONE)  # read after the facts: they were this process's
    return Facts(user=user, uss_kib=mem.uss // 1024, pss_kib=mem.pss // 1024, swap_kib=mem.swap // 1024,
                 rss_kib=mem.rss // 1024)


def facts_for(procfs: Procfs, procs: list[ProcInfo]) -> list[Facts]:
    """Facts of each of ``procs`` (the rows a tool shows), identity checked."""
    return [read_facts(procfs, p.pid, p.start_time) for p in procs]


def user_name(uid: int | None) -> str:
    """The name of ``uid`` as psutil's ``username()`` gives it (the passwd
    entry, else the number): for rows of processes that are gone."""
    if uid is None:
        return "-"
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return str(uid)


def kib_cell(kib: int | None) -> str:
    """A KiB figure as MiB for a table, ``-`` when unknown."""
    return "-" if kib is None else f"{kib / 1024:.1f}"


class Reading(NamedTuple):
    """One read of a process's facts in the daemon."""

    identity: tuple[int, int]
    facts: Facts
    at: float  # monotonic seconds at the end of the read
    ms: float  # how long psutil took

    def frees_now(self, rss_kib: int, swap_kib: int) -> int | None:
        """What the process frees now, ``rss_kib`` and ``swap_kib`` read since
        (status): USS + swap at the read plus what RSS + swap grew by since
        (memory it took since is its own: a leak allocates private pages)."""
        f = self.facts
        base = f.frees_kib
        if base is None or f.rss_kib is None or f.swap_kib is None:
            return None
        return base + max(0, (rss_kib + swap_kib) - (f.rss_kib + f.swap_kib))


class FreesReader:
    """The daemon's reads of what its likely victim would free.

    ``want(proc)`` asks for a read of ``proc``; with ``threaded`` it is done
    in one worker thread (started at the first request), so the loop never
    waits for smaps_rollup: a request made while a read is under way
    replaces any pending one.  Without (tests with an injected clock), the
    read is done at once in the caller.  ``reading(identity)`` is the last
    read of that process, if any."""

    KEEP = 4  # readings kept (the last few top candidates)

    def __init__(self, procfs: Procfs, threaded: bool,
                 read: Callable[[Procfs, int, int | None], Facts] = read_facts,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.procfs = procfs
        self.threaded = threaded
        self._read = read
        self.clock = clock
        self._readings: dict[tuple[int, int], Reading] = {}
        self._pending: tuple[int, int] | None = None
        self._busy: tuple[int, int] | None = None  # being read now (threaded)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def want(self, proc: ProcInfo, max_age_s: float = 0.0) -> None:
        """Ask for a read of ``proc`` unless one younger than ``max_age_s``
        is there (``Reading.frees_now`` follows its growth since) or under way."""
        ident = (proc.pid, proc.start_time)
        with self._cond:
            have = self._readings.get(ident)
            if (have is not None and self.clock() - have.at < max_age_s) or ident in (self._pending, self._busy):
                return
        if not self.threaded:
            self._store(self._read_one(ident))
            return
        with self._cond:
            if self._closed:
                return
            self._pending = ident
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="pyoomd-frees", daemon=True)
                self._thread.start()
            self._cond.notify()

    def reading(self, identity: tuple[int, int]) -> Reading | None:
        with self._cond:
            return self._readings.get(identity)

    def forget(self, identity: tuple[int, int]) -> None:
        with self._cond:
            self._readings.pop(identity, None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(2.0)

    def _read_one(self, ident: tuple[int, int]) -> Reading:
        t0 = time.perf_counter()
        facts = self._read(self.procfs, ident[0], ident[1])
        return Reading(ident, facts, self.clock(), round((time.perf_counter() - t0) * 1000, 1))

    def _store(self, r: Reading) -> None:
        with self._cond:
            self._readings.pop(r.identity, None)
            if r.facts.why is None:
                self._readings[r.identity] = r
            while len(self._readings) > self.KEEP:
                del self._readings[next(iter(self._readings))]  # the oldest

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                ident, self._pending = self._pending, None
                self._busy = ident
            assert ident is not None
            try:
                r = self._read_one(ident)
            except Exception as e:  # noqa: BLE001 - a failed read leaves the fallback in force, never a dead thread
                r = Reading(ident, Facts(why=f"error: {e!r}"), self.clock(), 0.0)
            self._store(r)
            with self._cond:
                self._busy = None
