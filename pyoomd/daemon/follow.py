"""The approach to TERM: follow the growing processes (judge/growth.py), read
what the likely victim frees, and rank from the follower's last look."""

from __future__ import annotations

import functools
import heapq

from ..judge.choose import Scoring, choose
from ..judge.growth import NO_ATTRIBUTION, Attribution
from ..model import Candidate, Excluded, Level, MemSample, ProcInfo
from ..sense import snapshot
from .base import DaemonParts

# A victim that did not exit within kill_timeout is left alone for this long
# (frozen cgroup, D state): re-trying it at once would loop forever.
STUCK_FORGET_S = 300.0

# Warm ranking (Daemon.warm): the follower's last look stands in for pass 1
# of the scan while it is at most this many growth intervals old, with at
# least this much slack (oom_score points, 1/1000 of memory each) for a
# process's rise since the look.
WARM_MAX_AGE = 2.0

WARM_SLACK = 20

# The likely victim's USS + swap (FreesReader) is read once, again only
# after this long: the kill event's frees_kib adds what its RSS + swap grew
# by since.  Each read walks its page tables (25-290 ms for 0.7-0.8 GiB in
# the crowd benchmark on this 2-CPU machine), CPU taken from the loop's
# other threads and the hog alike.
FREES_REREAD_S = 30.0

# ... for the best of this many of the look's biggest processes (by oom_score).
FREES_TOP = 3


class Follow(DaemonParts):
    """One part of the Daemon (daemon/core.py), as the module docstring says."""

    def _follow_growth(self, level: Level, now: float, sample: MemSample,
                       before: tuple[float, int] | None = None) -> None:
        """Between WARN and TERM, follow the biggest, the growing and the new
        processes (cheaply, once per growth.interval); at WARN and below,
        MemAvailable on every tick (the decline to attribute); back at OK,
        forget them.  At TERM and above the history so far decides: a look
        there would read every oom_score once more just before the scan
        that picks the victim (measured: 109 -> 282 ms to the kill among
        10,000 processes); the scan dates processes born since the last
        look from their start time instead (judge/growth.py)."""
        cfg = self.settings.growth
        if not cfg.enabled:
            return
        if level < Level.WARN:
            if len(self.growth) or self._followed:
                self.growth.clear()
                self._follow_scores = {}
                self._followed = False
            return
        if before is not None and not self._followed:
            self.growth.observe_available(now - before[0], before[1])  # the idle wait's last one above
        self.growth.observe_available(now, sample.mem_available_kib)
        if level >= Level.TERM or now - self._followed_at < cfg.interval:
            return
        self._followed_at = now
        before_scores = self._follow_scores
        self._follow_last_pid = snapshot.read_last_pid(self.procfs)  # before the look: none born is missed
        seen, self._follow_scores = snapshot.follow(self.procfs, snapshot.default_skip(self.procfs),
                                                    self._follow_scores, cfg.follow_top)
        self._follow_rise = {pid: s - before_scores[pid] for pid, s in self._follow_scores.items()
                             if pid in before_scores and s > before_scores[pid]}
        uptime = snapshot.read_uptime_s(self.procfs)
        for ident, mem_kib in seen:
            born = None if uptime is None else now - (uptime - ident[1] / snapshot.CLOCK_TICKS)
            self.growth.observe(now, ident, mem_kib, born)
        self._followed = True
        self.growth.prune(now)
        self._prefetch_frees()

    def _prefetch_frees(self) -> None:
        """Right after a look during the approach: of the FREES_TOP biggest
        processes by the look's oom_score, the one the choice's rules rank
        first (policies, growth, cgroup preferences: Scoring.evaluate), and
        what its death would free, read by the FreesReader (in its thread:
        the loop goes on sampling).  The kill event's frees_kib comes from
        there.  A few reads on the loop, not a scan: 3.4 ms a look among
        10,000 processes here (integration/bench/frees_cost.py)."""
        if not self._follow_scores:
            return
        top = heapq.nlargest(FREES_TOP, self._follow_scores.items(), key=lambda kv: kv[1])
        scoring = self.scoring()
        best: Candidate | None = None
        for pid, oom_score in top:
            info = snapshot.read_proc(self.procfs, pid, oom_score)
            if info is None or info.identity in self.state.stuck:
                continue
            verdict = scoring.evaluate(info)
            if isinstance(verdict, Candidate) and (best is None or verdict.badness > best.badness):
                best = verdict
        if best is not None:
            self.frees.want(best.proc, FREES_REREAD_S)

    def attribution(self) -> Attribution:
        """The growth terms now (none when growth is off).  Processes never
        followed are dated from their start time only once a look happened
        (a daemon that starts below TERM saw no decline: the kernel's order)."""
        if not self.settings.growth.enabled:
            return NO_ATTRIBUTION
        uptime = snapshot.read_uptime_s(self.procfs) if self._followed else None
        return self.growth.attribution(self.clock(), uptime, snapshot.CLOCK_TICKS)

    def scoring(self) -> Scoring:
        """What the choice depends on now (judge/choose.py): the daemon's and
        the tools' one path."""
        pref = None
        if self.settings.cgroups.preferences:
            pref = self.cgroups.preference_of_path
        last = self._follow_scores if self.settings.growth.enabled and self._followed else None
        return Scoring(self.policy, self.attribution(), pref, last)

    def warm(self) -> snapshot.Warm | None:
        """The growth follower's last look, if recent enough to rank from
        (issue 11: the victim ready at the crossing).  Its scores stand in
        for one oom_score read per process, each with WARM_SLACK points of
        slack plus twice its own rise between the last two looks, scaled to
        the look's age (a process rising steadily is read; one that starts
        to rise by more than that within a second of a look is missed until
        the next cold scan)."""
        cfg = self.settings.growth
        age = self.clock() - self._followed_at
        if not (cfg.enabled and self._followed and self._follow_scores) or age > WARM_MAX_AGE * cfg.interval:
            return None
        looks = max(1.0, age / cfg.interval)
        rising = {pid: int(2 * r * looks) + 1 for pid, r in self._follow_rise.items()}
        return snapshot.Warm(self._follow_scores, int(WARM_SLACK * looks) + 1, rising, self._follow_last_pid)

    def _spare_now(self, proc: ProcInfo) -> str | None:
        """Why ``proc`` must not get a signal now (policy protect, an omitted
        cgroup, -1000), or None: the choice's own rules, read again just
        before each signal (act/kill.py Guard)."""
        pref = self.cgroups.preference_of_path if self.settings.cgroups.preferences else None
        verdict = Scoring(self.policy, preference=pref).evaluate(proc)
        return verdict.why if isinstance(verdict, Excluded) else None

    def scan(self, top_n: int, only: set[int] | None = None) -> list[Candidate]:
        """The best candidates; ``only``: restrict to these pids (cgroup choice)."""
        skip = snapshot.default_skip(self.procfs)
        if only is not None:
            skip |= set(self.procfs.pids()) - only
        read = functools.partial(snapshot.scan, self.procfs, skip=skip, warm=self.warm())
        choice = choose(self.scoring(), read, top_n)
        now = self.clock()
        self.state.stuck = {k: t for k, t in self.state.stuck.items() if now - t < STUCK_FORGET_S}
        return [c for c in choice.ranked if c.proc.identity not in self.state.stuck]

