"""Growth-aware ranking: who is causing the pressure.  Pure: ``now`` comes in.

The kernel's oom_score says who is big; it cannot say who is growing.  When
memory is between the WARN and TERM levels, the daemon follows the RSS+swap of the
biggest processes and of those whose oom_score rose since its last look, and
this tracker turns those timed observations into a badness term on the
oom_score scale (thousandths of memory):

    growth_points = weight * 1000 * max(0, mem_now - mem_then) / MemTotal

where ``mem_then`` is the oldest observation of that process inside the
window (``window_s``, default 20 s) — for a process first seen inside the
window, its first observation.  Shrinking earns nothing, and costs nothing.
Identity is (pid, start time), so a reused pid starts a new history.

Defaults, and the scenarios that chose them (24 GiB machine, see
integration/test_growth.py):
- ``weight`` 10: three tabs of 300 MiB at oom_score_adj +300 against a leak
  at 128 MiB/s: the leak gains ~1.5 GiB in its last 12 s before the TERM level
  (62 thousandths of memory); x10 gives 620 points, above the tabs' +300,
  while a process that grew 1 % of memory gets 100 — less than a policy's
  typical +300, so policies keep the last word.
- ``window_s`` 20: long enough to contain the whole approach to the
  threshold of a 128-256 MiB/s leak that starts from far away, short enough
  that a process which grew once at start-up an hour ago is not blamed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

Identity = tuple[int, int]

DEFAULT_WEIGHT = 10.0
DEFAULT_WINDOW_S = 20.0
# A history older than the window by this much with no new observation is
# dropped: the process exited or stopped being interesting.
STALE_FACTOR = 2.0


@dataclass(frozen=True, slots=True)
class Growth:
    """The growth term of one process, and what it was measured over."""

    points: int
    grew_kib: int
    over_s: float


NO_GROWTH = Growth(0, 0, 0.0)


class GrowthTracker:
    def __init__(self, mem_total_kib: int, weight: float = DEFAULT_WEIGHT,
                 window_s: float = DEFAULT_WINDOW_S) -> None:
        self.mem_total_kib = max(1, mem_total_kib)
        self.weight = weight
        self.window_s = window_s
        self._hist: dict[Identity, deque[tuple[float, int]]] = {}

    def observe(self, now: float, identity: Identity, mem_kib: int) -> None:
        """Record RSS+swap of one process at ``now``."""
        hist = self._hist.get(identity)
        if hist is None:
            hist = self._hist[identity] = deque()
        hist.append((now, mem_kib))
        # Keep one point at or before the window start, as the baseline.
        while len(hist) > 2 and now - hist[1][0] >= self.window_s:
            hist.popleft()

    def prune(self, now: float) -> None:
        """Forget processes not observed for a while (gone or uninteresting)."""
        limit = self.window_s * STALE_FACTOR
        for ident in [i for i, h in self._hist.items() if now - h[-1][0] > limit]:
            del self._hist[ident]

    def growth(self, identity: Identity) -> Growth:
        hist = self._hist.get(identity)
        if not hist or len(hist) < 2:
            return NO_GROWTH
        (t0, m0), (t1, m1) = hist[0], hist[-1]
        grew = max(0, m1 - m0)
        points = int(self.weight * 1000 * grew / self.mem_total_kib)
        return Growth(points, grew, round(t1 - t0, 3))

    def max_points(self) -> int:
        """The largest growth term of any tracked process (bound for the lazy scan)."""
        return max((self.growth(i).points for i in self._hist), default=0)

    def clear(self) -> None:
        self._hist.clear()

    def __len__(self) -> int:
        return len(self._hist)
