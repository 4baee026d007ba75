"""The victim choice: one function for the daemon, ``rank``, ``explain`` and
``watch``, so what the tools say is what the daemon does.  Pure: the process
table is read by the ``read`` function passed in (sense/snapshot.scan).

    choice = choose(Scoring(policy, growth, preference), read, top_n)

A process's final badness (``Scoring.evaluate``):

1. ``oom_score_adj == -1000``: never a candidate.
2. a policy ``protect``: never a candidate.
3. its cgroup (or the nearest ancestor) carries ``user.oomd_omit``: never a
   candidate; ``user.oomd_avoid``: badness 0 (last resort).
4. otherwise ``clamp(oom_score + policy adjusts + growth, 0, 2000)``
   (judge/rank.py ``score``; the growth term is judge/growth.py's).

Order: highest badness, then larger RSS+swap, then lower pid.  The lazy
scan reads a process only if its raw oom_score plus the most it could gain
(``Scoring.bonus``: the largest policy bonus, plus its own growth term if
followed, plus a full term if it is new since the last look) can still
reach the top ``top_n``; so the ``top_n`` returned are the top ``top_n``
by final badness, growth included (ties below the first resolved by read
order).

To plug in another term (a per-user share, a warm ranking), extend
``Scoring`` (its ``evaluate`` and ``bonus``) and keep ``choose`` the one
entry point.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ..model import Candidate, Excluded, ProcInfo
from .growth import NO_ATTRIBUTION, Attribution
from .rank import NoPolicy, Policy, order, score

Scorer = Callable[[ProcInfo], "Candidate | Excluded"]
# cgroup path (as ProcInfo.cgroup) -> "omit", "avoid" or None (sense/cgroup.py Cgroups.preference)
Preference = Callable[[str], "str | None"]


class Table(Protocol):
    """What a read returns (sense/snapshot.Table)."""

    candidates: list[Candidate]
    excluded: list[Excluded]
    scanned: int
    detailed: int


class Reader(Protocol):
    """sense/snapshot.scan with its procfs (and skip set) bound, e.g.
    ``functools.partial(snapshot.scan, procfs, skip=skip)``."""

    def __call__(self, scorer: Scorer, max_bonus: int, top_n: int = 1, *, exhaustive: bool = False,
                 bonus_of: Callable[[int, int], int] | None = None) -> Table: ...


@dataclass(frozen=True)
class Scoring:
    """Everything the choice depends on besides the processes themselves.

    ``policy``: the loaded policies (pyoomd.policy), or NoPolicy.
    ``growth``: the growth terms at this moment (GrowthTracker.attribution).
    ``preference``: systemd's ManagedOOMPreference lookup by cgroup path, or
    None to ignore it (``cgroups.preferences: false``).  Memoised here.
    ``last_scores``: pid -> oom_score at the growth follower's last look;
    pids new since then or whose score rose may be young growers never
    followed, so the lazy scan reads them (``bonus_of``); None: no look
    happened (nobody is dated from a start time).
    """

    policy: Policy = field(default_factory=NoPolicy)
    growth: Attribution = NO_ATTRIBUTION
    preference: Preference | None = None
    last_scores: Mapping[int, int] | None = None
    _prefs: dict[str, str | None] = field(default_factory=dict, compare=False, repr=False)

    def evaluate(self, proc: ProcInfo) -> Candidate | Excluded:
        """The final badness of one process, or why it is not a candidate."""
        verdict = score(proc, self.policy, self.growth.of(proc.identity, proc.rss_kib + proc.swap_kib))
        if isinstance(verdict, Excluded) or self.preference is None or proc.cgroup is None:
            return verdict
        if proc.cgroup not in self._prefs:
            self._prefs[proc.cgroup] = self.preference(proc.cgroup)
        pref = self._prefs[proc.cgroup]
        if pref == "omit":
            return Excluded(proc, f"cgroup {proc.cgroup} is omitted (user.oomd_omit)")
        if pref == "avoid":
            return dataclasses.replace(verdict, badness=0,
                                       reasons=verdict.reasons + ("badness 0: cgroup avoided (user.oomd_avoid)",))
        return verdict

    def max_bonus(self) -> int:
        """The most any policy adds to a raw oom_score."""
        return max(0, self.policy.max_bonus)

    def bonus_of(self) -> Callable[[int, int], int]:
        """(pid, raw oom_score) -> the most growth can add to that pid: its
        own term if followed; a full term if it is new or its score rose
        since the last look (born or grown unseen); else 0."""
        by_pid = self.growth.by_pid()
        unseen = self.growth.unseen_max()
        last = self.last_scores

        def bonus(pid: int, raw: int) -> int:
            own = by_pid.get(pid, 0)
            if unseen and last is not None and (pid not in last or raw > last[pid]):
                return max(own, unseen)
            return own
        return bonus


@dataclass(frozen=True)
class Choice:
    """The candidates best first, the excluded, and what the read cost."""

    ranked: list[Candidate]
    excluded: list[Excluded]
    scanned: int = 0
    detailed: int = 0

    @property
    def victim(self) -> Candidate | None:
        return self.ranked[0] if self.ranked else None


def choose(scoring: Scoring, read: Reader, top_n: int = 1, exhaustive: bool = False) -> Choice:
    """The top ``top_n`` candidates by final badness (``exhaustive``: every
    process), best first, through ``read`` (sense/snapshot.scan bound to a
    procfs).  The daemon kills ``ranked[0]``; rank/explain/watch show it."""
    table = read(scoring.evaluate, scoring.max_bonus(), max(1, top_n), exhaustive=exhaustive,
                 bonus_of=scoring.bonus_of())
    return Choice(order(table.candidates), list(table.excluded), table.scanned, table.detailed)
