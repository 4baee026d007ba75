"""Is swap relieving the pressure?  A pure rule (no I/O, no clock).

earlyoom's rule (and pyoomd's before) acts only when memory is low AND free
swap is low.  That waits for nothing when swap cannot keep up: zram
compresses at a few hundred MiB/s on 2 CPUs, a leak can grow faster, and
MemAvailable reaches zero with half the swap free (issue 11: 6.9 s below
TERM, MemAvailable 0, no daemon acted).  So, at a memory level (TERM or
KILL) whose swap condition is not met, pyoomd waits for swap only while it
really absorbs the growth, judged over the last ``window_s`` (1 s):

- MemAvailable still falling: at the net decline measured over the window,
  it would reach the floor within ``horizon_s`` (the floor: the KILL level
  while at TERM, zero while at KILL).  The decline is net of what swap-out
  takes away, so it is exactly "swap-out below the growth"; the swap-out
  rate (/proc/vmstat pswpout) is shown beside it in the reason.
- or memory stalls: PSI ``full`` stall time over the window at least
  ``stall_pct`` of it: swap is being written, but the machine is already
  waiting for memory (the thrash rule, judge/thrash.py, watches the same
  above the TERM level).

Otherwise (MemAvailable steady or rising, or falling so slowly that the
floor is more than ``horizon_s`` away, and no stall) swap is relieving it,
and the level waits for the swap condition as before.  With less than
``window_s / 4`` of history (just started, or just after a kill) nothing is
concluded and the swap condition decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .window import Span

if TYPE_CHECKING:
    from ..settings.schema import SwapReliefConfig

_MIB = 1024.0


@dataclass(frozen=True, slots=True)
class ReliefRule:
    enabled: bool = True
    window_s: float = 1.0
    horizon_s: float = 5.0
    stall_pct: float = 20.0


def compile_relief(cfg: SwapReliefConfig) -> ReliefRule:
    return ReliefRule(cfg.enabled, cfg.window, cfg.horizon, cfg.stall)


def not_relieving(rule: ReliefRule, span: Span | None, avail_kib: int, floor_kib: int) -> str | None:
    """Why swap is not relieving the pressure (a reason for the log), or
    None when it is (or when the history is too short to say)."""
    if not rule.enabled or span is None:
        return None
    decline = span.mem_decline_kib_s
    out = span.swap_out_kib_s
    swap_desc = f"swap-out {out / _MIB:.0f} MiB/s" if out is not None else "swap-out unknown"
    if decline > 0:
        to_floor = max(0, avail_kib - floor_kib) / decline
        if to_floor < rule.horizon_s:
            return (f"swap not keeping up: MemAvailable falling {decline / _MIB:.0f} MiB/s over "
                    f"{span.seconds:.1f}s ({swap_desc}), floor in {to_floor:.1f}s")
    if span.full_pct is not None and span.full_pct >= rule.stall_pct:
        return (f"swap not relieving: full stall {span.full_pct:.0f}% over {span.seconds:.1f}s "
                f">= {rule.stall_pct:g}% ({swap_desc})")
    return None
