"""The sampling rule, in one place: how long until the next sample.

The next sample comes when the headroom left (KiB above the level that
matters: TERM for the daemon's ticks, the idle gate for the idle wait)
could be gone at the fill rate we assume, clamped to [min_s, max_s].  The
assumed rate is ``RATE_SAFETY`` times the fastest decline measured over the
last ``RATE_WINDOW_S`` seconds, never below the floor and never above the
ceiling.

Pure (no imports): judge/decide.py (the ticks) and sense/sample.py (the
Python idle wait) use it; _reader.c's pyoomd_idle_interval is the same rule
for the C idle wait, pinned to ``next_interval_s`` by tests/test_interval.py.
"""

from __future__ import annotations

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
