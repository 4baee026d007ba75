"""The growth term on hand-built histories with a fake clock."""

from __future__ import annotations

from pyoomd.judge.growth import GrowthTracker

GIB = 1024 * 1024  # KiB
TOTAL = 24 * GIB


def test_steady_big_process_vs_grower() -> None:
    t = GrowthTracker(TOTAL, weight=10, window_s=20)
    db, leak = (100, 1), (200, 2)
    for s in range(13):
        t.observe(float(s), db, int(2.5 * GIB))
        t.observe(float(s), leak, 100 * 1024 + s * 128 * 1024)
    assert t.growth(db).points == 0
    g = t.growth(leak)
    assert g.grew_kib == 12 * 128 * 1024
    assert g.over_s == 12.0
    # 1.5 GiB of 24 GiB = 62.5 thousandths, x10
    assert g.points == 625
    assert t.max_points() == 625


def test_a_process_that_shrank_earns_nothing() -> None:
    t = GrowthTracker(TOTAL)
    p = (5, 9)
    t.observe(0.0, p, 3 * GIB)
    t.observe(5.0, p, 1 * GIB)
    assert t.growth(p).points == 0 and t.growth(p).grew_kib == 0


def test_growth_counts_only_inside_the_window() -> None:
    t = GrowthTracker(TOTAL, window_s=10)
    p = (7, 1)
    t.observe(0.0, p, 0)
    t.observe(1.0, p, 1 * GIB)  # grew early
    for s in range(2, 30):
        t.observe(float(s), p, 1 * GIB)  # then flat
    assert t.growth(p).points == 0


def test_process_appearing_mid_window_counts_from_first_sight() -> None:
    t = GrowthTracker(TOTAL, window_s=20)
    old, new = (1, 1), (2, 500)
    for s in range(20):
        t.observe(float(s), old, GIB)
    t.observe(15.0, new, 200 * 1024)
    t.observe(19.0, new, 200 * 1024 + GIB)
    g = t.growth(new)
    assert g.grew_kib == GIB and g.over_s == 4.0
    assert t.growth(old).points == 0


def test_pid_reuse_inside_the_window_is_a_new_history() -> None:
    t = GrowthTracker(TOTAL)
    first, reused = (42, 1000), (42, 2000)  # same pid, different start time
    t.observe(0.0, first, 0)
    t.observe(5.0, first, 2 * GIB)
    t.observe(6.0, reused, 10 * 1024)
    t.observe(7.0, reused, 20 * 1024)
    assert t.growth(reused).grew_kib == 10 * 1024
    assert t.growth(first).grew_kib == 2 * GIB


def test_single_observation_has_no_growth_and_prune_forgets() -> None:
    t = GrowthTracker(TOTAL, window_s=10)
    t.observe(0.0, (3, 3), GIB)
    assert t.growth((3, 3)).points == 0
    t.prune(100.0)
    assert len(t) == 0
