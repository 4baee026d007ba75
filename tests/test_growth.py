"""The growth term (judge/growth.py) on hand-built histories with a fake clock:
the clock is the ``now`` passed in, nothing sleeps."""

from __future__ import annotations

from pyoomd.judge.growth import LOSS_PART, POINTS_PER_WEIGHT, RATE_PART, GrowthTracker

MIB = 1024  # KiB
GIB = 1024 * MIB
TOTAL = 24 * GIB
FULL = int(10 * POINTS_PER_WEIGHT)  # a full term at the default weight


def oom_score(mem_kib: int, adj: int = 0) -> int:
    """The kernel's (5.9+) /proc/PID/oom_score for a process of that size."""
    return int((1000 + 1000 * mem_kib / TOTAL + adj) * 2 / 3)


def approach(t: GrowthTracker, avail0: int, t0: float, t1: float, step: float, used: object) -> None:
    """MemAvailable sampled every ``step`` from t0 to t1 as ``avail0 - used(t)``."""
    s = t0
    while s <= t1 + 1e-9:
        t.observe_available(s, avail0 - used(s))  # type: ignore[operator]
        s += step


def test_no_growth_no_points_whatever_the_sizes() -> None:
    t = GrowthTracker(TOTAL, approach_kib=2 * GIB)
    for s in range(10):
        t.observe(float(s), (1, 1), 3 * GIB)
        t.observe(float(s), (2, 2), 300 * MIB)
        t.observe_available(float(s), 10 * GIB)
    a = t.attribution(9.0)
    assert a.of((1, 1)).points == a.of((2, 2)).points == 0
    assert a.max_points() == 0


def test_the_sole_cause_of_the_whole_loss_still_growing_gets_the_full_term() -> None:
    t = GrowthTracker(TOTAL, approach_kib=GIB)
    leak = (200, 2)
    for s in range(13):
        t.observe(float(s), leak, 100 * MIB + s * 128 * MIB)
        t.observe(float(s), (100, 1), int(2.5 * GIB))  # an idle database
    approach(t, 20 * GIB, 0.0, 12.0, 0.5, lambda s: int(s * 128 * MIB))
    a = t.attribution(12.0)
    g = a.of(leak)
    assert g.grew_kib == 12 * 128 * MIB and g.over_s == 12.0
    assert g.share == 1.0 and g.rate_share == 1.0 and g.points == FULL
    assert a.of((100, 1)).points == 0
    assert a.loss_kib == 12 * 128 * MIB  # the decline seen and the growth agree


def test_born_inside_the_window_grew_from_zero_at_its_start() -> None:
    # A leak that takes a 300 MiB block at birth (t=4.5), first seen at t=5:
    # the block is growth, dated from the start time, not from first sight.
    t = GrowthTracker(TOTAL, approach_kib=GIB)
    leak = (300, 450)
    for s in range(5, 12):
        t.observe(float(s), leak, 300 * MIB + int((s - 4.5) * 100 * MIB), born=4.5)
    g = t.attribution(11.0).of(leak)
    assert g.grew_kib == 300 * MIB + 650 * MIB
    assert g.over_s == 6.5
    # Born long before the window: counted from its first observation only.
    old = GrowthTracker(TOTAL, approach_kib=GIB)
    for s in range(5, 12):
        old.observe(float(s), leak, 300 * MIB + int((s - 4.5) * 100 * MIB), born=-100.0)
    assert old.attribution(11.0).of(leak).grew_kib == 600 * MIB


def test_a_process_never_followed_is_dated_from_its_start_when_read() -> None:
    # Born after the last look (t=10): the scan reads it with its size; its
    # start time (in clock ticks since boot) makes all of it growth.
    t = GrowthTracker(TOTAL, approach_kib=GIB)
    t.observe(10.0, (1, 1), GIB)
    t.observe(11.0, (1, 1), GIB)
    approach(t, 20 * GIB, 8.0, 12.0, 0.5, lambda s: int(max(0.0, s - 11.2) * 500 * MIB))
    uptime = 1000.0  # seconds since boot at now = 12.0
    a = t.attribution(12.0, uptime_s=uptime, hz=100)
    young = (7, int((uptime - 0.8) * 100))  # started 0.8 s ago
    g = a.of(young, 400 * MIB)
    assert g.grew_kib == 400 * MIB and g.points > FULL // 2
    assert a.of((8, int((uptime - 60) * 100)), 400 * MIB).points == 0  # a minute old: not young
    assert a.of(young).points == 0  # no size given: nothing to date
    assert t.attribution(12.0).of(young, 400 * MIB).points == 0  # no uptime: nobody is dated


def test_bystanders_filling_at_start_lose_to_the_leak() -> None:
    # Four tabs (adj +300) still filling 50 -> 250 MiB at 25 MiB/s when a leak
    # starts from a 300 MiB block at 100 MiB/s (issue 12's measured case):
    # the tabs' start-up growth must not outweigh the leak's.
    t = GrowthTracker(TOTAL, approach_kib=int(1.2 * GIB))
    tabs = [(10 + i, 100 + i) for i in range(4)]

    def tab_mem(s: float) -> int:
        return int(min(250.0, 50 + 25 * s) * MIB)

    def leak_mem(s: float) -> int:
        return 0 if s < 3 else int((300 + 100 * (s - 3)) * MIB)

    crossing = 11.0
    for s in range(12):
        for tab in tabs:
            t.observe(float(s), tab, tab_mem(s), born=-0.5)
        if s >= 3:
            t.observe(float(s), (50, 300), leak_mem(s), born=3.0)
    approach(t, 20 * GIB, 0.0, crossing, 0.25, lambda s: 4 * tab_mem(s) + leak_mem(s))
    a = t.attribution(crossing)
    leak = oom_score(leak_mem(crossing)) + a.of((50, 300)).points
    best_tab = max(oom_score(tab_mem(crossing), 300) + a.of(tab).points for tab in tabs)
    assert leak > best_tab + 150, (leak, best_tab, a)
    # ... and by its own growth term alone, not only by its size
    assert a.of((50, 300)).points > max(a.of(tab).points for tab in tabs) + 400


def test_grew_then_stopped_loses_to_still_growing() -> None:
    # A grew 1 GiB in its first 4 s and stopped; B grows 100 MiB/s and has
    # grown 800 MiB by the crossing: B is what still drains memory.
    t = GrowthTracker(TOTAL, approach_kib=GIB)
    a_id, b_id = (1, 10), (2, 20)
    for s in range(13):
        t.observe(float(s), a_id, 100 * MIB + min(s, 4) * 256 * MIB)
        t.observe(float(s), b_id, 100 * MIB + max(0, s - 4) * 100 * MIB)
    approach(t, 20 * GIB, 0.0, 12.0, 0.5,
             lambda s: int(min(s, 4) * 256 * MIB + max(0.0, s - 4) * 100 * MIB))
    att = t.attribution(12.0)
    ga, gb = att.of(a_id), att.of(b_id)
    assert ga.grew_kib > gb.grew_kib  # A took more of the loss...
    assert ga.rate_share == 0.0 and gb.rate_share == 1.0  # ...but only B grows at the crossing
    assert gb.points > ga.points
    # big A (1.1 GiB) vs B (900 MiB): the kernel alone would pick A
    assert oom_score(900 * MIB) + gb.points > oom_score(1124 * MIB) + ga.points
    assert gb.points == int(1000 * (LOSS_PART * gb.share + RATE_PART * 1.0))


def test_a_stopped_rate_fades_when_the_process_is_no_longer_seen() -> None:
    # Followed while it grew, then no longer (its oom_score stopped rising):
    # its last observations are old, and its rate at ``now`` is 0.
    t = GrowthTracker(TOTAL, approach_kib=GIB)
    p = (5, 5)
    for s in range(5):
        t.observe(float(s), p, s * 200 * MIB)
    assert t.attribution(4.0).of(p).rate_share == 1.0
    assert t.attribution(12.0).of(p).rate_kib_s == 0.0


def test_pid_reuse_inside_the_window_is_a_new_history() -> None:
    t = GrowthTracker(TOTAL, approach_kib=GIB)
    first, reused = (42, 1000), (42, 2000)  # same pid, different start time
    t.observe(0.0, first, 0)
    t.observe(5.0, first, 2 * GIB)
    t.observe(6.0, reused, 10 * MIB, born=5.9)
    t.observe(7.0, reused, 20 * MIB)
    a = t.attribution(7.0)
    assert a.of(reused).grew_kib == 20 * MIB  # from 0 at its own start, not the first one's history
    assert a.of(first).grew_kib == 2 * GIB
    assert a.by_pid()[42] == max(a.of(first).points, a.of(reused).points)


def test_growth_counts_only_inside_the_window() -> None:
    t = GrowthTracker(TOTAL, window_s=10, approach_kib=GIB)
    p = (7, 1)
    t.observe(0.0, p, 0)
    t.observe(1.0, p, 1 * GIB)  # grew early
    for s in range(2, 30):
        t.observe(float(s), p, 1 * GIB)  # then flat
    assert t.attribution(29.0).of(p).points == 0


def test_a_process_that_shrank_earns_nothing() -> None:
    t = GrowthTracker(TOTAL, approach_kib=GIB)
    p = (5, 9)
    t.observe(0.0, p, 3 * GIB)
    t.observe(5.0, p, 1 * GIB)
    assert t.attribution(5.0).of(p).points == 0


def test_small_noise_gets_little_whoever_else_grows() -> None:
    # Nothing declined much; one process grew 20 MiB: the floors (the
    # approach, the approach over the window) keep its term small.
    t = GrowthTracker(TOTAL, approach_kib=2 * GIB)
    p = (9, 9)
    for s in range(5):
        t.observe(float(s), p, 100 * MIB + s * 5 * MIB)
        t.observe_available(float(s), 10 * GIB - s * 5 * MIB)
    assert t.attribution(4.0).of(p).points < 60


def test_single_observation_has_no_growth_and_prune_forgets() -> None:
    t = GrowthTracker(TOTAL, window_s=10)
    t.observe(0.0, (3, 3), GIB)
    assert t.attribution(0.0).of((3, 3)).points == 0
    t.prune(100.0)
    assert len(t) == 0
