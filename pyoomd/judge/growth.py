"""Growth-aware ranking: who caused the decline.  Pure: ``now`` comes in.

The kernel's oom_score says who is big; it cannot say who is growing.  When
memory is between the WARN and TERM levels, the daemon follows the RSS+swap of
the biggest processes, of those whose oom_score rose since its last look and
of new ones, and MemAvailable itself.  At the crossing this tracker
attributes the decline to the processes that took the memory, and turns each
one's part into a badness term on the oom_score scale (``Attribution``):

    grew_i   = mem_i(now) - mem_i(window start), >= 0; a process born inside
               the window grew from 0 at its start time (/proc/PID/stat)
    rate_i   = (mem_i(now) - mem_i(now - RATE_S)) / RATE_S, >= 0
    loss     = max(MemAvailable's decline in the window, sum of grew, WARN - TERM)
    fastest  = max(the largest rate_i, (WARN - TERM) / window)
    points_i = weight * 100 * (LOSS_PART * grew_i / loss + RATE_PART * rate_i / fastest)

(each ratio at most 1).  The process that took all of the loss and grows
fastest at the crossing gets ``weight * 100`` points (1000 by default, "as if
it held all of memory"); a bystander that took a tenth and stopped, a
twentieth of that.  Why each piece (integration/bench/attribution.py sweeps
families of scenes; README, "The right victim"):

- *Share of the loss, not of MemTotal.*  As grew/MemTotal, the cause of a
  1.2 GiB decline on a 24 GiB machine got a few hundred points, no match for
  a +300 tab (+200 on the 5.9+ oom_score scale) plus its oom_score; the same
  leak on a machine twice the size got half.  As a share it gets most of the
  term whatever the sizes, and bystanders that filled a little get little.
- *Born inside the window grew from zero.*  A leak that starts with a
  300 MiB block has it before anyone looks: counted from its first
  observation the block was no growth (issue 12).  The start time says when
  it was taken; a process born after the last look is dated the same way
  when the scan reads it (``Attribution.of`` with its size).
- *The rate part, relative to the fastest grower,* favours the process still
  growing at the crossing over one that grew as much earlier and stopped
  (killing the first stops the decline), and keeps a fast leak ahead of a
  crowd of small processes that each fill a little.
- *The floors* (WARN - TERM; that over the window) keep noise from becoming
  a large share: when little declined and little grew nobody gets much, and
  with no growth at all the order is the kernel's.
- ``weight * 100`` (default 1000) is below a policy's largest ``adjust``
  (2000): the policies keep the last word; -1000 and ``protect`` are never
  candidates.

Sweep (seed 12, 200 scenes a family): the share of scenes with the cause
first was 100 % in all four families for these parts and weight (smallest
margin +131 points); 0.6/0.4, or the loss alone, or the rate as a share of
the sum, each lost some scenes or margin; the term before this issue
(weight * 1000 * grew since first seen / MemTotal) ranked the cause first in
99.5, 100, 96.0 and 95.8 %.

Identity is (pid, start time), so a reused pid starts a new history.
``window_s`` (20 s) is long enough to contain the approach to TERM of a
64-256 MiB/s leak, short enough that a process which grew at start-up a
minute ago is not blamed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

Identity = tuple[int, int]

DEFAULT_WEIGHT = 10.0
DEFAULT_WINDOW_S = 20.0
# The weight's unit: weight 10 gives at most 1000 points (the whole kernel
# scale of memory), less than a policy's largest adjust (2000).
POINTS_PER_WEIGHT = 100.0
# Halves of the term: the share of the loss a process took, and its rate
# at the crossing relative to the fastest grower's (sum norm for the loss,
# max norm for the rate).  Chosen on the sweep of
# integration/bench/attribution.py (module docstring): the largest smallest
# margin of the settings that ranked the cause first in every scene.
LOSS_PART = 0.5
RATE_PART = 0.5
NORM = ("sum", "max")
# The rate is measured over the last few seconds: two or three looks at the
# default follow interval of 1 s (one look is too noisy, a longer span
# blurs "still growing" into "grew").
RATE_S = 3.0
# A history older than the window by this much with no new observation is
# dropped: the process exited or stopped being interesting.
STALE_FACTOR = 2.0


@dataclass(frozen=True, slots=True)
class Growth:
    """The growth term of one process, and what it was measured over."""

    points: int
    grew_kib: int
    over_s: float
    share: float = 0.0  # of the loss (grew / loss)
    rate_kib_s: float = 0.0
    rate_share: float = 0.0  # rate relative to the fastest grower at the crossing


NO_GROWTH = Growth(0, 0, 0.0)


@dataclass(frozen=True, slots=True)
class Attribution:
    """Every followed process's growth term at one moment (what the choice
    uses: judge/choose.py).  ``loss_kib`` and ``speed_kib_s`` are the
    denominators used; ``scale`` the points of a full share.  ``uptime_s``
    and ``hz`` (seconds since boot at that moment, clock ticks a second)
    date a process from its start time, so one never followed (born after
    the last look) is taken to have grown from 0 at its start."""

    terms: dict[Identity, Growth] = field(default_factory=dict)
    loss_kib: int = 0
    speed_kib_s: float = 0.0
    declined_kib: int = 0  # what MemAvailable lost in the window, as seen
    scale: float = 0.0
    parts: tuple[float, float] = (0.0, 0.0)
    window_s: float = 0.0
    uptime_s: float | None = None
    hz: int = 100

    def of(self, identity: Identity, mem_kib: int | None = None) -> Growth:
        """The term of a followed process; of one never followed but born
        inside the window (``mem_kib`` its RSS+swap now), from its start."""
        g = self.terms.get(identity)
        if g is not None:
            return g
        if mem_kib is None or self.uptime_s is None or not self.scale:
            return NO_GROWTH
        age = self.uptime_s - identity[1] / self.hz
        if not 0.0 <= age < self.window_s:
            return NO_GROWTH
        rate = mem_kib / max(age, 1e-3)
        share, rshare = min(1.0, mem_kib / max(1, self.loss_kib)), min(1.0, rate / max(1e-3, self.speed_kib_s))
        points = int(self.scale * (self.parts[0] * share + self.parts[1] * rshare))
        return Growth(points, mem_kib, round(age, 3), round(share, 3), round(rate, 1), round(rshare, 3))

    def max_points(self) -> int:
        return max((g.points for g in self.terms.values()), default=0)

    def unseen_max(self) -> int:
        """The most a process never followed can get (the lazy scan's bound
        for a pid born after the last look)."""
        return int(self.scale * sum(self.parts)) if self.uptime_s is not None else 0

    def by_pid(self) -> dict[int, int]:
        """The most points any identity of each pid has (the lazy scan's
        per-pid bound: it knows pids before it reads start times)."""
        out: dict[int, int] = {}
        for (pid, _), g in self.terms.items():
            if g.points > out.get(pid, 0):
                out[pid] = g.points
        return out


NO_ATTRIBUTION = Attribution()


class GrowthTracker:
    def __init__(self, mem_total_kib: int, weight: float = DEFAULT_WEIGHT,
                 window_s: float = DEFAULT_WINDOW_S, approach_kib: int | None = None,
                 parts: tuple[float, float] = (LOSS_PART, RATE_PART),
                 norm: tuple[str, str] = NORM) -> None:
        self.mem_total_kib = max(1, mem_total_kib)
        self.parts = parts  # (loss, rate): the sweep varies them; the daemon keeps the defaults
        self.norm = norm  # "sum": a share of all; "max": relative to the largest
        self.weight = weight
        self.window_s = window_s
        # WARN - TERM: the decline the approach to TERM is made of (floor of
        # the loss); 10 % of MemTotal, the default distance, if not told.
        self.approach_kib = max(1, approach_kib if approach_kib is not None else self.mem_total_kib // 10)
        self._hist: dict[Identity, deque[tuple[float, int]]] = {}
        self._avail: deque[tuple[float, int]] = deque()

    def observe(self, now: float, identity: Identity, mem_kib: int, born: float | None = None) -> None:
        """Record RSS+swap of one process at ``now``.  ``born``: when the
        process started, on the same clock; a process first seen within
        the window of its start is taken to have grown from 0 since then."""
        hist = self._hist.get(identity)
        if hist is None:
            hist = self._hist[identity] = deque()
            if born is not None and now - self.window_s <= born < now:
                hist.append((born, 0))
        hist.append((now, mem_kib))
        _trim(hist, now, self.window_s)

    def observe_available(self, now: float, avail_kib: int) -> None:
        """Record MemAvailable at ``now`` (every tick at or below WARN)."""
        self._avail.append((now, avail_kib))
        _trim(self._avail, now, self.window_s)

    def prune(self, now: float) -> None:
        """Forget processes not observed for a while (gone or uninteresting)."""
        limit = self.window_s * STALE_FACTOR
        for ident in [i for i, h in self._hist.items() if now - h[-1][0] > limit]:
            del self._hist[ident]

    def attribution(self, now: float, uptime_s: float | None = None, hz: int = 100) -> Attribution:
        """Each followed process's term at ``now`` (see the module docstring);
        ``uptime_s``: seconds since boot at ``now``, to date processes never
        followed from their start time (Attribution.of)."""
        raw: dict[Identity, tuple[int, float, float]] = {}
        for ident, hist in self._hist.items():
            if len(hist) < 2:
                continue
            (t0, m0), (t1, m1) = hist[0], hist[-1]
            raw[ident] = (max(0, m1 - m0), _rate(hist, now), round(t1 - t0, 3))
        declined, decline_rate = self._decline(now)
        agg = {"sum": sum, "max": lambda xs: max(xs, default=0)}
        loss = max(declined if self.norm[0] == "sum" else 0, agg[self.norm[0]](g for g, _, _ in raw.values()),
                   self.approach_kib)
        speed = max(decline_rate if self.norm[1] == "sum" else 0, agg[self.norm[1]](r for _, r, _ in raw.values()),
                    self.approach_kib / max(self.window_s, 1.0))
        scale = self.weight * POINTS_PER_WEIGHT
        lp, rp = self.parts
        terms = {}
        for ident, (grew, rate, over) in raw.items():
            share, rshare = min(1.0, grew / loss), min(1.0, rate / speed)
            terms[ident] = Growth(int(scale * (lp * share + rp * rshare)), grew, over,
                                  round(share, 3), round(rate, 1), round(rshare, 3))
        return Attribution(terms, int(loss), round(speed, 1), declined, scale, (lp, rp), self.window_s,
                           uptime_s, hz)

    def _decline(self, now: float) -> tuple[int, float]:
        """(KiB MemAvailable fell from its highest in the window to the
        last sample, KiB/s it fell over the last RATE_S)."""
        if len(self._avail) < 2:
            return 0, 0.0
        last = self._avail[-1][1]
        declined = max(0, max(a for _, a in self._avail) - last)
        return declined, max(0.0, -_rate(self._avail, now, signed=True))

    def growth(self, identity: Identity, now: float | None = None) -> Growth:
        """One process's term (``now``: the latest observation's time)."""
        return self.attribution(self._latest() if now is None else now).of(identity)

    def max_points(self, now: float | None = None) -> int:
        """The largest growth term of any tracked process."""
        return self.attribution(self._latest() if now is None else now).max_points()

    def _latest(self) -> float:
        times = [h[-1][0] for h in self._hist.values()] + ([self._avail[-1][0]] if self._avail else [])
        return max(times, default=0.0)

    def clear(self) -> None:
        self._hist.clear()
        self._avail.clear()

    def __len__(self) -> int:
        return len(self._hist)


def _trim(hist: deque[tuple[float, int]], now: float, window_s: float) -> None:
    """Keep one point at or before the window start, as the baseline."""
    while len(hist) > 2 and now - hist[1][0] >= window_s:
        hist.popleft()


def _rate(hist: deque[tuple[float, int]], now: float, signed: bool = False) -> float:
    """KiB/s from the last point at or before ``now - RATE_S`` (else the
    first) to the last point, over the time to ``now``: a history not
    observed lately (its oom_score stopped rising) fades to 0."""
    ref = hist[0]
    for point in hist:
        if point[0] <= now - RATE_S:
            ref = point
        else:
            break
    dt = max(now - ref[0], 1e-3)
    delta = hist[-1][1] - ref[1]
    return delta / dt if signed else max(0.0, delta / dt)
