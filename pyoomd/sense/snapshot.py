"""The process table, read lazily (earlyoom's trick, made exact).

Pass 1 reads only ``oom_score`` for every pid: one small read each.  Pass 2
reads the rest (stat, status, oom_score_adj, then cmdline, exe, cgroup, the
parent's comm and what the policy matchers' registry asks for: cwd) in
descending oom_score order, and stops as soon as no unread process can still
reach the top: its raw score plus the largest bonus any policy can add is
below the N-th best badness found so far.  With no policies that is usually
after the first few processes, whatever the size of the table.

Skipped: pid 1, pyoomd itself and its parent, kernel threads, zombies.  A
process that vanishes mid-read is skipped, never an error.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ParseError
from ..model import Candidate, Excluded, ProcInfo
from ..policy.matchers import READ_FACTS
from . import parse
from .procfs import Procfs

PF_KTHREAD = 0x00200000  # include/linux/sched.h: "I am a kernel thread"
ZOMBIE_STATES = ("Z", "X", "x")  # exited: zombie, dead (fs/proc/array.c task_state_array)

Scorer = Callable[[ProcInfo], "Candidate | Excluded"]


@dataclass
class Table:
    """What one lazy scan found."""

    candidates: list[Candidate] = field(default_factory=list)  # unordered: rank.order() sorts
    excluded: list[Excluded] = field(default_factory=list)
    scanned: int = 0  # pids whose oom_score was read
    detailed: int = 0  # pids fully read


def read_scores(procfs: Procfs, skip: set[int]) -> list[tuple[int, int]]:
    """(oom_score, pid) for every readable pid not in ``skip``, best first."""
    out: list[tuple[int, int]] = []
    try:
        pids = procfs.pids()
    except OSError:
        return out  # /proc unlistable (EMFILE, ENOMEM under pressure): nobody this time; never abort the tick
    for pid in pids:
        if pid in skip:
            continue
        try:
            raw = procfs.read_pid(pid, "oom_score", 64)
            out.append((parse.parse_int_file(raw, procfs.pid_file(pid, "oom_score"), "oom_score"), pid))
        except (OSError, ParseError):
            continue  # gone, or not ours to read: not a candidate
    out.sort(reverse=True)
    return out


def read_proc(procfs: Procfs, pid: int, oom_score: int | None = None, full: bool = True) -> ProcInfo | None:
    """Everything about one process, or None if it is gone, a kernel thread or
    a zombie.  ``full`` adds the expensive fields (cmdline, exe, cgroup, cwd)."""
    read = _stat_status(procfs, pid)
    if read is None:
        return None
    st, status = read
    try:
        if oom_score is None:
            oom_score = _read_int(procfs, pid, "oom_score")
        adj = _read_int(procfs, pid, "oom_score_adj")
    except (OSError, ParseError):
        return None
    info = ProcInfo(
        pid=pid, start_time=st.start_time, comm=st.comm, ppid=st.ppid, state=st.state,
        uid=status.uid, rss_kib=status.rss_kib, swap_kib=status.swap_kib,
        oom_score=oom_score, oom_score_adj=adj, pgid=st.pgid,
    )
    return _with_details(procfs, info) if full else info


def _stat_status(procfs: Procfs, pid: int) -> tuple[parse.StatFields, parse.StatusFields] | None:
    """stat and status of a process, or None if gone, a kernel thread or a
    zombie.  A leader that exited while its other threads still run keeps
    the memory (and its oom_score): still a candidate; its own status has no
    VmRSS, so a live thread's (the shared mm's) is read instead."""
    try:
        st = parse.parse_stat(procfs.read_pid(pid, "stat", 4096), procfs.pid_file(pid, "stat"))
        if st.flags & PF_KTHREAD:
            return None
        status_file = "status"
        if st.state in ZOMBIE_STATES:
            live = _live_thread(procfs, pid)
            if live is None:
                return None  # a real zombie: nothing to free
            status_file = f"task/{live}/status"
        status = parse.parse_status(procfs.read_pid(pid, status_file, 16384), procfs.pid_file(pid, status_file))
    except (OSError, ParseError):
        return None
    return st, status


def _live_thread(procfs: Procfs, pid: int) -> int | None:
    """A thread of ``pid`` that is not a zombie, or None (all have exited)."""
    try:
        tids = procfs.tids(pid)
    except OSError:
        return None
    for tid in tids:
        name = f"task/{tid}/stat"
        try:
            st = parse.parse_stat(procfs.read_pid(pid, name, 4096), procfs.pid_file(pid, name))
        except (OSError, ParseError):
            continue  # that thread just exited
        if st.state not in ZOMBIE_STATES:
            return tid
    return None


def _read_int(procfs: Procfs, pid: int, name: str) -> int:
    return parse.parse_int_file(procfs.read_pid(pid, name, 64), procfs.pid_file(pid, name), name)


def _with_details(procfs: Procfs, info: ProcInfo) -> ProcInfo:
    pid = info.pid
    cmdline = exe = cgroup = None
    try:
        cmdline = parse.parse_cmdline(procfs.read_pid(pid, "cmdline", 1 << 16))
    except OSError:
        pass
    try:
        exe = procfs.readlink_pid(pid, "exe")
    except OSError:
        pass  # EACCES for another user's process without CAP_SYS_PTRACE
    try:
        v2, v1 = parse.parse_cgroup(procfs.read_pid(pid, "cgroup", 1 << 16))
        cgroup = v2 if v2 is not None else v1
    except (OSError, ParseError):
        pass
    facts: dict[str, Any] = {fact: _read_fact(read, procfs, pid) for fact, read in READ_FACTS}
    return replace(info, cmdline=cmdline, exe=exe, cgroup=cgroup, parent_comm=_parent_comm(procfs, info.ppid),
                   **facts)


def _read_fact(read: Callable[[Procfs, int], str | None], procfs: Procfs, pid: int) -> str | None:
    """A fact a policy matcher needs (pyoomd.policy.matchers), or None if
    unreadable (gone; another user's process without CAP_SYS_PTRACE)."""
    try:
        return read(procfs, pid)
    except OSError:
        return None


def _parent_comm(procfs: Procfs, ppid: int) -> str | None:
    """The parent's name (policies' ``parent`` matcher); None if it is gone."""
    if ppid <= 0:
        return None
    try:
        return parse.parse_comm(procfs.read_pid(ppid, "comm", 64))
    except OSError:
        return None


def default_skip(procfs: Procfs) -> set[int]:
    """pid 1, ourselves and our parent are never candidates."""
    me = os.getpid()
    return {1, me, os.getppid(), procfs.self_pid}


@dataclass(frozen=True)
class Warm:
    """The oom_score of every process at a recent look (the growth
    follower's, between WARN and TERM), and how far each may have risen
    since: ``slack`` points for every process, plus ``rising[pid]`` for
    those seen rising between the last two looks.  A scan given one reads
    no oom_score for the processes in it: it ranks them by that bound,
    reads only the new pids' oom_score (born since the look) and re-reads
    the real score of each process it details.  The choice is the cold
    scan's unless a process rose by more than its slack since the look."""

    scores: dict[int, int]
    slack: int
    rising: dict[int, int] = field(default_factory=dict)
    # The last pid the kernel handed out just before the look (read_last_pid):
    # the pids born since are the ones above it, so /proc need not be listed.
    last_pid: int | None = None


# Above this many pids handed out since the look (a fork storm), or when the
# counter went backwards (pid_max wrapped), /proc is listed instead.
WARM_NEW_PIDS_MAX = 4096


def read_last_pid(procfs: Procfs) -> int | None:
    """The last pid handed out in this /proc's PID namespace (the fifth field
    of /proc/loadavg), or None where that cannot be trusted: unreadable, or
    a /proc of another namespace than ours (loadavg counts the reader's)."""
    if procfs.self_link_pid() != os.getpid():
        return None
    try:
        return int(procfs.read(procfs.loadavg, 256).split()[4])
    except (OSError, ValueError, IndexError):
        return None


def _warm_scores(procfs: Procfs, skip: set[int], warm: Warm) -> tuple[list[tuple[int, int, int]], int]:
    """(estimate, score to judge growth by, pid) for every pid not in
    ``skip``, and how many oom_score files were read (the new pids')."""
    out: list[tuple[int, int, int]] = []
    now_last = read_last_pid(procfs) if warm.last_pid is not None else None
    if now_last is not None and warm.last_pid is not None and 0 <= now_last - warm.last_pid <= WARM_NEW_PIDS_MAX:
        # those seen (some may have exited: read_proc skips them) + those born since
        pids: list[int] = [*warm.scores, *range(warm.last_pid + 1, now_last + 1)]
    else:
        try:
            pids = procfs.pids()
        except OSError:
            return out, 0
    reads = 0
    for pid in pids:
        if pid in skip:
            continue
        last = warm.scores.get(pid)
        if last is not None:
            out.append((last + warm.slack + warm.rising.get(pid, 0), last, pid))
            continue
        reads += 1
        try:
            raw = procfs.read_pid(pid, "oom_score", 64)
            score = parse.parse_int_file(raw, procfs.pid_file(pid, "oom_score"), "oom_score")
        except (OSError, ParseError):
            continue
        out.append((score, score, pid))
    return out, reads


def scan(procfs: Procfs, scorer: Scorer, max_bonus: int, top_n: int = 1,
         skip: set[int] | None = None, exhaustive: bool = False,
         bonus_of: Callable[[int, int], int] | None = None, warm: Warm | None = None) -> Table:
    """Lazy scan: the best ``top_n`` candidates by the scorer's badness (ties:
    larger RSS first).  ``max_bonus`` is the most any policy can add to a raw
    oom_score; ``bonus_of(pid, raw)`` the most anything else can add to that
    pid (the growth term: judge/choose.py).  Processes are read in order of
    that upper bound and the scan stops when no unread one can reach the
    first place (ties included: the tie-break is exact for the victim) nor
    rise strictly above the ``top_n``-th.  ``exhaustive`` reads every
    process (for ``rank --all``, ``explain``).  ``warm``: pass 1 from a
    recent look instead of one read per pid (see Warm)."""
    table = Table()
    skip = default_skip(procfs) if skip is None else skip
    if warm is not None and not exhaustive:
        est, table.scanned = _warm_scores(procfs, skip, warm)
    else:
        scores = read_scores(procfs, skip)
        table.scanned = len(scores)
        est = [(raw, raw, pid) for raw, pid in scores]
    # (bound, bound without the warm slack, pid, the score read now or None)
    exact = warm is None or exhaustive
    bonus = bonus_of or (lambda pid, raw: 0)
    bounded: list[tuple[int, int, int, int | None]]
    if bonus_of is None and exact:
        bounded = [(e, e, pid, e) for e, _, pid in est]  # read_scores' order: best first
    else:
        bounded = sorted(((e + (b := bonus(pid, judged)), judged + b, pid, e if exact else None)
                          for e, judged, pid in est), reverse=True)
    best: list[int] = []  # negated badness of candidates so far, ascending
    for upper, as_seen, pid, raw in bounded:
        # Stop when no unread process can reach the first place (with the
        # slack: the victim is exact) nor rise above the top_n-th (as of the
        # look, when warm: the runner-up table is as exact as the look).
        if (not exhaustive and len(best) >= top_n
                and upper + max_bonus < -best[0] and as_seen + max_bonus <= -best[top_n - 1]):
            break
        info = read_proc(procfs, pid, raw)
        if info is None:
            continue
        table.detailed += 1
        verdict = scorer(info)
        if isinstance(verdict, Excluded):
            table.excluded.append(verdict)
            continue
        table.candidates.append(verdict)
        bisect.insort(best, -verdict.badness)
    return table


# Clock ticks a second: the unit of /proc/PID/stat starttime (USER_HZ).
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def read_uptime_s(procfs: Procfs) -> float | None:
    """Seconds since boot (/proc/uptime, first field; the clock starttime
    counts on), or None if unreadable: processes are then not dated."""
    try:
        return float(procfs.read(procfs.uptime, 128).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def read_kernel_mem(procfs: Procfs, pid: int) -> tuple[int, int, int, int] | None:
    """(VmSize, RssAnon, RssFile, RssShmem) KiB for the kernel-style kill line,
    or None if the process is already gone."""
    try:
        return parse.parse_status_mem(procfs.read_pid(pid, "status", 16384), procfs.pid_file(pid, "status"))
    except (OSError, ParseError):
        return None


def read_mem(procfs: Procfs, pid: int) -> tuple[tuple[int, int], int] | None:
    """((pid, start time), RSS+swap KiB) of one process, or None if gone,
    a kernel thread or a zombie."""
    read = _stat_status(procfs, pid)
    if read is None:
        return None
    st, status = read
    return (pid, st.start_time), status.rss_kib + status.swap_kib


def memory_by_pid(procfs: Procfs, skip: set[int]) -> list[tuple[int, int, int]]:
    """(pid, uid, RSS+swap KiB) of every readable process not in ``skip``:
    one read of status each (fair share needs every user's total)."""
    out: list[tuple[int, int, int]] = []
    try:
        pids = procfs.pids()
    except OSError:
        return out
    for pid in pids:
        if pid in skip:
            continue
        try:
            status = parse.parse_status(procfs.read_pid(pid, "status", 16384), procfs.pid_file(pid, "status"))
        except (OSError, ParseError):
            continue  # gone, or not ours to read
        out.append((pid, status.uid, status.rss_kib + status.swap_kib))
    return out


def follow(procfs: Procfs, skip: set[int], last_scores: dict[int, int], top: int,
           ) -> tuple[list[tuple[tuple[int, int], int]], dict[int, int]]:
    """One cheap look for the growth tracker: the ``top`` biggest processes
    by oom_score, every process whose oom_score rose since ``last_scores``
    (one small read each) and, after the first look, every new one above the
    lowest score (a leak born between two looks: issue 12), then
    stat+status of those only.  Returns the observations and the new scores
    (for the next look)."""
    scores = read_scores(procfs, skip)
    now_scores = {pid: s for s, pid in scores}
    floor = scores[-1][0] if scores else 0
    chosen = [pid for _, pid in scores[:top]]
    chosen += [pid for s, pid in scores[top:]
               if (s > last_scores[pid] if pid in last_scores else bool(last_scores) and s > floor)]
    out = []
    for pid in chosen:
        seen = read_mem(procfs, pid)
        if seen is not None:
            out.append(seen)
    return out, now_scores
