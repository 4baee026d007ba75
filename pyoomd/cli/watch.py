"""``pyoomd watch``: a live line per second, judged as the daemon judges."""

from __future__ import annotations

import argparse
from typing import Any

from ..daemon.launch import open_sampler
from ..errors import EXIT_OK
from ..judge.choose import Scoring, choose
from ..model import Candidate, MemSample
from ..sense import snapshot
from ..sense.facts import Facts, kib_cell, read_facts
from ..sense.procfs import Procfs
from ..settings.schema import Settings
from ..textsafe import cell
from .options import load_policies_for, settings_for
from .scoring import tool_procfs


def watch_fields(s: MemSample, level: str, victim: Candidate | None = None,
                 facts: Facts | None = None) -> dict[str, Any]:
    """One ``pyoomd watch`` reading (pure); ``victim``: who the daemon would
    choose now (judge/choose.py), if anyone; ``facts``: its psutil facts."""
    some = s.psi.some.avg10 if s.psi is not None else None
    full = s.psi.full.avg10 if s.psi is not None and s.psi.full is not None else None
    f: dict[str, Any] = {"mem_available_kib": s.mem_available_kib, "mem_available_pct": round(s.mem_available_pct, 1),
                         "swap_free_kib": s.swap_free_kib, "swap_free_pct": round(s.swap_free_pct, 1),
                         "psi_some_avg10": some, "psi_full_avg10": full, "level": level}
    if victim is not None:
        f["victim"] = {"pid": victim.proc.pid, "comm": victim.proc.comm, "badness": victim.badness,
                       "growth_points": victim.growth_points}
        if facts is not None:
            f["victim"]["facts"] = facts.as_dict()
    return f


def watch_line(f: dict[str, Any]) -> str:
    def pct(v: float | None) -> str:
        return "    -" if v is None else f"{v:5.1f}"
    v = f.get("victim")
    who = f"  {v['pid']} {cell(v['comm'])} ({v['badness']}{v['growth_points']:+d})" if v else ""
    facts = v.get("facts") if v else None
    if facts is not None:
        who += (f" {cell(facts['user'] or '-')} frees {kib_cell(facts['frees_kib'])} MiB"
                if facts["why"] is None else " - -")
    return (f"{f['mem_available_kib'] // 1024:>9} MiB {f['mem_available_pct']:5.1f}%  "
            f"{f['swap_free_kib'] // 1024:>9} MiB {f['swap_free_pct']:5.1f}%  "
            f"{pct(f['psi_some_avg10'])}  {pct(f['psi_full_avg10'])}  {f['level']}{who}")


class WatchChoice:
    """``watch``'s victim, chosen as the daemon chooses (judge/choose.py):
    the same policies and cgroup preferences, and growth followed the
    daemon's way (between WARN and TERM, one look a line)."""

    def __init__(self, args: argparse.Namespace, settings: Settings, procfs: Procfs, first: MemSample) -> None:
        from ..judge.growth import GrowthTracker
        from ..settings.amounts import Thresholds

        self.settings, self.procfs = settings, procfs
        self.policy = load_policies_for(args, settings).policy
        th: Thresholds = settings.compile(first.mem_total_kib, first.swap_total_kib)
        self.tracker = GrowthTracker(first.mem_total_kib, settings.growth.weight, settings.growth.window,
                                     max(1, th.mem_warn_kib - th.mem_term_kib))
        self.scores: dict[int, int] = {}
        self.followed = False

    def victim(self, s: MemSample, level: Any, now: float) -> Candidate | None:
        import functools

        from ..judge.growth import NO_ATTRIBUTION
        from ..model import Level
        from ..sense.cgroup import Cgroups

        g = self.settings.growth
        if level < Level.WARN or not g.enabled:
            self.tracker.clear()
            self.scores, self.followed = {}, False
        else:
            self.tracker.observe_available(now, s.mem_available_kib)
            if level < Level.TERM:
                seen, self.scores = snapshot.follow(self.procfs, snapshot.default_skip(self.procfs),
                                                    self.scores, g.follow_top)
                uptime = snapshot.read_uptime_s(self.procfs)
                for ident, mem in seen:
                    born = None if uptime is None else now - (uptime - ident[1] / snapshot.CLOCK_TICKS)
                    self.tracker.observe(now, ident, mem, born)
                self.followed = True
        att = NO_ATTRIBUTION
        if self.followed:
            att = self.tracker.attribution(now, snapshot.read_uptime_s(self.procfs), snapshot.CLOCK_TICKS)
        pref = Cgroups(self.procfs).preference_of_path if self.settings.cgroups.preferences else None
        scoring = Scoring(self.policy, att, pref, self.scores if self.followed else None)
        return choose(scoring, functools.partial(snapshot.scan, self.procfs)).victim


def cmd_watch(args: argparse.Namespace) -> int:
    """A live line a second, judged with the daemon's own thresholds and PSI
    rule, with the victim the daemon would choose now."""
    import json
    import time

    from ..judge.make import make_judge
    from ..sense.vmstat import Vmstat
    from ..sense.zram import Zram

    settings = settings_for(args)
    procfs = tool_procfs(args)
    sampler = open_sampler(procfs, args.reader or settings.reader)
    zram = Zram(procfs)
    first = sampler.read()
    th = settings.compile(first.mem_total_kib, first.swap_total_kib)
    judge = make_judge(settings, th)  # the daemon's judge: PSI, swap relief and thrash rules included
    vmstat = Vmstat(procfs)  # their swap and refault counters, read as the daemon reads them
    chooser = WatchChoice(args, settings, procfs, first) if not getattr(args, "no_victim", False) else None
    if not args.json:
        print(f"{'AVAILABLE':>16} {'':>5}  {'SWAP FREE':>15} {'':>5}  {'SOME':>5}  {'FULL':>5}  LEVEL"
              f"{'  VICTIM (BADNESS+GROWTH) USER FREES' if chooser else ''}"
              f"   (PSI: avg10 %; swap free{' counts zram by its net gain' if zram.active else ''})",
              flush=True)
    n = 0
    while args.count is None or n < args.count:
        if n:
            time.sleep(args.interval)
        s = zram.adjust(sampler.read())
        now = time.monotonic()
        level = judge.judge(s, now, vmstat.read()).level
        victim = chooser.victim(s, level, now) if chooser is not None else None
        facts = read_facts(procfs, victim.proc.pid, victim.proc.start_time) if victim is not None else None
        f = watch_fields(s, level.name, victim, facts)
        print(json.dumps(f) if args.json else watch_line(f), flush=True)
        n += 1
    return EXIT_OK
