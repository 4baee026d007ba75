"""``pyoomd rank``: the candidates as the daemon would rank them now."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..errors import EXIT_OK
from ..judge.choose import choose
from ..sense import snapshot
from ..sense.facts import Facts, facts_for, kib_cell
from ..textsafe import cell
from .options import load_policies_for, settings_for
from .output import print_json
from .scoring import tool_procfs, tool_scoring


def cmd_rank(args: argparse.Namespace) -> int:
    import functools

    settings = settings_for(args)  # validates the config even though rank has no thresholds
    procfs = tool_procfs(args)
    policy = load_policies_for(args, settings).policy
    scoring = tool_scoring(args, settings, procfs, policy, args.growth_over)
    table = choose(scoring, functools.partial(snapshot.scan, procfs), max(1, args.top))
    cands = table.ranked[: args.top]
    facts = facts_for(procfs, [c.proc for c in cands])  # psutil, for the rows shown only
    if args.json:
        print_json({
            "scanned": table.scanned, "detailed": table.detailed,
            "growth_over_s": args.growth_over,
            "candidates": [{**dataclasses.asdict(c.proc), "badness": c.badness, "rank": i + 1,
                            "reasons": list(c.reasons), "rules": list(c.rules),
                            "growth_points": c.growth_points, "growth_kib": c.growth_kib,
                            "growth_over_s": c.growth_over_s, "growth_share": c.growth_share,
                            "facts": f.as_dict()}
                           for i, (c, f) in enumerate(zip(cands, facts))],
            "excluded": [{"pid": e.proc.pid, "comm": e.proc.comm, "why": e.why} for e in table.excluded],
        })
        return EXIT_OK
    print(f"{'#':>3} {'PID':>7} {'BADNESS':>7} {'SCORE':>5} {'ADJ':>5} {'GROWTH':>6} {'RSS MiB':>8} "
          f"{'USS':>8} {'PSS':>8} {'SWAP':>7} {'USER':>8}  COMM  RULES / WHY")
    for i, (c, f) in enumerate(zip(cands, facts), 1):
        p = c.proc
        rules = cell(",".join(c.rules) or "-")
        print(f"{i:>3} {p.pid:>7} {c.badness:>7} {p.oom_score:>5} {p.oom_score_adj:>5} {c.growth_points:>+6} "
              f"{(p.rss_kib + p.swap_kib) / 1024:>8.1f} {_mem_cells(f)} {_user_cell(f, p.uid):>8}  {cell(p.comm)}  "
              f"{rules}  {cell(p.cgroup or '-')}  [{cell('; '.join(c.reasons))}]")
    for e in table.excluded:  # a comm is any user's choice: no newline or ESC reaches the table
        print(f"  - {e.proc.pid:>7} {cell(e.proc.comm)}: not a candidate: {cell(e.why)}")
    over = f"growth measured over {args.growth_over:g}s" if args.growth_over > 0 else \
        "growth not measured (--growth-over SECONDS)"
    print(f"({table.scanned} processes scanned, {table.detailed} read in full; {over}; USS/PSS/SWAP MiB "
          "from smaps_rollup, - where the process is gone or not readable)", file=sys.stderr)
    return EXIT_OK


def _mem_cells(f: Facts) -> str:
    """USS, PSS and swap (MiB) of one table row; ``-`` each when unread."""
    return f"{kib_cell(f.uss_kib):>8} {kib_cell(f.pss_kib):>8} {kib_cell(f.swap_kib):>7}"


def _user_cell(f: Facts, uid: int) -> str:
    """The user's name (psutil), else the uid; escaped (a passwd entry can hold anything)."""
    return cell(f.user) if f.user is not None else str(uid)
