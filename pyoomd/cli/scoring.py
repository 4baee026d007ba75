"""What the one-shot tools (rank, explain, watch, record) build as the
daemon does: the process tree to read, the Scoring, a growth measurement."""

from __future__ import annotations

import argparse
from typing import Any

from ..judge.choose import Scoring
from ..sense import snapshot
from ..sense.procfs import Procfs
from ..sense.sample import Sampler
from ..settings.schema import Settings


def measure_growth(procfs: Procfs, settings: Settings, seconds: float) -> Any:
    """A growth tracker fed two looks at every process and MemAvailable,
    ``seconds`` apart (rank/explain are one-shot; the daemon follows
    continuously).  Returns the tracker."""
    import time

    from ..judge.growth import GrowthTracker

    with Sampler(procfs, "python") as sampler:
        first = sampler.read()
        th = settings.compile(first.mem_total_kib, first.swap_total_kib)
        tracker = GrowthTracker(first.mem_total_kib, settings.growth.weight,
                                max(seconds, settings.growth.window), max(1, th.mem_warn_kib - th.mem_term_kib))
        if seconds <= 0 or not settings.growth.enabled:
            return tracker
        skip = snapshot.default_skip(procfs)
        t0 = time.monotonic()
        for _ in range(2):
            seen, _scores = snapshot.follow(procfs, skip, {}, 1 << 30)
            now = time.monotonic()
            tracker.observe_available(now, sampler.read().mem_available_kib)
            uptime = snapshot.read_uptime_s(procfs)
            for ident, mem_kib in seen:
                born = None if uptime is None else now - (uptime - ident[1] / snapshot.CLOCK_TICKS)
                tracker.observe(now, ident, mem_kib, born)
            if now - t0 < seconds:
                time.sleep(seconds - (now - t0))
    return tracker


def tool_scoring(args: argparse.Namespace, settings: Settings, procfs: Procfs, policy: Any,
                 growth_over: float = 0.0) -> Scoring:
    """The daemon's Scoring for a one-shot tool (rank, explain, watch):
    the same policies, cgroup preferences and growth term (measured over
    ``growth_over`` seconds; none if 0), through judge/choose.py."""
    import time

    from ..judge.growth import NO_ATTRIBUTION
    from ..sense.cgroup import Cgroups

    pref = Cgroups(procfs).preference_of_path if settings.cgroups.preferences else None
    attribution = NO_ATTRIBUTION
    if growth_over > 0 and settings.growth.enabled:
        tracker = measure_growth(procfs, settings, growth_over)
        attribution = tracker.attribution(time.monotonic(), snapshot.read_uptime_s(procfs), snapshot.CLOCK_TICKS)
    return Scoring(policy, attribution, pref)


def tool_procfs(args: argparse.Namespace) -> Procfs:
    """``--procfs`` and ``--cgroup-root`` (fixture trees in tests)."""
    root = getattr(args, "cgroup_root", None)
    return Procfs(args.procfs, root) if root else Procfs(args.procfs)
