"""The thrash detector: a pure rule over counter readings (no I/O, no clock).

Thrash: the working set no longer fits, so the kernel keeps reading back
what it just evicted (swap-ins, page cache refaults) and every task waits.
MemAvailable may stay above the TERM level the whole time (what is being
refaulted still counts as available cache, or swap absorbs the growth just
fast enough), and PSI's avg10 takes seconds to rise.  So this rule reads the
kernel's exact counters between samples (judge/window.py) and acts on:

- stall: PSI ``full`` stall time over the last ``window_s`` (1 s) at least
  ``stall_pct`` of it (lmkd's critical level is 700 ms per 1 s; ours is
  lower, see README "Thrash");
- while the machine is thrashing, not merely waiting for a disk: in the same
  window swap-ins (pswpin) of at least ``min_swapin_mib_s`` or page cache
  refaults (workingset_refault_file) of at least ``min_refault_mib_s``;
- and memory is not plentiful: MemAvailable at or below the gate (the WARN
  level).  An I/O-bound job with plenty of memory can show memory stalls
  and refaults; it must not be killed for them.

Held without a break for ``duration_s`` (so a single stall, however long,
never acts alone: the window's stall share must stay high at every sample
over ``window_s + duration_s``), it gives TERM; held twice as long, KILL
(the SIGTERM'd victim may itself be swapped out and slow to exit).  After
an action, ``post_action_delay_s`` of quiet: the counters show the new state
at once (no average to decay), so it can be short.

The victim is chosen as for any other level: the growth term (RSS + swap
growth, judge/growth.py) names who pushes the others out; an idle tab being
swapped out does not grow (its RSS moves to swap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..model import Level
from .window import Span

if TYPE_CHECKING:
    from ..settings.schema import ThrashConfig

_MIB = 1024.0


@dataclass(frozen=True, slots=True)
class ThrashRule:
    enabled: bool = True
    stall_pct: float = 30.0
    window_s: float = 1.0
    duration_s: float = 1.5
    min_swapin_mib_s: float = 1.0
    min_refault_mib_s: float = 4.0
    post_action_delay_s: float = 3.0
    gate_kib: int = 0  # the rule counts only while MemAvailable <= this


def compile_thrash(cfg: ThrashConfig, gate_kib: int) -> ThrashRule:
    return ThrashRule(cfg.enabled, cfg.stall, cfg.window, cfg.duration, cfg.min_swapin_mib_s,
                      cfg.min_refault_mib_s, cfg.post_action_delay, gate_kib)


@dataclass(frozen=True, slots=True)
class ThrashVerdict:
    level: Level
    reason: str
    watching: bool = False  # stalls seen: sample often
    due_in_s: float | None = None


class ThrashJudge:
    def __init__(self, rule: ThrashRule) -> None:
        self.rule = rule
        self._since: float | None = None
        self._quiet_until = float("-inf")

    def judge(self, span: Span | None, avail_kib: int, now: float) -> ThrashVerdict:
        r = self.rule
        if not r.enabled or span is None or span.full_pct is None:
            return self._reset("")
        if now < self._quiet_until:
            return self._reset(f"thrash: post-action delay ({self._quiet_until - now:.1f}s left)")
        if avail_kib > r.gate_kib:
            return self._reset("")
        swin = span.swap_in_kib_s or 0.0
        refault = span.refault_file_kib_s or 0.0
        active = swin >= r.min_swapin_mib_s * _MIB or refault >= r.min_refault_mib_s * _MIB
        stalled = span.full_pct >= r.stall_pct
        what = (f"thrash: full stall {span.full_pct:.0f}% over {span.seconds:.1f}s, swap-in "
                f"{swin / _MIB:.1f} MiB/s, refaults {refault / _MIB:.1f} MiB/s")
        if not (stalled and active):
            return self._reset(what if span.full_pct > 0 else "", watching=span.full_pct > 0)
        if self._since is None:
            self._since = now
        held = now - self._since
        if held >= 2 * r.duration_s:
            return ThrashVerdict(Level.KILL, f"{what} for {held:.1f}s (>= {2 * r.duration_s:g}s)", True)
        if held >= r.duration_s:
            return ThrashVerdict(Level.TERM, f"{what} for {held:.1f}s (>= {r.duration_s:g}s)", True,
                                 2 * r.duration_s - held)
        return ThrashVerdict(Level.OK, what, True, r.duration_s - held)

    def note_action(self, now: float) -> None:
        self._quiet_until = now + self.rule.post_action_delay_s
        self._since = None

    def _reset(self, reason: str, watching: bool = False) -> ThrashVerdict:
        self._since = None
        return ThrashVerdict(Level.OK, reason, watching)
