"""Ranking: the kernel's oom_score, adjusted by policies.  Pure.

badness = clamp(oom_score + sum(policy adjusts) + growth term, 0, 2000)

(the growth term is judge/growth.py's: its part in the decline of
MemAvailable.)  The whole choice, cgroup preferences included, is
judge/choose.py's ``choose``; this module scores one process.

The kernel's oom_score already is "thousandths of memory used, plus
oom_score_adj", on a 0..2000 scale; we keep that scale so a policy's
``adjust`` means the same as an oom_score_adj would.  A process whose
oom_score_adj is -1000 is never a candidate, whatever a policy says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..model import Candidate, Excluded, ProcInfo
from .growth import NO_GROWTH, Growth

OOM_SCORE_ADJ_MIN = -1000  # include/uapi/linux/oom.h: "never kill"
BADNESS_MAX = 2000  # the kernel's oom_score range is 0..2000


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policies say about one process."""

    adjust: int = 0
    protect: bool = False
    rules: tuple[str, ...] = ()
    signal: str | None = None
    grace_s: float | None = None
    kill_group: bool = False
    kill_cgroup: bool = False
    protect_rule: str | None = None
    action: tuple[str, ...] | None = None  # soft action (act/soft.py) of the first rule that sets one
    action_rule: str | None = None


class Policy(Protocol):
    """Anything that can judge a process (see pyoomd.policy)."""

    @property
    def max_bonus(self) -> int: ...

    def evaluate(self, proc: ProcInfo) -> Verdict: ...


class NoPolicy:
    """The kernel's order, unchanged."""

    max_bonus = 0

    def evaluate(self, proc: ProcInfo) -> Verdict:
        return Verdict()


def score(proc: ProcInfo, policy: Policy | None = None, growth: Growth | None = None) -> Candidate | Excluded:
    """A candidate with its badness and reasons, or why it is not one.
    ``growth`` is the process's growth term (judge/growth.py), if followed."""
    if proc.oom_score_adj <= OOM_SCORE_ADJ_MIN:
        return Excluded(proc, "oom_score_adj is -1000 (never killed)")
    verdict = policy.evaluate(proc) if policy is not None else Verdict()
    if verdict.protect:
        return Excluded(proc, f"protected by policy rule {verdict.protect_rule or '?'}")
    g = growth if growth is not None else NO_GROWTH
    badness = max(0, min(BADNESS_MAX, proc.oom_score + verdict.adjust + g.points))
    reasons = [f"oom_score {proc.oom_score}"]
    if proc.oom_score_adj:
        reasons.append(f"(includes oom_score_adj {proc.oom_score_adj:+d})")
    if verdict.adjust:
        reasons.append(f"policy {verdict.adjust:+d} [{', '.join(verdict.rules)}]")
    if g.points:
        reasons.append(f"growth +{g.points} (grew {g.grew_kib // 1024} MiB in {g.over_s:g}s, "
                       f"{g.share:.0%} of the loss, {g.rate_kib_s / 1024:.0f} MiB/s)")
    return Candidate(
        proc=proc, badness=badness, reasons=tuple(reasons), rules=verdict.rules,
        signal=verdict.signal, grace_s=verdict.grace_s, kill_group=verdict.kill_group,
        kill_cgroup=verdict.kill_cgroup, action=verdict.action, action_rule=verdict.action_rule,
        growth_points=g.points, growth_kib=g.grew_kib, growth_over_s=g.over_s,
        growth_share=g.share, growth_rate_kib_s=g.rate_kib_s,
    )


def rank_key(c: Candidate) -> tuple[int, int, int]:
    """Highest badness first; larger RSS+swap breaks ties; then lower pid."""
    return (-c.badness, -(c.proc.rss_kib + c.proc.swap_kib), c.proc.pid)


def order(candidates: list[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=rank_key)
