"""The sub-commands behind cli.py: each builds what it needs and returns an exit code."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from .cli import EXIT_OK, EXIT_OSFILE, print_json, settings_for
from .errors import ParseError, StartupError
from .judge.rank import NoPolicy, order, score
from .model import MemSample
from .sense import snapshot
from .sense.procfs import Procfs
from .sense.sample import Sampler


def open_sampler(procfs: Procfs, reader: str) -> Sampler:
    try:
        sampler = Sampler(procfs, reader)
        sampler.read()
    except (OSError, ParseError) as e:
        raise StartupError(f"cannot read {procfs.meminfo}: {e}", EXIT_OSFILE) from None
    return sampler


def cmd_run(args: argparse.Namespace) -> int:
    from .daemon import Daemon
    from .report.log import configure, get_logger

    settings = settings_for(args)
    configure(settings.log_format)
    procfs = Procfs(args.procfs)
    sampler = open_sampler(procfs, settings.reader)
    daemon = Daemon(settings, procfs, sampler, get_logger())
    daemon.run()
    return EXIT_OK


def sample_dict(s: MemSample, backend: str) -> dict[str, Any]:
    d = dataclasses.asdict(s)
    d["backend"] = backend
    d["mem_available_pct"] = round(s.mem_available_pct, 2)
    d["swap_free_pct"] = round(s.swap_free_pct, 2)
    return d


def cmd_sample(args: argparse.Namespace) -> int:
    procfs = Procfs(args.procfs)
    sampler = open_sampler(procfs, args.reader)
    s = sampler.read()
    if args.json:
        print_json(sample_dict(s, sampler.backend))
        return EXIT_OK
    est = " (estimated)" if s.available_estimated else ""
    print(f"reader        {sampler.backend}")
    print(f"MemTotal      {s.mem_total_kib} KiB")
    print(f"MemAvailable  {s.mem_available_kib} KiB ({s.mem_available_pct:.1f}%){est}")
    print(f"SwapTotal     {s.swap_total_kib} KiB")
    print(f"SwapFree      {s.swap_free_kib} KiB ({s.swap_free_pct:.1f}%)")
    if s.psi is None:
        print("PSI           unavailable")
    else:
        for name, line in (("some", s.psi.some), ("full", s.psi.full)):
            if line is not None:
                print(f"PSI {name:<9} avg10={line.avg10:.2f} avg60={line.avg60:.2f} "
                      f"avg300={line.avg300:.2f} total={line.total_us}")
    return EXIT_OK


def cmd_rank(args: argparse.Namespace) -> int:
    settings_for(args)  # validates the config even though rank has no thresholds
    procfs = Procfs(args.procfs)
    policy = NoPolicy()
    table = snapshot.scan(procfs, lambda p: score(p, policy), policy.max_bonus, max(1, args.top))
    cands = order(table.candidates)[: args.top]
    if args.json:
        print_json({
            "scanned": table.scanned, "detailed": table.detailed,
            "candidates": [{**dataclasses.asdict(c.proc), "badness": c.badness, "rank": i + 1,
                            "reasons": list(c.reasons), "rules": list(c.rules)} for i, c in enumerate(cands)],
            "excluded": [{"pid": e.proc.pid, "comm": e.proc.comm, "why": e.why} for e in table.excluded],
        })
        return EXIT_OK
    print(f"{'#':>3} {'PID':>7} {'BADNESS':>7} {'SCORE':>5} {'ADJ':>5} {'RSS MiB':>8} {'UID':>6}  COMM / WHY")
    for i, c in enumerate(cands, 1):
        p = c.proc
        print(f"{i:>3} {p.pid:>7} {c.badness:>7} {p.oom_score:>5} {p.oom_score_adj:>5} "
              f"{(p.rss_kib + p.swap_kib) / 1024:>8.1f} {p.uid:>6}  {p.comm}  [{'; '.join(c.reasons)}]")
    for e in table.excluded:
        print(f"  - {e.proc.pid:>7} {e.proc.comm}: not a candidate: {e.why}")
    print(f"({table.scanned} processes scanned, {table.detailed} read in full)", file=sys.stderr)
    return EXIT_OK
