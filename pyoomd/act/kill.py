"""Signal one victim through a pidfd: SIGTERM, wait, SIGKILL, release.

Identity is (pid, start time).  The pidfd is opened first and the start time
read after: if it matches, the pidfd refers to the process we chose, and every
signal through it reaches that process or nobody (no PID-reuse race).

Never re-sends SIGTERM: after the grace period (or as soon as the KILL level
is reached) the victim gets SIGKILL, then ``process_mrelease`` so its memory
comes back at once instead of when its exit finishes.

Just before each signal the target is read again (``Guard.recheck``): the
same start time (identity), ``oom_score_adj`` not -1000, and not protected by
policy (or an omitted cgroup) now.  A victim that execs a protected binary
during its grace is not SIGKILLed.

``kill: group`` signals the victim's process group member by member, each
through a pidfd verified as above and checked the same way: a member with
``oom_score_adj`` -1000 or protected by policy is spared.  Every member
signalled (``group_member_signalled``) and spared (``group_member_spared``)
is logged.  No ``killpg``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ParseError
from ..model import Candidate, KillOutcome, Level, ProcInfo
from ..sense import parse, snapshot
from ..sense.procfs import Procfs
from .escalate import WAIT_STEP_S, Resample, first_signal, grace_of, wait_term
from .escalate import wait_readable as _wait_readable

__all__ = ["WAIT_STEP_S", "Guard", "KillPlan", "Killer", "_wait_readable", "process_mrelease"]

# process_mrelease(2), Linux 5.15; 448 on every architecture that has it
# (the unified syscall table from 424 on).
SYS_PROCESS_MRELEASE = 448
Events = Callable[..., None]
OOM_SCORE_ADJ_MIN = -1000
# Why a process must be spared now (policy protect, omitted cgroup), or None.
SpareCheck = Callable[[ProcInfo], "str | None"]


class Guard:
    """The last look before a signal: identity, -1000, policy.

    ``spare`` is the daemon's policy check (the same Scoring the choice
    used), read at each call so a reload takes effect."""

    def __init__(self, procfs: Procfs, spare: SpareCheck | None = None) -> None:
        self.procfs = procfs
        self.spare = spare

    def why_spare(self, info: ProcInfo) -> str | None:
        if info.oom_score_adj <= OOM_SCORE_ADJ_MIN:
            return "oom_score_adj is -1000 (never killed)"
        return self.spare(info) if self.spare is not None else None

    def recheck(self, pid: int, start_time: int) -> tuple[ProcInfo | None, str | None]:
        """(what the process is now, why it must not get a signal now or None)."""
        info = snapshot.read_proc(self.procfs, pid)
        if info is None:
            return None, "gone"
        if info.start_time != start_time:
            return None, "pid reused by another process"
        return info, self.why_spare(info)


@dataclass
class GroupMember:
    """A verified member of the victim's process group."""

    pid: int
    start_time: int
    comm: str
    pidfd: int


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

    def __init__(self, procfs: Procfs, resample: Resample, events: Events,
                 clock: Callable[[], float] = time.monotonic, guard: Guard | None = None) -> None:
        self.procfs = procfs
        self.resample = resample
        self.events = events
        self.clock = clock
        self.guard = guard or Guard(procfs)

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
            first = first_signal(level, victim)
            _, why = self.guard.recheck(proc.pid, proc.start_time)
            if why == "gone":
                return KillOutcome(proc.pid, proc.comm, skipped="gone before the signal", dry_run=plan.dry_run)
            if why is not None:
                self.events("kill_spared", pid=proc.pid, comm=proc.comm, signal=first.name, reason=why)
                return KillOutcome(proc.pid, proc.comm, skipped=f"spared before {first.name}: {why}",
                                   dry_run=plan.dry_run)
            if on_first is not None:
                on_first(first.name, level)
            pgid = self._group_for(victim) if victim.kill_group else None
            if plan.dry_run:
                if pgid is not None:  # who would go with it, and who would be spared
                    self._close(self._group_members(pgid, proc.pid, first, dry_run=True))
                return KillOutcome(proc.pid, proc.comm, signals=(first.name,), dry_run=True,
                                   extra={"level": level.name})
            return self._signal_and_wait(pidfd, victim, first, plan, level, pgid)
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

    def _group_members(self, pgid: int, victim_pid: int, sig: signal.Signals, known: set[int] | None = None,
                       dry_run: bool = False) -> list[GroupMember]:
        """Verified pidfds for the other members of process group ``pgid``
        (not in ``known``); the spared ones are logged and left out."""
        ours = {1, os.getpid(), os.getppid(), self.procfs.self_pid, victim_pid}
        out: list[GroupMember] = []
        try:
            pids = self.procfs.pids()
        except OSError as e:
            self.events("group_kill_failed", pgid=pgid, signal=sig.name, error=os.strerror(e.errno or 0))
            return out
        for pid in pids:
            if pid in ours or (known is not None and pid in known):
                continue
            try:
                st = parse.parse_stat(self.procfs.read_pid(pid, "stat", 4096), self.procfs.pid_file(pid, "stat"))
            except (OSError, ParseError):
                continue
            if st.pgid != pgid:
                continue
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue  # gone
            info, why = self.guard.recheck(pid, st.start_time)  # read after the pidfd: it is this process
            if info is None or info.pgid != pgid:
                os.close(pidfd)  # gone, reused, a zombie, or left the group
                continue
            if why is not None:
                os.close(pidfd)
                self.events("group_member_spared", pid=pid, comm=info.comm, pgid=pgid, leader=victim_pid,
                            signal=sig.name, reason=why, dry_run=dry_run)
                continue
            if dry_run:
                self.events("group_member_signalled", pid=pid, comm=info.comm, pgid=pgid, leader=victim_pid,
                            signal=sig.name, dry_run=True)
            out.append(GroupMember(pid, info.start_time, info.comm, pidfd))
        return out

    def _signal_members(self, members: list[GroupMember], pgid: int, leader: int, sig: signal.Signals) -> None:
        """Each member through its pidfd, after a last look at it."""
        for m in members:
            _, why = self.guard.recheck(m.pid, m.start_time)
            if why == "gone":
                continue
            if why is not None:
                self.events("group_member_spared", pid=m.pid, comm=m.comm, pgid=pgid, leader=leader,
                            signal=sig.name, reason=why, dry_run=False)
                continue
            try:
                signal.pidfd_send_signal(m.pidfd, sig)
            except ProcessLookupError:
                continue  # exited meanwhile
            except OSError as e:
                self.events("group_kill_failed", pid=m.pid, pgid=pgid, signal=sig.name,
                            error=os.strerror(e.errno or 0))
                continue
            self.events("group_member_signalled", pid=m.pid, comm=m.comm, pgid=pgid, leader=leader,
                        signal=sig.name, dry_run=False)

    def _signal_group(self, pgid: int | None, leader: int, sig: signal.Signals,
                      members: list[GroupMember]) -> None:
        """``sig`` to the group's members: those known, and any that joined
        since (forked during the grace)."""
        if pgid is None:
            return
        members += self._group_members(pgid, leader, sig, known={m.pid for m in members})
        self._signal_members(members, pgid, leader, sig)

    @staticmethod
    def _close(members: list[GroupMember]) -> None:
        for m in members:
            os.close(m.pidfd)

    def _signal_and_wait(self, pidfd: int, victim: Candidate, first: signal.Signals,
                         plan: KillPlan, level: Level, group: int | None = None) -> KillOutcome:
        members: list[GroupMember] = []
        try:
            return self._signal_and_wait_members(pidfd, victim, first, plan, level, group, members)
        finally:
            self._close(members)

    def _signal_and_wait_members(self, pidfd: int, victim: Candidate, first: signal.Signals, plan: KillPlan,
                                 level: Level, group: int | None, members: list[GroupMember]) -> KillOutcome:
        proc = victim.proc
        t0 = self.clock()
        try:
            signal.pidfd_send_signal(pidfd, first)
        except ProcessLookupError:
            return KillOutcome(proc.pid, proc.comm, skipped="exited before the signal")
        self._signal_group(group, proc.pid, first, members)
        sent = [first.name]
        if first == signal.SIGTERM:
            why = wait_term(lambda t: _wait_readable(pidfd, t), t0 + grace_of(victim, plan.grace_s),
                            self.clock, self.resample)
            if why is None:
                return self._exited(proc.pid, proc.comm, sent, t0, {"level": level.name})
            self.events("escalate", pid=proc.pid, comm=proc.comm, reason=why,
                        ms_after_sigterm=round((self.clock() - t0) * 1000, 1))
            _, spare = self.guard.recheck(proc.pid, proc.start_time)
            if spare is not None and spare != "gone":  # e.g. exec'd a protected binary during the grace
                self.events("kill_spared", pid=proc.pid, comm=proc.comm, signal="SIGKILL", reason=spare)
                self._signal_group(group, proc.pid, signal.SIGKILL, members)
                return KillOutcome(proc.pid, proc.comm, signals=tuple(sent), exited=False,
                                   skipped=f"spared before SIGKILL: {spare}",
                                   extra={"level": level.name})
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                self._signal_group(group, proc.pid, signal.SIGKILL, members)
                return self._exited(proc.pid, proc.comm, sent, t0, {"level": level.name})
            self._signal_group(group, proc.pid, signal.SIGKILL, members)
            sent.append("SIGKILL")
        mrelease = process_mrelease(pidfd)
        exited = _wait_readable(pidfd, plan.kill_timeout_s)
        extra: dict[str, object] = {"level": level.name, "mrelease": os.strerror(mrelease) if mrelease else "ok"}
        if not exited:
            return KillOutcome(proc.pid, proc.comm, signals=tuple(sent), exited=False, extra=extra)
        return self._exited(proc.pid, proc.comm, sent, t0, extra)

    def _exited(self, pid: int, comm: str, sent: list[str], t0: float, extra: dict[str, object]) -> KillOutcome:
        ms = round((self.clock() - t0) * 1000, 1)
        return KillOutcome(pid, comm, signals=tuple(sent), exited=True, ms_to_exit=ms, extra=extra)

