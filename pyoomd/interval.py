"""The sampling rule, in one place: how long until the next sample.

The next sample comes when the headroom left (KiB above the level that
matters: TERM for the daemon's ticks, the idle gate for the idle wait)
could be gone at the fill rate we assume, clamped to [min_s, max_s].  The
assumed rate is ``RATE_SAFETY`` times the fastest decline measured over the
last ``RATE_WINDOW_S`` seconds, never below the floor and never above the
ceiling.

Pure (no I/O, no clock): judge/decide.py (the ticks) and sense/sample.py
(the Python idle wait) use it.  The C idle wait keeps its own copy on its
hot path (_reader.c's pyoomd_idle_interval and pyoomd_idle_track, for
``next_interval_s`` and ``PeakRate``), held to these results bit for bit by
tests/test_interval.py.
"""

from __future__ import annotations

import dataclasses

# Fill rate window: 2 s holds the last burst (a hog at 256 MiB/s shows its
# rate within 2 samples) yet forgets it soon after memory is freed.
RATE_WINDOW_S = 2.0
# Slopes over at least 20 ms: a hog allocating in 1 MiB steps every 4 ms
# shows its rate, not the size of its steps; at most 100 slopes in a window.
RATE_STEP_S = 0.02
# Headroom is divided by twice the measured rate: the next sample then comes
# when at most half the headroom can be gone, even if the rate doubles.
RATE_SAFETY = 2.0


def assumed_rate(measured_kib_s: float, floor_kib_s: float, ceil_kib_s: float,
                 safety: float = RATE_SAFETY) -> float:
    """The fill rate (KiB/s) the headroom is divided by."""
    return min(max(measured_kib_s * safety, floor_kib_s), ceil_kib_s)


def clamp_interval(t: float, min_s: float, max_s: float) -> float:
    return min(max_s, max(min_s, t))


def next_interval_s(headroom_kib: int, measured_kib_s: float, floor_kib_s: float, ceil_kib_s: float,
                    min_s: float, max_s: float, safety: float = RATE_SAFETY) -> float:
    """Seconds until the next sample for one headroom (the idle wait's rule;
    the daemon's ticks add the swap headroom's time: decide.sleep_for)."""
    return clamp_interval(headroom_kib / assumed_rate(measured_kib_s, floor_kib_s, ceil_kib_s, safety),
                          min_s, max_s)


@dataclasses.dataclass(slots=True)
class PeakRate:
    """The idle wait's measured rate: the fastest decline of MemAvailable
    (KiB/s) between samples at least ``step_s`` apart, forgotten after
    ``window_s`` (decide.RateTracker keeps the ticks' own, with swap)."""

    peak: float  # KiB/s, >= 0
    peak_t: float  # when it was measured
    anchor_t: float | None = None  # start of the slope being measured
    anchor_avail: int = 0

    @classmethod
    def seeded(cls, rate_kib_s: float, now: float) -> PeakRate:
        """Starting from the caller's own measurement (0: none)."""
        return cls(max(0.0, rate_kib_s), now)

    def add(self, now: float, avail_kib: int, step_s: float, window_s: float) -> float:
        """Take the sample ``avail_kib`` read at ``now``; the peak after it."""
        if self.anchor_t is None or now - self.anchor_t > window_s:
            self.anchor_t, self.anchor_avail = now, avail_kib
        elif now - self.anchor_t >= step_s:
            slope = (self.anchor_avail - avail_kib) / (now - self.anchor_t)
            if slope >= self.peak or now - self.peak_t > window_s:
                self.peak, self.peak_t = max(0.0, slope), now
            self.anchor_t, self.anchor_avail = now, avail_kib
        if now - self.peak_t > window_s:
            self.peak = 0.0
        return self.peak
