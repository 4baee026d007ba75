"""Frozen value types shared by every stage (sense, judge, act, report).

Nothing here does I/O.  Sizes are KiB unless the name says otherwise.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class PsiLine:
    """One line of a PSI file: ``some`` or ``full``."""

    avg10: float
    avg60: float
    avg300: float
    total_us: int


@dataclass(frozen=True, slots=True)
class Pressure:
    """Memory pressure (``/proc/pressure/memory``).  ``full`` is None on kernels
    that only report ``some`` (the CPU file before 5.13, for instance)."""

    some: PsiLine
    full: PsiLine | None


class MemSample(NamedTuple):
    """One reading of memory state.  ``psi`` is None where the kernel lacks PSI.
    ``available_estimated`` is True when MemAvailable was missing and was
    estimated from MemFree and the page cache (kernels before 3.14).

    A named tuple, not a frozen dataclass: one is made per sample on the hot
    path, and ``MemSample._make(values)`` is a single C call (~0.2 us; a
    frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``, ~0.7 us).  Change one with ``_replace``."""

    mem_total_kib: int
    mem_available_kib: int
    swap_total_kib: int
    swap_free_kib: int
    psi: Pressure | None = None
    available_estimated: bool = False

    @property
    def mem_available_pct(self) -> float:
        return 100.0 * self.mem_available_kib / self.mem_total_kib if self.mem_total_kib else 0.0

    @property
    def swap_free_pct(self) -> float:
        return 100.0 * self.swap_free_kib / self.swap_total_kib if self.swap_total_kib else 0.0


class Level(enum.IntEnum):
    """How bad memory is.  Ordered: a higher level is worse."""

    OK = 0
    WARN = 1
    TERM = 2
    KILL = 3


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """A process as read from /proc.  Identity is (pid, start_time): the start
    time (field 22 of stat, clock ticks since boot) tells a reused pid apart.

    Cheap fields are always filled; the expensive ones (cmdline, exe, cgroup)
    are None until the snapshot fills them for the few candidates near the top.
    """

    pid: int
    start_time: int
    comm: str
    ppid: int
    state: str
    uid: int
    rss_kib: int
    swap_kib: int
    oom_score: int
    oom_score_adj: int
    pgid: int = 0
    cmdline: str | None = None
    exe: str | None = None
    cgroup: str | None = None
    parent_comm: str | None = None  # for policies' ``parent`` matcher; detailed processes only
    cwd: str | None = None  # /proc/PID/cwd, for policies' ``cwd`` matcher; detailed processes only

    @property
    def identity(self) -> tuple[int, int]:
        return (self.pid, self.start_time)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A process with its final badness and why it got it."""

    proc: ProcInfo
    badness: int
    reasons: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    signal: str | None = None  # policy override: skip SIGTERM and send this
    grace_s: float | None = None  # policy override of the SIGTERM grace
    kill_group: bool = False
    # Growth term (judge/growth.py): points added, KiB grown, seconds measured over.
    growth_points: int = 0
    growth_kib: int = 0
    growth_over_s: float = 0.0
    growth_share: float = 0.0  # of the loss of MemAvailable (judge/growth.py)
    growth_rate_kib_s: float = 0.0
    # Kill every process of the victim's cgroup (a policy's `kill: cgroup`);
    # see act/cgroup_kill.py.  Distinct from kill_group (the process group).
    kill_cgroup: bool = False
    # A soft action tried first (a policy's ``action``; act/soft.py) and its rule.
    action: tuple[str, ...] | None = None
    action_rule: str | None = None


@dataclass(frozen=True, slots=True)
class Excluded:
    """A process that is not a candidate, and why (for rank/explain)."""

    proc: ProcInfo
    why: str


@dataclass(frozen=True, slots=True)
class Decision:
    """What the judge says about one sample."""

    level: Level
    reason: str
    sleep_s: float


@dataclass(frozen=True, slots=True)
class KillOutcome:
    """What happened when we acted on a victim."""

    pid: int
    comm: str
    signals: tuple[str, ...] = ()
    exited: bool = False
    ms_to_exit: float | None = None
    dry_run: bool = False
    skipped: str | None = None  # why nothing was sent (gone, recovered, pid reused)
    extra: dict[str, object] = field(default_factory=dict)
