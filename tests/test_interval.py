"""pyoomd/interval.py's sampling rule is the one rule: the Python idle
wait (sense/sample.py idle_sleep_s), the daemon's ticks (judge/decide.py
sleep_for) and the C idle wait (_reader.c pyoomd_idle_interval, which stays
in C: it runs between samples with the GIL released) give the same
interval for the same inputs, to the last bit."""

from __future__ import annotations

from types import SimpleNamespace

from fuzzing import fuzz
from helpers import EXT, needs_cffi
from hypothesis import example, given
from hypothesis import strategies as st

from pyoomd.interval import RATE_SAFETY, PeakRate, next_interval_s
from pyoomd.judge import decide
from pyoomd.model import MemSample
from pyoomd.sense.sample import IdleParams, idle_sleep_s

KIB = st.integers(0, 1 << 46)  # MemAvailable and levels up to 64 TiB
RATES = st.one_of(st.just(0.0), st.floats(0.0, 1e9), st.sampled_from([1000.0, 6000 * 1024.0]))
POSITIVE_RATES = st.floats(1e-3, 1e9)  # the floor divides: it is never 0 (the config refuses 0)
SECONDS = st.floats(0.0, 10.0)
SAFETIES = st.one_of(st.just(RATE_SAFETY), st.floats(0.5, 8.0))
IDLE = IdleParams(1000, 1.0, 0.0, 0.002, 1.0, 1000.0, 1e9)  # test_idle.py's test_sleep_rule


@st.composite
def idle_params(draw: st.DrawFn) -> IdleParams:
    lo_rate = draw(POSITIVE_RATES)
    hi_rate = draw(st.one_of(st.just(lo_rate), st.floats(lo_rate, 1e12)))
    lo_s = draw(SECONDS)
    hi_s = draw(st.one_of(st.just(lo_s), st.floats(lo_s, 10.0)))
    return IdleParams(gate_kib=draw(KIB), timeout_s=1.0, first_sleep_s=0.0, min_interval_s=lo_s,
                      max_interval_s=hi_s, min_rate_kib_s=lo_rate, max_rate_kib_s=hi_rate,
                      rate_safety=draw(SAFETIES))


def c_interval(p: IdleParams, avail_kib: int, peak_kib_s: float) -> float:
    assert EXT is not None
    w = EXT.ffi.new("struct pyoomd_idle *")
    w.gate_kib, w.rate_safety = p.gate_kib, p.rate_safety
    w.min_interval_s, w.max_interval_s = p.min_interval_s, p.max_interval_s
    w.min_rate_kib_s, w.max_rate_kib_s = p.min_rate_kib_s, p.max_rate_kib_s
    return float(EXT.lib.pyoomd_idle_interval(w, avail_kib, peak_kib_s))


@needs_cffi
@fuzz(150, 2000)
@given(idle_params(), st.lists(st.tuples(KIB, RATES), min_size=1, max_size=30))
@example(IDLE, [(1500, 0.0)])  # 0.5 s: the floor rate
@example(IDLE, [(1500, 1000.0)])  # 0.25 s: twice the peak
@example(IDLE, [(10**9, 0.0)])  # the ceiling
@example(IDLE, [(1001, 0.0)])  # the floor
@example(IDLE, [(10, 0.0)])  # below the gate
@example(IdleParams(0, 1.0, 0.0, 0.1, 0.1, 5.0, 5.0), [(1 << 46, 1e9)])  # min == max everywhere
def test_the_c_idle_wait_sleeps_by_the_python_rule(p: IdleParams, inputs: list[tuple[int, float]]) -> None:
    for avail_kib, peak_kib_s in inputs:
        want = next_interval_s(avail_kib - p.gate_kib, peak_kib_s, p.min_rate_kib_s, p.max_rate_kib_s,
                               p.min_interval_s, p.max_interval_s, p.rate_safety)
        assert idle_sleep_s(avail_kib, p, peak_kib_s) == want
        assert c_interval(p, avail_kib, peak_kib_s) == want
        assert p.min_interval_s <= want <= p.max_interval_s


@fuzz(100, 2000)
@given(idle_params(), KIB, KIB, RATES)
def test_the_ticks_sleep_by_the_same_rule_without_swap(p: IdleParams, avail_kib: int, term_kib: int,
                                                       mem_kib_s: float) -> None:
    # decide.sleep_for in MiB/s; a power of two, so the floors convert exactly
    mib = 1024.0
    cfg = SimpleNamespace(min_rate_mib_s=p.min_rate_kib_s / mib, max_rate_mib_s=p.max_rate_kib_s / mib,
                          swap_min_rate_mib_s=1.0, min_interval=p.min_interval_s, max_interval=p.max_interval_s)
    th = decide.Thresholds(mem_warn_kib=term_kib, mem_term_kib=term_kib, mem_kill_kib=0,
                           swap_term_kib=0, swap_kill_kib=0)
    got = decide.sleep_for(MemSample(1 << 47, avail_kib, 0, 0), th, decide.Rates(mem_kib_s, 0.0), cfg)  # type: ignore[arg-type]
    assert got == next_interval_s(max(0, avail_kib - term_kib), mem_kib_s, p.min_rate_kib_s, p.max_rate_kib_s,
                                  p.min_interval_s, p.max_interval_s)


# -- the measured rate: PeakRate and pyoomd_idle_track ------------------------------------
# time to the next sample, and MemAvailable's change (KiB); the sampled
# ones, exact in binary, give equal slopes (a steady decline: ties with the peak)
DTS = st.one_of(st.floats(0.0, 0.05), st.floats(0.0, 3.0), st.sampled_from([0.03125, 0.25, 2.5]))
STEPS = st.lists(st.tuples(DTS, st.one_of(st.integers(-(1 << 20), 1 << 20), st.sampled_from([-1024, 0]))),
                 min_size=1, max_size=40)
STEADY = [(0.25, -1024)] * 6  # 4 MiB/s, every slope equal to the peak


@needs_cffi
@fuzz(60, 1000)
@example(IDLE, 0.0, 0.0, 1 << 30, STEADY, (0.02, 2.0))
@example(IDLE, 4096.0, 0.0, 1 << 30, STEADY, (0.02, 2.0))
@example(IDLE, 0.0, 0.0, 1 << 30, [*STEADY, (2.5, -1024), (2.5, 0)], (0.25, 2.5))  # ties with step and window
@given(idle_params(), st.floats(0.0, 1e9), st.floats(0.0, 1e6), KIB, STEPS,
       st.sampled_from([(0.02, 2.0), (0.001, 0.5), (0.5, 0.1), (0.25, 2.5)]))  # rate_step_s > 0
def test_the_c_idle_wait_measures_the_rate_as_python_does(p: IdleParams, seed_kib_s: float, start: float,
                                                          avail0: int, steps: list[tuple[float, int]],
                                                          step_window: tuple[float, float]) -> None:
    """Sample by sample, the C tracker's peak and state are PeakRate's, and
    the next interval from them is the same."""
    assert EXT is not None
    step_s, window_s = step_window
    w = EXT.ffi.new("struct pyoomd_idle *")
    w.gate_kib, w.rate_safety = p.gate_kib, p.rate_safety
    w.min_interval_s, w.max_interval_s = p.min_interval_s, p.max_interval_s
    w.min_rate_kib_s, w.max_rate_kib_s = p.min_rate_kib_s, p.max_rate_kib_s
    w.rate_step_s, w.rate_window_s = step_s, window_s
    c = EXT.ffi.new("struct pyoomd_rate *")  # as pyoomd_idle_wait seeds it
    c.peak, c.peak_t, c.anchor_t, c.anchor_avail = max(0.0, seed_kib_s), start, -1, 0
    py = PeakRate.seeded(seed_kib_s, start)
    now, avail = start, avail0
    for dt, d_avail in steps:
        now, avail = now + dt, max(0, avail + d_avail)
        peak = py.add(now, avail, step_s, window_s)
        assert EXT.lib.pyoomd_idle_track(w, c, now, avail) == peak
        assert (c.peak, c.peak_t, c.anchor_t, c.anchor_avail) == (py.peak, py.peak_t, py.anchor_t, py.anchor_avail)
        assert EXT.lib.pyoomd_idle_interval(w, avail, peak) == idle_sleep_s(avail, p, peak)
