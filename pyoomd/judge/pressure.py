"""PSI as a kill condition: a pure state machine (no I/O, no clock).

TERM when the chosen PSI average (``some``/``full``, ``avg10``/``avg60``)
stays above the TERM threshold for ``duration`` seconds; KILL likewise for
the optional KILL threshold.  Two guards against false kills:

- the gate: PSI counts only while MemAvailable is at or below the gate (the
  WARN level, default 20 %).  An I/O-heavy job with plenty of free memory can
  show memory stalls (page cache refaults); nohang killed on PSI alone there.
- the post-action delay: after we act, PSI may not trigger again for
  ``post_action_delay`` seconds (default 15 s, as oomd and systemd-oomd):
  avg10 is a 10 s running average and stays high for seconds after the
  culprit is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..model import Level, MemSample

if TYPE_CHECKING:  # annotations only
    from ..settings.schema import PsiConfig


@dataclass(frozen=True, slots=True)
class PsiRule:
    """Compiled ``psi:`` settings."""

    enabled: bool
    line: str  # "some" | "full"
    avg: str  # "avg10" | "avg60"
    term_pct: float
    kill_pct: float | None
    duration_s: float
    post_action_delay_s: float
    gate_kib: int  # PSI counts only when MemAvailable <= this


def compile_rule(cfg: PsiConfig, gate_kib: int) -> PsiRule:
    """Settings -> the frozen rule; ``gate_kib`` is the resolved WARN level."""
    return PsiRule(cfg.enabled, cfg.line, cfg.avg, cfg.term, cfg.kill, cfg.duration,
                   cfg.post_action_delay, gate_kib)


@dataclass(frozen=True, slots=True)
class PsiVerdict:
    level: Level
    reason: str
    # Seconds until a running sustain timer could fire (None: no timer).
    due_in_s: float | None = None


class PressureJudge:
    """Sustain timers over timed samples."""

    def __init__(self, rule: PsiRule) -> None:
        self.rule = rule
        self._term_since: float | None = None
        self._kill_since: float | None = None
        self._quiet_until = float("-inf")

    def value(self, sample: MemSample) -> float | None:
        """The watched average in percent, or None without PSI (or ``full``)."""
        if sample.psi is None:
            return None
        line = sample.psi.full if self.rule.line == "full" else sample.psi.some
        return None if line is None else float(getattr(line, self.rule.avg))

    def judge(self, sample: MemSample, now: float) -> PsiVerdict:
        r = self.rule
        value = self.value(sample)
        if not r.enabled or value is None:
            return self._reset(Level.OK, "")
        if now < self._quiet_until:
            return self._reset(Level.OK, f"post-action delay ({self._quiet_until - now:.1f}s left)")
        if sample.mem_available_kib > r.gate_kib:
            return self._reset(Level.OK, "")
        self._term_since = _since(self._term_since, value > r.term_pct, now)
        self._kill_since = _since(self._kill_since, r.kill_pct is not None and value > r.kill_pct, now)
        what = f"PSI {r.line} {r.avg} {value:.1f}%"
        if self._sustained(self._kill_since, now):
            return PsiVerdict(Level.KILL, f"{what} > kill {r.kill_pct:g}% for {r.duration_s:g}s")
        if self._sustained(self._term_since, now):
            return PsiVerdict(Level.TERM, f"{what} > term {r.term_pct:g}% for {r.duration_s:g}s", self._due(now))
        return PsiVerdict(Level.OK, what, self._due(now))

    def note_action(self, now: float) -> None:
        """We just acted (signal sent, or would have been in dry-run)."""
        self._quiet_until = now + self.rule.post_action_delay_s
        self._term_since = self._kill_since = None

    def _sustained(self, since: float | None, now: float) -> bool:
        return since is not None and now - since >= self.rule.duration_s

    def _due(self, now: float) -> float | None:
        """Time until the next running timer reaches the duration."""
        dues = [s + self.rule.duration_s - now for s in (self._term_since, self._kill_since)
                if s is not None and s + self.rule.duration_s > now]
        return min(dues) if dues else None

    def _reset(self, level: Level, reason: str) -> PsiVerdict:
        self._term_since = self._kill_since = None
        return PsiVerdict(level, reason)


def _since(since: float | None, above: bool, now: float) -> float | None:
    if not above:
        return None
    return now if since is None else since
