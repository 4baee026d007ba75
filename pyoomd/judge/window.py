"""A short history of timed counter readings, for rates over a window.

Pure: points come in with ``now``.  Each point holds the cumulative counters
the swap-relief and thrash rules need (judge/relief.py, judge/thrash.py):
MemAvailable, SwapFree, the PSI ``total`` stall times (us) and the
/proc/vmstat page counters.  A rate over a window is the difference between
the newest point and the newest one at least ``window_s`` older: the kernel's
counters are exact, so no averaging lags behind (PSI's avg10 takes seconds to
rise: the issue's desktop froze with full avg10 at 11-17 % after seconds of
complete stall).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from ..model import MemSample
from ..sense.vmstat import VmCounters

# Points closer than this to the previous one replace it: at 2 ms sampling a
# 4 s history keeps at most 80 points.
STEP_S = 0.05
KEEP_S = 4.0
PAGE_KIB = 4  # /proc/vmstat counts pages; 4 KiB on x86-64 and arm64 (4k)


class Point(NamedTuple):
    t: float
    avail_kib: int
    swap_free_kib: int
    full_us: int | None  # None: no PSI (or no "full" line)
    some_us: int | None
    vm: VmCounters | None


@dataclass(frozen=True, slots=True)
class Span:
    """What changed between two points (rates per second; pages -> KiB)."""

    seconds: float
    mem_decline_kib_s: float  # MemAvailable lost per second (negative: it rose)
    swap_out_kib_s: float | None  # None: no vmstat
    swap_in_kib_s: float | None
    refault_file_kib_s: float | None
    full_pct: float | None  # full stall, percent of the span's wall time
    some_pct: float | None


def point_of(now: float, sample: MemSample, vm: VmCounters | None) -> Point:
    psi = sample.psi
    full = psi.full.total_us if psi is not None and psi.full is not None else None
    some = psi.some.total_us if psi is not None else None
    return Point(now, sample.mem_available_kib, sample.swap_free_kib, full, some, vm)


def span_of(a: Point, b: Point) -> Span:
    dt = b.t - a.t
    out = swin = refault = None
    if a.vm is not None and b.vm is not None:
        k = PAGE_KIB / dt
        out = max(0, b.vm.pswpout - a.vm.pswpout) * k
        swin = max(0, b.vm.pswpin - a.vm.pswpin) * k
        refault = max(0, b.vm.refault_file - a.vm.refault_file) * k
    full = None if a.full_us is None or b.full_us is None else _pct(b.full_us - a.full_us, dt)
    some = None if a.some_us is None or b.some_us is None else _pct(b.some_us - a.some_us, dt)
    return Span(dt, (a.avail_kib - b.avail_kib) / dt, out, swin, refault, full, some)


def _pct(us: int, dt: float) -> float:
    # A counter cannot grow faster than wall time; a read racing the kernel's
    # update can show a little more: clamp to 100 %.
    return min(100.0, max(0.0, us / 1e4 / dt))


class Window:
    """The last ``keep_s`` seconds of points."""

    def __init__(self, keep_s: float = KEEP_S) -> None:
        self.keep_s = keep_s
        self._points: deque[Point] = deque()

    def add(self, p: Point) -> None:
        pts = self._points
        if pts and p.t - pts[-1].t > self.keep_s:
            pts.clear()  # a gap (suspend, a long idle wait): nothing spans it
        if len(pts) >= 2 and p.t - pts[-2].t < STEP_S:
            pts[-1] = p  # keep the spacing: the newest reading replaces the last
        else:
            pts.append(p)
        while pts and p.t - pts[0].t > self.keep_s:
            pts.popleft()

    def span(self, window_s: float, min_s: float) -> Span | None:
        """From the newest point back at least ``window_s`` (or as far as the
        history goes, if that is at least ``min_s``); None when too short."""
        pts = self._points
        if len(pts) < 2:
            return None
        last = pts[-1]
        start = pts[0]
        for p in reversed(pts):
            if last.t - p.t >= window_s:
                start = p
                break
        if last.t - start.t < min_s:
            return None
        return span_of(start, last)

    def last(self) -> Point | None:
        return self._points[-1] if self._points else None

    def clear(self) -> None:
        self._points.clear()

    def __len__(self) -> int:
        return len(self._points)
