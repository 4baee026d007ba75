"""Signal one victim through a pidfd: SIGTERM, wait, SIGKILL, release.

Identity is (pid, start time).  The pidfd is opened first and the start time
read after: if it matches, the pidfd refers to the process we chose, and every
signal through it reaches that process or nobody (no PID-reuse race).

Never re-sends SIGTERM: after the grace period (or as soon as the KILL level
is reached) the victim gets SIGKILL, then ``process_mrelease`` so its memory
comes back at once instead of when its exit finishes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ParseError
from ..model import Candidate, KillOutcome, Level
from ..sense import parse
from ..sense.procfs import Procfs

# process_mrelease(2), Linux 5.15; 448 on every architecture that has it
# (the unified syscall table from 424 on).
SYS_PROCESS_MRELEASE = 448
# While waiting for a victim, re-sample memory this often to escalate at once
# when the KILL level is reached: 5 ms costs < 1 % CPU during the grace.
WAIT_STEP_S = 0.005

Events = Callable[..., None]


@dataclass(frozen=True, slots=True)
class KillPlan:
    """How to act on one victim (resolved from settings and policy)."""

    grace_s: float
    kill_timeout_s: float
    dry_run: bool


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def process_mrelease(pidfd: int) -> int:
    """0 on success, else the errno (ENOSYS on old kernels, EINVAL if the
    victim is not yet dying).  Never raises."""
    if _LIBC is None:
        return errno.ENOSYS
    rc = _LIBC.syscall(SYS_PROCESS_MRELEASE, pidfd, 0)
    return 0 if rc == 0 else ctypes.get_errno()


class Killer:
    """Acts on victims.  ``resample`` returns the current level (re-reads memory)."""

    def __init__(self, procfs: Procfs, resample: Callable[[], Level], events: Events,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.procfs = procfs
        self.resample = resample
        self.events = events
        self.clock = clock

    def open_verified(self, pid: int, start_time: int) -> int | str:
        """A pidfd for (pid, start_time), or the reason there is none."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return "gone before the signal"
        except OSError as e:
            return f"pidfd_open failed: {os.strerror(e.errno or 0)}"
        try:
            st = parse.parse_stat(self.procfs.read_pid(pid, "stat", 4096), self.procfs.pid_file(pid, "stat"))
        except (OSError, ParseError):
            os.close(pidfd)
            return "gone before the signal"
        if st.start_time != start_time:
            os.close(pidfd)
            return "pid reused by another process"
        return pidfd

    def kill(self, victim: Candidate, plan: KillPlan,
             on_first: Callable[[str, Level], None] | None = None) -> KillOutcome:
        """Act on the victim.  ``on_first(signal_name, level)`` runs just before
        the first signal is sent (or would be, in dry-run): the victim's /proc
        entry is still there to describe it."""
        proc = victim.proc
        opened = self.open_verified(proc.pid, proc.start_time)
        if isinstance(opened, str):
            return KillOutcome(proc.pid, proc.comm, skipped=opened, dry_run=plan.dry_run)
        pidfd = opened
        try:
            level = self.resample()
            if level < Level.TERM:
                return KillOutcome(proc.pid, proc.comm, skipped="memory recovered", dry_run=plan.dry_run)
            first = signal.SIGKILL if level >= Level.KILL or victim.signal == "SIGKILL" else signal.SIGTERM
            if on_first is not None:
                on_first(first.name, level)
            if plan.dry_run:
                return KillOutcome(proc.pid, proc.comm, signals=(first.name,), dry_run=True,
                                   extra={"level": level.name})
            group = self._group_for(victim) if victim.kill_group else None
            return self._signal_and_wait(pidfd, victim, first, plan, level, group)
        finally:
            os.close(pidfd)

    def _group_for(self, victim: Candidate) -> int | None:
        """The process group to signal with the (already verified) victim, or
        None.  The pgid is read after the pidfd was verified: a pgid is not
        reused while any process is in that group.  Never our own group, nor
        init's: ``kill: group`` must not take pyoomd down with the victim."""
        pid = victim.proc.pid
        try:
            raw = self.procfs.read_pid(pid, "stat", 4096)
            pgid = parse.parse_stat(raw, self.procfs.pid_file(pid, "stat")).pgid
        except (OSError, ParseError):
            return None
        if pgid <= 1 or pgid == os.getpgrp():
            self.events("group_kill_refused", pid=pid, pgid=pgid,
                        reason="pyoomd's own process group" if pgid > 1 else "init's process group")
            return None
        return pgid

    def _signal_group(self, pgid: int | None, sig: signal.Signals) -> None:
        if pgid is None:
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass  # the whole group is gone already
        except OSError as e:
            self.events("group_kill_failed", pgid=pgid, signal=sig.name, error=os.strerror(e.errno or 0))

    def _signal_and_wait(self, pidfd: int, victim: Candidate, first: signal.Signals,
                         plan: KillPlan, level: Level, group: int | None = None) -> KillOutcome:
        proc = victim.proc
        t0 = self.clock()
        try:
            signal.pidfd_send_signal(pidfd, first)
        except ProcessLookupError:
            return KillOutcome(proc.pid, proc.comm, skipped="exited before the signal")
        self._signal_group(group, first)
        sent = [first.name]
        if first == signal.SIGTERM:
            grace = victim.grace_s if victim.grace_s is not None else plan.grace_s
            why = self._wait_term(pidfd, t0 + grace)
            if why is None:
                return self._exited(proc.pid, proc.comm, sent, t0, {"level": level.name})
            self.events("escalate", pid=proc.pid, comm=proc.comm, reason=why,
                        ms_after_sigterm=round((self.clock() - t0) * 1000, 1))
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                self._signal_group(group, signal.SIGKILL)
                return self._exited(proc.pid, proc.comm, sent, t0, {"level": level.name})
            self._signal_group(group, signal.SIGKILL)
            sent.append("SIGKILL")
        mrelease = process_mrelease(pidfd)
        exited = _wait_readable(pidfd, plan.kill_timeout_s)
        extra: dict[str, object] = {"level": level.name, "mrelease": os.strerror(mrelease) if mrelease else "ok"}
        if not exited:
            return KillOutcome(proc.pid, proc.comm, signals=tuple(sent), exited=False, extra=extra)
        return self._exited(proc.pid, proc.comm, sent, t0, extra)

    def _wait_term(self, pidfd: int, deadline: float) -> str | None:
        """Wait for exit after SIGTERM.  None if it exited; else why we escalate."""
        while True:
            now = self.clock()
            if now >= deadline:
                return "grace period over"
            if _wait_readable(pidfd, min(WAIT_STEP_S, deadline - now)):
                return None
            if self.resample() >= Level.KILL:
                return "KILL level reached"

    def _exited(self, pid: int, comm: str, sent: list[str], t0: float, extra: dict[str, object]) -> KillOutcome:
        ms = round((self.clock() - t0) * 1000, 1)
        return KillOutcome(pid, comm, signals=tuple(sent), exited=True, ms_to_exit=ms, extra=extra)


def _wait_readable(pidfd: int, timeout_s: float) -> bool:
    """True when the process behind pidfd has exited (the pidfd polls readable)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout_s * 1000 + 0.999))))
