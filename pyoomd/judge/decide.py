"""Thresholds and adaptive sampling: a pure state machine.

No I/O, no clock: every call gets ``now`` (monotonic seconds) from the caller.

Levels follow earlyoom, so its users get what they know: act when available
memory is low AND free swap is low (no swap at all counts as low).

Sleep: time until the TERM level could be reached at the fill rate we assume,
``headroom / rate``, clamped to [min_interval, max_interval] (the rule is
pyoomd/interval.py's).  The assumed rate is twice the fastest fill rate
measured over the last ``RATE_WINDOW_S`` seconds, never below the configured
floor (earlyoom's 6000 MiB/s) and never above the ceiling.  So a quiet system is sampled once a second, a system near
its threshold every few milliseconds, and a burst faster than earlyoom's
constant is followed at its own measured speed instead of being outrun.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import interval
from ..interval import assumed_rate, clamp_interval
from ..model import Decision, Level, MemSample
from ..sense.vmstat import VmCounters
from ..settings.amounts import Thresholds
from ..units import human_kib
from .pressure import PressureJudge, PsiRule
from .relief import ReliefRule, not_relieving
from .thrash import ThrashJudge, ThrashRule
from .window import Window, point_of

if TYPE_CHECKING:  # annotations only
    from ..settings.schema import SamplingConfig

# The fill rate's window, slope step and safety factor: pyoomd/interval.py's
# (the daemon hands them to the idle wait from here).
RATE_WINDOW_S = interval.RATE_WINDOW_S
RATE_STEP_S = interval.RATE_STEP_S
RATE_SAFETY = interval.RATE_SAFETY
# While the relief or thrash rule is watching (memory at a level whose swap
# condition is not met, or memory stalls seen below WARN), sample at least
# this often: their windows are 1 s, and a 150 MiB/s leak takes ~1.3 s from
# a 400 MiB TERM level to a 200 MiB KILL level.
WATCH_INTERVAL_S = 0.05
_MIB = 1024.0


def memory_level(sample: MemSample, th: Thresholds) -> Level:
    """The level MemAvailable alone reaches (swap not considered)."""
    avail = sample.mem_available_kib
    if avail <= th.mem_kill_kib:
        return Level.KILL
    if avail <= th.mem_term_kib:
        return Level.TERM
    return Level.WARN if avail <= th.mem_warn_kib else Level.OK


def level_of(sample: MemSample, th: Thresholds) -> tuple[Level, str]:
    """The level for one sample, and a human reason."""
    avail = sample.mem_available_kib
    no_swap = sample.swap_total_kib == 0
    swap = sample.swap_free_kib
    swap_desc = "no swap" if no_swap else f"SwapFree {human_kib(swap, 2)} ({sample.swap_free_pct:.1f}%)"
    mem_desc = f"MemAvailable {human_kib(avail, 2)} ({sample.mem_available_pct:.1f}%)"
    if avail <= th.mem_kill_kib and (no_swap or swap <= th.swap_kill_kib):
        return Level.KILL, f"{mem_desc} <= kill {human_kib(th.mem_kill_kib, 2)}, {swap_desc}"
    if avail <= th.mem_term_kib and (no_swap or swap <= th.swap_term_kib):
        return Level.TERM, f"{mem_desc} <= term {human_kib(th.mem_term_kib, 2)}, {swap_desc}"
    if avail <= th.mem_warn_kib:
        return Level.WARN, f"{mem_desc} <= warn {human_kib(th.mem_warn_kib, 2)}"
    return Level.OK, mem_desc


@dataclass(frozen=True, slots=True)
class Rates:
    """Fill rates in KiB/s measured over the window (0 when memory is not shrinking)."""

    mem_kib_s: float
    swap_kib_s: float


class RateTracker:
    """Fastest recent decline of MemAvailable and SwapFree, from timed samples.

    Slopes are taken between points at least ``RATE_STEP_S`` apart and kept
    for the window: at most window/step of them, so a tick costs the same
    near the threshold (a sample every 2 ms) as anywhere else."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._last: tuple[float, int, int] | None = None
        self._times: deque[float] = deque()
        self._mem: deque[float] = deque()
        self._swap: deque[float] = deque()

    def add(self, now: float, sample: MemSample) -> Rates:
        point = (now, sample.mem_available_kib, sample.swap_free_kib)
        last = self._last
        if last is None or now - last[0] > self.window_s:
            self._last = point  # first point, or after a gap: no slope spans the window
        elif now - last[0] >= RATE_STEP_S:
            dt = now - last[0]
            self._times.append(now)
            self._mem.append((last[1] - point[1]) / dt)
            self._swap.append((last[2] - point[2]) / dt)
            self._last = point
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
            self._mem.popleft()
            self._swap.popleft()
        return self.rates()

    def rates(self) -> Rates:
        return Rates(max(0.0, max(self._mem, default=0.0)), max(0.0, max(self._swap, default=0.0)))

    def reset(self) -> None:
        self._last = None
        self._times.clear()
        self._mem.clear()
        self._swap.clear()


def sleep_for(sample: MemSample, th: Thresholds, rates: Rates, cfg: SamplingConfig) -> float:
    """Seconds until the next sample: time for the TERM level to be reachable."""
    mem_rate = assumed_rate(rates.mem_kib_s, cfg.min_rate_mib_s * _MIB, cfg.max_rate_mib_s * _MIB)
    t = max(0, sample.mem_available_kib - th.mem_term_kib) / mem_rate
    if sample.swap_total_kib:
        swap_rate = assumed_rate(rates.swap_kib_s, cfg.swap_min_rate_mib_s * _MIB, cfg.max_rate_mib_s * _MIB)
        t += max(0, sample.swap_free_kib - th.swap_term_kib) / swap_rate
    return clamp_interval(t, cfg.min_interval, cfg.max_interval)


class Judge:
    """Turns timed samples into decisions.  Keeps the rate history, the
    counter window of the swap-relief and thrash rules (judge/relief.py,
    judge/thrash.py) and, with a PSI rule, the PSI sustain timers
    (judge/pressure.py)."""

    def __init__(self, th: Thresholds, sampling: SamplingConfig, psi: PsiRule | None = None,
                 relief: ReliefRule | None = None, thrash: ThrashRule | None = None) -> None:
        self.th = th
        self.sampling = sampling
        self.rates = RateTracker()
        self.pressure = PressureJudge(psi) if psi is not None and psi.enabled else None
        self.relief = relief if relief is not None and relief.enabled else None
        self.thrash = ThrashJudge(thrash) if thrash is not None and thrash.enabled else None
        self.window = Window()
        self.watching = False  # the relief or thrash rule wants frequent samples

    def use_thresholds(self, th: Thresholds) -> None:
        """New levels (MemTotal or SwapTotal changed); the rate history and
        the PSI timers stay, the PSI gate follows the WARN level."""
        self.th = th
        if self.pressure is not None:
            self.pressure.rule = dataclasses.replace(self.pressure.rule, gate_kib=th.mem_warn_kib)

    def judge(self, sample: MemSample, now: float, vm: VmCounters | None = None) -> Decision:
        rates = self.rates.add(now, sample)
        level, reason, psi_due = self._level(sample, now, vm)
        if level >= Level.TERM:
            sleep = self.sampling.min_interval
        else:
            sleep = sleep_for(sample, self.th, rates, self.sampling)
            if psi_due is not None:  # wake when a PSI sustain timer could fire
                sleep = max(self.sampling.min_interval, min(sleep, psi_due))
            if self.watching:
                sleep = max(self.sampling.min_interval, min(sleep, WATCH_INTERVAL_S))
        return Decision(level=level, reason=reason, sleep_s=sleep)

    def level_now(self, sample: MemSample, now: float, vm: VmCounters | None = None) -> Level:
        """The level of a re-sample taken while acting (memory, swap relief, thrash, PSI)."""
        return self._level(sample, now, vm)[0]

    def _level(self, sample: MemSample, now: float, vm: VmCounters | None = None,
               ) -> tuple[Level, str, float | None]:
        level, reason = level_of(sample, self.th)
        due: float | None = None
        watching = False
        if self.relief is not None or self.thrash is not None:
            self.window.add(point_of(now, sample, vm))
        if self.relief is not None and sample.swap_total_kib:
            mem = memory_level(sample, self.th)
            if mem >= Level.TERM and mem > level:
                watching = True
                r = self.relief
                floor = self.th.mem_kill_kib if mem == Level.TERM else 0
                why = not_relieving(r, self.window.span(r.window_s, r.window_s / 4), sample.mem_available_kib,
                                    floor)
                if why is not None:
                    limit = self.th.mem_term_kib if mem == Level.TERM else self.th.mem_kill_kib
                    level = mem
                    reason = (f"MemAvailable {human_kib(sample.mem_available_kib, 2)} <= {mem.name.lower()} "
                              f"{human_kib(limit, 2)}, {why}")
        if self.thrash is not None:
            t = self.thrash.rule
            v = self.thrash.judge(self.window.span(t.window_s, t.window_s / 2), sample.mem_available_kib, now)
            watching = watching or v.watching
            due = v.due_in_s
            if v.level > level:
                level, reason = v.level, f"{v.reason}, {reason}"
        self.watching = watching
        if self.pressure is None:
            return level, reason, due
        psi = self.pressure.judge(sample, now)
        if psi.due_in_s is not None:
            due = psi.due_in_s if due is None else min(due, psi.due_in_s)
        if psi.level > level:
            return psi.level, f"{psi.reason}, {reason}", due
        return level, reason, due

    def note_action(self, now: float) -> None:
        """A victim was just signalled: start the PSI and thrash post-action delays."""
        if self.pressure is not None:
            self.pressure.note_action(now)
        if self.thrash is not None:
            self.thrash.note_action(now)

    def forget_rates(self) -> None:
        """After a kill freed memory the old slope says nothing about the next one."""
        self.rates.reset()
        self.window.clear()

    def mem_rate_kib_s(self) -> float:
        """MemAvailable's fill rate now (KiB/s, 0 when not shrinking): the idle wait starts from it."""
        return self.rates.rates().mem_kib_s

    def note_earlier(self, now: float, sample: MemSample) -> None:
        """A sample taken between ticks (the idle wait's last one), for the rate history only."""
        self.rates.add(now, sample)
