"""Group kill: every process of one cgroup, and nothing outside it.

Used when the victim's cgroup has ``memory.oom.group = 1`` (the kernel's own
rule: the workload cannot run partly) or a setting/policy asks for
``kill: cgroup``.  Done as pyoomd does single kills:

1. list ``cgroup.procs``; open a pidfd for each member and check, through
   ``/proc/PID/cgroup`` read after the pidfd was opened, that it is still in
   this cgroup (so each pidfd refers to a member: no PID-reuse race); read
   it (``kill.Guard``): members at -1000 or protected by policy are spared,
   each logged (``group_member_spared``);
2. SIGTERM to each member through its pidfd (unless the level is KILL or the
   policy says SIGKILL); wait for all of them, up to the grace, escalating at
   once if the KILL level is reached;
3. SIGKILL to whoever is left: by writing ``1`` to ``cgroup.kill`` (Linux
   5.14; also catches children forked meanwhile) when no member is spared,
   else one by one through pidfds (cgroup.kill would kill a spared member),
   each looked at again just before its signal, each logged
   (``group_member_signalled``);
4. ``process_mrelease`` each, and wait for the exits.

Never acts on a cgroup that holds pid 1, pyoomd itself or its parent, nor on
the root cgroup: then the caller falls back to a single-process kill.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ParseError
from ..model import Candidate, KillOutcome, Level
from ..sense import parse, snapshot
from ..sense.cgroup import CgroupRef, Cgroups
from ..sense.procfs import Procfs
from .escalate import Resample, first_signal, grace_of, wait_term
from .kill import OOM_SCORE_ADJ_MIN, Guard, KillPlan, process_mrelease

Sender = Callable[[int, int], None]
_ADJ_WHY = "oom_score_adj is -1000 (never killed)"


@dataclass
class Member:
    pid: int
    pidfd: int
    adj: int
    start_time: int = 0
    comm: str = ""
    why_spared: str | None = None  # -1000, or protected by policy

    @property
    def spared(self) -> bool:
        return self.adj <= OOM_SCORE_ADJ_MIN or self.why_spared is not None


class GroupKiller:
    """``send(pidfd, sig)`` and ``write_kill(path)`` are the I/O seams tests replace."""

    def __init__(self, procfs: Procfs, cgroups: Cgroups, resample: Resample,
                 events: Callable[..., None], clock: Callable[[], float] = time.monotonic,
                 send: Sender = signal.pidfd_send_signal,
                 write_kill: Callable[[str], None] | None = None, guard: Guard | None = None) -> None:
        self.procfs = procfs
        self.cgroups = cgroups
        self.resample = resample
        self.events = events
        self.clock = clock
        self.send = send
        self.write_kill = write_kill or _write_one
        self.guard = guard or Guard(procfs)

    def refuse(self, cg: CgroupRef) -> str | None:
        """Why this cgroup must not be killed whole, or None."""
        if cg.path.strip("/") == "":
            return "root cgroup"
        ours = {1, os.getpid(), os.getppid(), self.procfs.self_pid}
        members = set(self.cgroups.members(cg))
        if not members:
            return "no members (cgroup gone or unreadable)"
        if members & ours:
            return "holds pid 1 or pyoomd itself"
        return None

    def open_members(self, cg: CgroupRef, known: set[int] | None = None) -> list[Member]:
        """Verified pidfds for the members (skipping pids in ``known``)."""
        out = []
        for pid in self.cgroups.members(cg):
            if known is not None and pid in known:
                continue
            m = self._open_member(pid, cg)
            if m is not None:
                out.append(m)
        return out

    def _open_member(self, pid: int, cg: CgroupRef) -> Member | None:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None  # gone
        try:
            v2, v1 = parse.parse_cgroup(self.procfs.read_pid(pid, "cgroup", 1 << 16))
            adj = parse.parse_int_file(self.procfs.read_pid(pid, "oom_score_adj", 64),
                                       self.procfs.pid_file(pid, "oom_score_adj"), "oom_score_adj")
        except (OSError, ParseError):
            os.close(pidfd)
            return None
        if (v2 if cg.v2 else v1) != cg.path:
            os.close(pidfd)
            return None  # moved out, or the pid was reused outside the cgroup
        info = snapshot.read_proc(self.procfs, pid)
        if info is None:  # a zombie: nothing to signal (or gone)
            os.close(pidfd)
            return None
        return Member(pid, pidfd, adj, info.start_time, info.comm, self.guard.why_spare(info))

    def kill(self, victim: Candidate, cg: CgroupRef, why: str, plan: KillPlan,
             on_first: Callable[[str, Level], None] | None = None) -> KillOutcome:
        proc = victim.proc
        members = self.open_members(cg)
        try:
            if not any(m.pid == proc.pid for m in members):
                return KillOutcome(proc.pid, proc.comm, skipped="victim left its cgroup", dry_run=plan.dry_run)
            level = self.resample()
            if level < Level.TERM:
                return KillOutcome(proc.pid, proc.comm, skipped="memory recovered", dry_run=plan.dry_run)
            first = first_signal(level, victim)
            spared = [m.pid for m in members if m.spared]
            mode = "cgroup.kill" if not spared and self.cgroups.kill_file(cg) else "pidfd each"
            if on_first is not None:
                on_first(first.name, level)
            for m in members:
                if m.spared:
                    self.events("group_member_spared", pid=m.pid, comm=m.comm, cgroup=cg.path, leader=proc.pid,
                                signal=first.name, reason=m.why_spared or _ADJ_WHY, dry_run=plan.dry_run)
            self.events("group_kill", pid=proc.pid, cgroup=cg.path, why=why, signal=first.name,
                        members=sorted(m.pid for m in members if not m.spared), spared=spared,
                        kill_mode=mode, dry_run=plan.dry_run)
            extra: dict[str, object] = {"level": level.name, "cgroup": cg.path, "spared": spared, "mode": mode}
            if plan.dry_run:
                return KillOutcome(proc.pid, proc.comm, signals=(first.name,), dry_run=True, extra=extra)
            return self._run(victim, cg, members, first, plan, extra)
        finally:
            for m in members:
                os.close(m.pidfd)

    def _run(self, victim: Candidate, cg: CgroupRef, members: list[Member], first: signal.Signals,
             plan: KillPlan, extra: dict[str, object]) -> KillOutcome:
        proc = victim.proc
        t0 = self.clock()
        targets = [m for m in members if not m.spared]
        sent = [first.name]
        if first == signal.SIGTERM:
            targets = self._signal(targets, signal.SIGTERM, cg, proc.pid)
            why = wait_term(lambda t: _wait_all(targets, t, self.clock), t0 + grace_of(victim, plan.grace_s),
                            self.clock, self.resample)
            if why is None:
                return self._done(proc.pid, proc.comm, sent, t0, True, extra)
            self.events("escalate", pid=proc.pid, comm=proc.comm, cgroup=cg.path, reason=why,
                        ms_after_sigterm=round((self.clock() - t0) * 1000, 1))
            sent.append("SIGKILL")
        late = self.open_members(cg, known={m.pid for m in members})  # forked meanwhile
        try:
            for m in late:
                if m.spared:
                    self._spared(m, cg, proc.pid, "SIGKILL", m.why_spared or _ADJ_WHY)
            targets += [m for m in late if not m.spared]
            # The last look at each (exec'd a protected binary during the grace?).
            rechecked = self._recheck(targets, cg, proc.pid, signal.SIGKILL)
            nobody_spared = len(rechecked) == len(targets) and not any(m.spared for m in late)
            targets = rechecked
            if extra["mode"] == "cgroup.kill" and nobody_spared:
                kill_file = self.cgroups.kill_file(cg)
                assert kill_file is not None
                self.write_kill(kill_file)
                for m in targets:
                    self.events("group_member_signalled", pid=m.pid, comm=m.comm, cgroup=cg.path,
                                leader=proc.pid, signal="SIGKILL", via="cgroup.kill", dry_run=False)
            else:
                extra["mode"] = "pidfd each"
                self._signal(targets, signal.SIGKILL, cg, proc.pid, recheck=False)
            for m in targets:
                process_mrelease(m.pidfd)
            exited = _wait_all(targets, plan.kill_timeout_s, self.clock)
        finally:
            for m in late:
                os.close(m.pidfd)
        return self._done(proc.pid, proc.comm, sent, t0, exited, extra)

    def _spared(self, m: Member, cg: CgroupRef, leader: int, sig: str, why: str, dry_run: bool = False) -> None:
        self.events("group_member_spared", pid=m.pid, comm=m.comm, cgroup=cg.path, leader=leader,
                    signal=sig, reason=why, dry_run=dry_run)

    def _recheck(self, targets: list[Member], cg: CgroupRef, leader: int, sig: signal.Signals) -> list[Member]:
        """The targets still to be signalled after a last look at each: those
        gone are dropped quietly, those now spared are logged and dropped."""
        out = []
        for m in targets:
            _, why = self.guard.recheck(m.pid, m.start_time)
            if why == "gone":
                continue
            if why is not None:
                m.why_spared = why
                self._spared(m, cg, leader, sig.name, why)
                continue
            out.append(m)
        return out

    def _signal(self, targets: list[Member], sig: signal.Signals, cg: CgroupRef, leader: int,
                recheck: bool = True) -> list[Member]:
        """``sig`` to each target through its pidfd (after a last look at
        it); the targets signalled."""
        out = []
        for m in self._recheck(targets, cg, leader, sig) if recheck else targets:
            try:
                self.send(m.pidfd, sig)
            except ProcessLookupError:
                continue  # already gone
            self.events("group_member_signalled", pid=m.pid, comm=m.comm, cgroup=cg.path, leader=leader,
                        signal=sig.name, via="pidfd", dry_run=False)
            out.append(m)
        return out

    def _done(self, pid: int, comm: str, sent: list[str], t0: float, exited: bool,
              extra: dict[str, object]) -> KillOutcome:
        ms = round((self.clock() - t0) * 1000, 1) if exited else None
        return KillOutcome(pid, comm, signals=tuple(sent), exited=exited, ms_to_exit=ms, extra=extra)


def _wait_all(members: list[Member], timeout_s: float, clock: Callable[[], float]) -> bool:
    """True when every member's pidfd polls readable (exited) within timeout."""
    pending = {m.pidfd for m in members}
    deadline = clock() + timeout_s
    while pending:
        poller = select.poll()
        for fd in pending:
            poller.register(fd, select.POLLIN)
        ready = poller.poll(max(0, int((deadline - clock()) * 1000 + 0.999)))
        if not ready:
            return False  # the timeout passed
        pending -= {fd for fd, _ in ready}
    return True


def _write_one(path: str) -> None:
    with open(path, "w") as f:
        f.write("1")
