"""Amounts (a threshold as written), durations, and the Thresholds they
resolve to against MemTotal and SwapTotal.

Pure and light (stdlib only): the running loop imports this module.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|[KMGT]|kB)?\s*$", re.IGNORECASE)
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")
_UNIT_KIB = {"": 1, "k": 1, "m": 1024, "g": 1024**2, "t": 1024**3}


@dataclass(frozen=True, slots=True)
class Amount:
    """A threshold as written: a percentage of the total, or a size in KiB."""

    pct: float | None = None
    kib: int | None = None

    def resolve_kib(self, total_kib: int) -> int:
        """KiB; where both a percentage and a size are given (earlyoom's -m
        with -M), the lower one wins, as in earlyoom."""
        values = []
        if self.pct is not None:
            values.append(int(total_kib * self.pct / 100.0))
        if self.kib is not None:
            values.append(self.kib)
        return min(values) if values else 0

    def __str__(self) -> str:
        parts = []
        if self.pct is not None:
            parts.append(f"{self.pct:g}%")
        if self.kib is not None:
            parts.append(f"{self.kib}KiB")
        return " or ".join(parts) or "0"


def parse_amount(raw: object) -> Amount:
    """``10%`` -> percent; ``2G``, ``512M``, ``300K``; a bare number is KiB (as
    earlyoom's -M/-S); ``[10%, 1G]``: both, the lower wins (earlyoom's -m
    with -M).  Raises ValueError with the raw text."""
    if isinstance(raw, (list, tuple)) and len(raw) == 2:
        a, b = parse_amount(raw[0]), parse_amount(raw[1])
        if (a.pct is None) == (b.pct is None):
            raise ValueError(f"a pair must be one percentage and one size, got {list(raw)!r}")
        return Amount(pct=a.pct if a.pct is not None else b.pct, kib=a.kib if a.kib is not None else b.kib)
    if isinstance(raw, bool):
        raise ValueError(f"expected a percentage or a size, got {raw!r}")
    if isinstance(raw, (int, float)):
        if not math.isfinite(raw) or raw < 0:
            raise ValueError(f"not a size: {raw!r}")
        return Amount(kib=int(raw))
    text = str(raw).strip()
    if text.endswith("%"):
        try:
            pct = float(text[:-1])
        except ValueError:
            raise ValueError(f"not a percentage: {raw!r}") from None
        if not math.isfinite(pct) or not 0.0 <= pct <= 100.0:
            raise ValueError(f"percentage out of 0..100: {raw!r}")
        return Amount(pct=pct)
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a percentage or size (like 10%, 2G, 512M, 1048576): {raw!r}")
    unit = (m.group(2) or "")[:1].lower()
    return Amount(kib=int(float(m.group(1)) * _UNIT_KIB[unit]))


def parse_duration_s(raw: object) -> float:
    """``5``, ``5s``, ``250ms``, ``2m`` -> seconds."""
    if isinstance(raw, bool):
        raise ValueError(f"expected a duration, got {raw!r}")
    if isinstance(raw, (int, float)):
        value = float(raw)
    else:
        m = _DURATION_RE.match(str(raw))
        if not m:
            raise ValueError(f"not a duration (like 5s, 250ms): {raw!r}")
        value = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a duration: {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Levels in KiB, resolved once against MemTotal and SwapTotal."""

    mem_warn_kib: int
    mem_term_kib: int
    mem_kill_kib: int
    swap_term_kib: int
    swap_kill_kib: int
    # The WARN level as configured, when it was at or below TERM and was
    # raised (see compile_thresholds); None when used as configured.
    mem_warn_asked_kib: int | None = field(default=None, compare=False)


# Where WARN goes when configured at or below TERM: this much of MemTotal
# above TERM, the default distance between them (20 % and 10 %).  Growth
# following and the PSI gate need that room; clamped onto TERM (the old
# behaviour) they had none, and the order fell back to pure oom_score.
WARN_ABOVE_TERM_PCT = 10.0


def warn_level_kib(asked_kib: int, term_kib: int, total_kib: int) -> int:
    """WARN in KiB: as asked when above TERM, else TERM plus
    WARN_ABOVE_TERM_PCT of MemTotal, kept below MemTotal (and never below
    TERM)."""
    if asked_kib > term_kib:
        return asked_kib
    raised = term_kib + int(total_kib * WARN_ABOVE_TERM_PCT / 100.0)
    return max(term_kib, min(raised, total_kib - 1))


def compile_thresholds(memory: Any, swap: Any, mem_total_kib: int, swap_total_kib: int) -> Thresholds:
    """Resolve the ``memory`` (term, kill, warn) and ``swap`` (term, kill)
    Amounts; a KILL level above its TERM level is an error (KILL is the
    worse state).  WARN at or below TERM is raised above it
    (warn_level_kib), and ``mem_warn_asked_kib`` says so."""
    mem_term = memory.term.resolve_kib(mem_total_kib)
    mem_kill = memory.kill.resolve_kib(mem_total_kib)
    swap_term = swap.term.resolve_kib(swap_total_kib)
    swap_kill = swap.kill.resolve_kib(swap_total_kib)
    if mem_kill > mem_term:
        raise ConfigError("<config>", f"memory.kill ({memory.kill}) is above memory.term ({memory.term})")
    if swap_kill > swap_term:
        raise ConfigError("<config>", f"swap.kill ({swap.kill}) is above swap.term ({swap.term})")
    asked = memory.warn.resolve_kib(mem_total_kib)
    warn = warn_level_kib(asked, mem_term, mem_total_kib)
    return Thresholds(
        mem_warn_kib=warn,
        mem_term_kib=mem_term,
        mem_kill_kib=mem_kill,
        swap_term_kib=swap_term,
        swap_kill_kib=swap_kill,
        mem_warn_asked_kib=asked if warn != asked else None,
    )
