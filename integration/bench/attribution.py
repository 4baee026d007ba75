"""The growth term's parts and weight, chosen on families of simulated scenes.

    python3 integration/bench/attribution.py [--scenes N] [--seed S]

No root, no real processes: each scene is a timeline of process sizes (a
leak, browser-like tabs at oom_score_adj +300 that may still be filling,
idle databases, many small processes, a grower that stopped) and the
MemAvailable they leave, sampled as the daemon samples it (every 50 ms at
or below WARN; the processes once a second, each with its start time), fed
to the real GrowthTracker and ranked with the kernel's oom_score formula
(5.9+: ``(1000 + 1000 * rss / total + adj) * 2 / 3``).  At the first sample
at or below TERM, the cause must rank first.  Scenes where another process
grew more than the cause inside the window are not counted (nobody could say
which one is the cause), except in the ``stopped`` family, where that is the
point: a grower that finished before the crossing against a leak still
growing; in every family the cause must also have taken at least a third of
what all processes grew in the window (else TERM came before the leak did).  Printed: the share of scenes each setting ranks right, and the
smallest margin (cause's badness minus the best other's).

This chose LOSS_PART/RATE_PART and the default weight in judge/growth.py;
the real scenes in integration/test_growth*.py check the choice.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from pyoomd.judge.growth import GrowthTracker

MIB = 1024
TOTAL = 24 * 1024 * MIB
STEP_S = 0.05  # the daemon's sampling at or below WARN (it goes faster near TERM; this is enough)
FOLLOW_S = 1.0  # growth.interval
DAEMON_AT = 1.0  # the daemon starts 1 s after the first bystander was asked to
DRIFT_KIB_S = 4 * MIB  # this VM's MemAvailable drifts by up to ~250 MiB a minute


@dataclass
class Proc:
    name: str
    born: float
    block: float  # MiB at once at birth
    rate: float  # MiB/s after ``after`` s
    size: float  # MiB, where growth stops
    adj: int = 0
    after: float = 0.0

    def mem(self, t: float) -> float:
        if t < self.born:
            return 0.0
        grown = self.block + max(0.0, t - self.born - self.after) * self.rate
        return min(self.size, grown) * MIB


def family(name: str, rnd: random.Random) -> tuple[list[Proc], float, float]:
    """(processes, warn below avail at daemon start MiB, term below MiB); the leak is procs[0]."""
    warn = rnd.uniform(300, 1500)
    term = warn + rnd.uniform(700, 2400)
    leak = Proc("leak", DAEMON_AT + rnd.uniform(1, 5), rnd.choice([0, rnd.uniform(0, 400)]),
                rnd.uniform(48, 256), 1e9)
    procs = [leak]
    if name == "tabs":  # browser-like, +300, some still filling when the leak starts
        for i in range(rnd.randint(2, 6)):
            size = rnd.uniform(150, 400)
            procs.append(Proc(f"tab{i}", rnd.uniform(0, DAEMON_AT), size * rnd.uniform(0.05, 1.0),
                              rnd.uniform(10, 80), size, adj=300))
    elif name == "db_tabs":
        for i in range(rnd.randint(1, 2)):
            size = rnd.uniform(300, 2500)
            procs.append(Proc(f"db{i}", rnd.uniform(0, DAEMON_AT), size, 0, size))
        for i in range(rnd.randint(0, 3)):
            size = rnd.uniform(150, 400)
            procs.append(Proc(f"tab{i}", rnd.uniform(0, DAEMON_AT), size, 0, size, adj=300))
    elif name == "crowd":  # many small ones, some filling, some preferred
        for i in range(rnd.randint(10, 30)):
            size = rnd.uniform(20, 120)
            procs.append(Proc(f"p{i}", rnd.uniform(0, DAEMON_AT + 3), size * rnd.uniform(0.2, 1), rnd.uniform(2, 30),
                              size, adj=rnd.choice([0, 0, 100, 300])))
    elif name == "stopped":  # grew as much or more, and stopped before the crossing
        g = rnd.uniform(400, 1100)
        procs.append(Proc("stopped", DAEMON_AT + rnd.uniform(0, 1), 10, rnd.uniform(150, 300), g))
        leak.born += 2.0
        leak.rate = rnd.uniform(48, 150)
        for i in range(rnd.randint(0, 3)):
            size = rnd.uniform(150, 400)
            procs.append(Proc(f"tab{i}", rnd.uniform(0, DAEMON_AT), size, 0, size, adj=300))
    return procs, warn, term


def oom_score(mem_kib: float, adj: int) -> int:
    return max(0, int((1000 + 1000 * mem_kib / TOTAL + adj) * 2 / 3))


def run_scene(procs: list[Proc], warn_below: float, term_below: float, rnd: random.Random,
              settings: list[tuple[str, dict[str, Any]]]) -> dict[str, Any] | None:
    """Per setting: (cause ranked first, margin); None if TERM is never reached."""
    base = 20 * 1024 * MIB
    drift = 0.0

    def avail(t: float) -> float:
        return base - sum(p.mem(t) for p in procs) + drift

    a0 = avail(DAEMON_AT)
    warn_kib, term_kib = a0 - warn_below * MIB, a0 - term_below * MIB
    trackers = {name: GrowthTracker(TOTAL, approach_kib=int(warn_kib - term_kib), **kw) for name, kw in settings}
    first_seen: dict[str, tuple[float, float]] = {}
    t, last_follow, prev = DAEMON_AT, -1e9, None
    while t < 60:
        drift += rnd.uniform(-DRIFT_KIB_S, DRIFT_KIB_S) * STEP_S
        a = avail(t)
        if a <= warn_kib:
            for tr in trackers.values():
                if prev is not None and not len(tr._avail):
                    tr.observe_available(t - STEP_S, int(prev))  # the idle wait's sample before
                tr.observe_available(t, int(a))
            if a <= term_kib:
                return _rank(procs, t, trackers, first_seen)
            if t - last_follow >= FOLLOW_S:
                last_follow = t
                for p in procs:
                    if p.born <= t:
                        first_seen.setdefault(p.name, (t, p.mem(t)))
                        for tr in trackers.values():
                            tr.observe(t, _ident(p), int(p.mem(t)), born=p.born)
        prev = a
        t += STEP_S
    return None


def _rank(procs: list[Proc], t: float, trackers: dict[str, GrowthTracker],
          first_seen: dict[str, tuple[float, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    grew = {p.name: p.mem(t) - p.mem(max(p.born, t - 20.0)) if p.born < t - 20.0 else p.mem(t) for p in procs}
    # A cause: grew the most, or (stopped) took at least a third of what all grew in the window.
    out["cause_grew_most"] = all(grew["leak"] >= g for n, g in grew.items() if n != "leak")
    out["cause_third"] = grew["leak"] >= sum(grew.values()) / 3
    for name, tr in trackers.items():
        att = tr.attribution(t, uptime_s=t, hz=1000)  # start times below in ms since "boot" (t = 0)
        bad = {p.name: oom_score(p.mem(t), p.adj) + att.of(_ident(p), int(p.mem(t))).points for p in procs}
        out[name] = _verdict(bad)
    # Before issue 12: weight 10 * 1000 * grown since first seen / MemTotal.
    old = {}
    for p in procs:
        _, m0 = first_seen.get(p.name, (t, p.mem(t)))
        old[p.name] = oom_score(p.mem(t), p.adj) + int(10 * 1000 * max(0.0, p.mem(t) - m0) / TOTAL)
    out["before (grew/MemTotal, x10)"] = _verdict(old)
    return out


def _ident(p: Proc) -> tuple[int, int]:
    return (abs(hash(p.name)) % 100000, int(p.born * 1000))


def _verdict(bad: dict[str, int]) -> tuple[bool, int]:
    others = max(v for n, v in bad.items() if n != "leak")
    return bad["leak"] > others, bad["leak"] - others


SETTINGS: list[tuple[str, dict[str, Any]]] = [
    (f"w{w:g} loss {lp:g}/{nl} rate {1 - lp:g}/{nr}", {"weight": w, "parts": (lp, round(1 - lp, 2)), "norm": (nl, nr)})
    for w in (8, 10) for lp in (1.0, 0.6, 0.5) for nl in ("sum", "max") for nr in ("sum", "max")
    if not (lp == 1.0 and nr == "max")
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", type=int, default=300, help="per family")
    ap.add_argument("--seed", type=int, default=12)
    args = ap.parse_args(argv)
    rnd = random.Random(args.seed)
    names = [n for n, _ in SETTINGS] + ["before (grew/MemTotal, x10)"]
    fams = ["tabs", "db_tabs", "crowd", "stopped"]
    res: dict[str, dict[str, list[tuple[bool, int]]]] = {f: {n: [] for n in names} for f in fams}
    skipped = dict.fromkeys(fams, 0)
    for fam in fams:
        for _ in range(args.scenes):
            procs, warn, term = family(fam, rnd)
            r = run_scene(procs, warn, term, rnd, SETTINGS)
            if r is None or not r["cause_third"] or (fam != "stopped" and not r["cause_grew_most"]):
                skipped[fam] += 1
                continue
            for n in names:
                res[fam][n].append(r[n])
    print(f"seed {args.seed}, {args.scenes} scenes a family; counted (cause grew most in the window, "
          f"TERM reached): " + ", ".join(f"{f} {len(res[f][names[0]])}" for f in fams))
    print("| setting | " + " | ".join(f"{f}: right %, min margin" for f in fams) + " |")
    print("|---|" + "---|" * len(fams))
    for n in names:
        cells = []
        for f in fams:
            v = res[f][n]
            ok = 100.0 * sum(1 for right, _ in v if right) / max(1, len(v))
            cells.append(f"{ok:.1f} %, {min((m for _, m in v), default=0):+d}")
        print(f"| {n} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
