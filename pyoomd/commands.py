"""The sub-commands behind cli.py: each builds what it needs and returns an exit code."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from .cli import EXIT_FAILURE, EXIT_OK, print_json, settings_for
from .config import Settings
from .judge.choose import Choice, Scoring, choose
from .daemon.launch import open_sampler
from .model import Candidate, MemSample
from .policy.load import Loaded, load_policies
from .policy.matchers import MATCHERS
from .sense import snapshot
from .sense.facts import Facts, facts_for, kib_cell, read_facts
from .sense.procfs import Procfs
from .sense.sample import Sampler
from .textsafe import cell


def cmd_run(args: argparse.Namespace) -> int:
    """``run`` in this process (``pyoomd.cli.main``); the ``pyoomd`` command
    itself compiles in a child instead (``pyoomd.loop``).  Both build the
    daemon from the same JSON plan."""
    import json

    from .compile import build_plan
    from .daemon.launch import serve

    def plan() -> dict[str, Any]:  # invalid: ConfigError, exit 78 before anything runs
        return dict(json.loads(json.dumps(build_plan(args))))

    return serve(plan(), plan)  # SIGHUP: same file, same flags, same --policy or policy_dirs


def load_policies_for(args: argparse.Namespace, settings: Settings) -> Loaded:
    """``--policy DIR|FILE`` (repeatable) replaces the config's policy_dirs;
    a configured directory that does not exist means no policy from it."""
    from .migrate import with_flag_rules  # earlyoom's --prefer/--avoid/--ignore/... as rules

    if getattr(args, "policy", None):
        return with_flag_rules(load_policies(args.policy), args)
    return with_flag_rules(load_policies(settings.policy_dirs, missing_ok=True), args)


def config_path(args: argparse.Namespace) -> str | None:
    """The config file ``settings_for`` reads (None: defaults only)."""
    import os

    from .config import DEFAULT_CONFIG_PATH

    if getattr(args, "config", None):
        return str(args.config)
    return DEFAULT_CONFIG_PATH if os.path.exists(DEFAULT_CONFIG_PATH) else None


def cmd_status(args: argparse.Namespace) -> int:
    """The running daemon's state, read from its status socket."""
    from .cli import EXIT_UNAVAILABLE
    from .report.control import format_status, query_peer

    path = args.socket or settings_for(args).status.socket or "/run/pyoomd/status.sock"
    if getattr(args, "dump_trace", None):
        return dump_trace(path, args.dump_trace)
    try:
        doc, peer = query_peer(path)
    except (OSError, ValueError) as e:
        print(f"pyoomd: cannot read the status socket {path}: {e} (is pyoomd running? are you root?)",
              file=sys.stderr)
        return EXIT_UNAVAILABLE
    facts = read_facts(Procfs(), peer) if peer > 0 else None  # the daemon's own memory, by psutil
    if args.json:
        print_json({**doc, "daemon_facts": facts.as_dict() if facts is not None else None})
    else:
        print(format_status(doc, facts))
    return EXIT_OK


def cmd_migrate_earlyoom(args: argparse.Namespace) -> int:
    """EARLYOOM_ARGS -> config.yaml + policies.d/earlyoom.yaml (or printed)."""
    import yaml

    from .migrate import migrate, read_earlyoom_args, write_migration

    m = migrate(read_earlyoom_args(args.file))
    for w in m.warnings:
        print(f"pyoomd: warning: {w}", file=sys.stderr)
    if args.out_dir:
        config, policy = write_migration(m, args.file, args.out_dir)
        print(f"wrote {config}" + (f" and {policy}" if policy else ""))
        return EXIT_OK
    print("# config.yaml")
    print(yaml.safe_dump(m.config, sort_keys=False) if m.config else "{}")
    if m.policy is not None:
        print("# policies.d/earlyoom.yaml")
        print(yaml.safe_dump(m.policy, sort_keys=False))
    return EXIT_OK


def sample_dict(s: MemSample, backend: str) -> dict[str, Any]:
    d: dict[str, Any] = s._asdict()
    d["psi"] = dataclasses.asdict(s.psi) if s.psi is not None else None
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


def measure_growth(procfs: Procfs, settings: Settings, seconds: float) -> Any:
    """A growth tracker fed two looks at every process and MemAvailable,
    ``seconds`` apart (rank/explain are one-shot; the daemon follows
    continuously).  Returns the tracker."""
    import time

    from .judge.growth import GrowthTracker

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

    from .judge.growth import NO_ATTRIBUTION
    from .sense.cgroup import Cgroups

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


def cmd_check(args: argparse.Namespace) -> int:
    """Validate policy files: ``file:line:column: message`` for each error,
    warnings for risky rules, and which files apply to the host."""
    import socket

    from .cli import EXIT_CONFIG
    from .errors import ConfigError
    from .policy.load import check_file, expand

    host = args.host or socket.gethostname()
    bad = 0
    try:
        files, _ = expand(args.paths)
    except ConfigError as e:
        print(e)
        return EXIT_CONFIG
    for f in files:
        res = check_file(f, host)
        for err in res.errors:
            print(err)
        for w in [*res.warnings, *res.refused]:
            print(f"{w.file}:{w.line}:{w.column}: warning: {w.message}")
        bad += len(res.errors) + (len(res.warnings) + len(res.refused) if args.strict else 0)
        if not res.errors:
            where = "applies to" if res.applies else f"skipped (hosts {list(res.hosts or ())}) on"
            print(f"{f}: ok, {len(res.rules)} rules; {where} host {host}")
    if not files:
        print("no policy files found (*.yaml, *.yml)", file=sys.stderr)
    return EXIT_CONFIG if bad or not files else EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    """Why each process would (or would not) be chosen."""
    import functools

    settings = settings_for(args)
    procfs = tool_procfs(args)
    policy = load_policies_for(args, settings).policy
    scoring = tool_scoring(args, settings, procfs, policy, args.growth_over)
    choice = choose(scoring, functools.partial(snapshot.scan, procfs), exhaustive=True)
    out = [explain_one(procfs, pid, policy, choice, scoring) for pid in args.pids]
    if args.json:
        print_json(out)
        return EXIT_OK
    for item in out:
        _print_explained(item)
    return EXIT_OK if all(i.get("found") for i in out) else EXIT_FAILURE


def explain_one(procfs: Procfs, pid: int, policy: Any, choice: Choice, scoring: Scoring) -> dict[str, Any]:
    """One process as the choice saw it: its rank and badness from
    ``choice`` (the daemon's function over every process), or why not."""
    info = snapshot.read_proc(procfs, pid, full=True)
    if info is None:
        return {"pid": pid, "found": False, "why": "no such process, or a kernel thread or zombie"}
    item: dict[str, Any] = {
        "pid": pid, "found": True, "comm": info.comm, "exe": info.exe, "uid": info.uid,
        "cgroup": info.cgroup, "parent_comm": info.parent_comm, "oom_score": info.oom_score,
        "oom_score_adj": info.oom_score_adj,
        "matchers": {m.name: m.seen(info) for m in MATCHERS},  # what each policy matcher sees
        "rules": [{"name": r.name, "file": r.file, "line": r.line, "effects": r.effects()}
                  for r in policy.matching(info)],
        "facts": read_facts(procfs, pid, info.start_time).as_dict(),  # user, USS/PSS/swap, frees_kib
    }
    if pid in snapshot.default_skip(procfs):
        item["why"] = "never a candidate: pid 1, pyoomd itself or its parent"
        return item
    ranked = choice.ranked
    rank = next((i for i, c in enumerate(ranked, 1) if c.proc.identity == info.identity), None)
    excluded = next((e for e in choice.excluded if e.proc.identity == info.identity), None)
    verdict = ranked[rank - 1] if rank is not None else (excluded or scoring.evaluate(info))
    if not isinstance(verdict, Candidate):
        item["why"] = f"not a candidate: {verdict.why}"
        return item
    item.update(badness=verdict.badness, rank=rank, of=len(ranked), reasons=list(verdict.reasons),
                signal=verdict.signal, grace_s=verdict.grace_s, kill_group=verdict.kill_group,
                action=_action_of(verdict, info.cgroup),
                growth_points=verdict.growth_points, growth_kib=verdict.growth_kib,
                growth_over_s=verdict.growth_over_s, growth_share=verdict.growth_share)
    return item


def _action_of(c: Candidate, cgroup: str | None) -> dict[str, Any] | None:
    """The soft action the daemon would try first for this process (act/soft.py)."""
    if not c.action:
        return None
    out: dict[str, Any] = {"kind": c.action[0], "rule": c.action_rule}
    if c.action[0] == "run":
        out["argv"] = list(c.action[1:])
    else:
        from .act.soft import unit_of_cgroup

        unit, why = unit_of_cgroup(cgroup)
        out["unit"] = unit
        if unit is None:
            out["why"] = why
    return out


# Matchers whose fact the first line of an explained process shows already.
_HEADER_MATCHERS = ("comm", "exe", "user", "cgroup")


def _print_explained(item: dict[str, Any]) -> None:
    if not item["found"]:
        print(f"pid {item['pid']}: {cell(item['why'])}\n")
        return
    print(f"pid {item['pid']} ({cell(item['comm'])})  exe {cell(item['exe'])}  uid {item['uid']}  "
          f"cgroup {cell(item['cgroup'])}")
    print(f"  oom_score {item['oom_score']}  oom_score_adj {item['oom_score_adj']}")
    seen = {k: v for k, v in item.get("matchers", {}).items() if k not in _HEADER_MATCHERS}
    if seen:
        print("  matchers see: " + "  ".join(f"{k} {cell(v)}" for k, v in seen.items()))
    facts = item.get("facts")
    if facts is not None:
        print(f"  {_facts_line(facts)}")
    for r in item["rules"]:
        print(f"  rule {cell(r['name'])} ({cell(r['file'])}:{r['line']}): {cell(', '.join(r['effects']) or 'no effect')}")
    if not item["rules"]:
        print("  no policy rule matches")
    if "why" in item:
        print(f"  {cell(item['why'])}")
    else:
        extra = "".join(f"  {k} {item[k]}" for k in ("signal", "grace_s") if item.get(k) is not None)
        group = "  kill group" if item["kill_group"] else ""
        print(f"  badness {item['badness']}  rank {item['rank']} of {item['of']}{extra}{group}")
        act = item.get("action")
        if act is not None:
            what = (f"run {act['argv']}" if act["kind"] == "run" else
                    f"restart-unit {act['unit']}" if act["unit"] else f"restart-unit: none ({act['why']})")
            print(f"  first: {what} (rule {act['rule']}), then the grace; the kill follows if memory "
                  "is still below TERM")
        print(f"  growth +{item['growth_points']} (grew {item['growth_kib'] // 1024} MiB over "
              f"{item['growth_over_s']:g}s)")
        print(f"  {cell('; '.join(item['reasons']))}")
    print()


def _facts_line(f: dict[str, Any]) -> str:
    """explain's line of psutil facts (a Facts.as_dict())."""
    if f.get("why") is not None:
        return f"user, USS/PSS/swap: - ({cell(f['why'])} mid-read)"
    return (f"user {cell(f['user'])}  frees {kib_cell(f['frees_kib'])} MiB if killed (USS "
            f"{kib_cell(f['uss_kib'])} + swap {kib_cell(f['swap_kib'])}; PSS {kib_cell(f['pss_kib'])})")


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
        from .judge.growth import GrowthTracker
        from .values import Thresholds

        self.settings, self.procfs = settings, procfs
        self.policy = load_policies_for(args, settings).policy
        th: Thresholds = settings.compile(first.mem_total_kib, first.swap_total_kib)
        self.tracker = GrowthTracker(first.mem_total_kib, settings.growth.weight, settings.growth.window,
                                     max(1, th.mem_warn_kib - th.mem_term_kib))
        self.scores: dict[int, int] = {}
        self.followed = False

    def victim(self, s: MemSample, level: Any, now: float) -> Candidate | None:
        import functools

        from .judge.growth import NO_ATTRIBUTION
        from .model import Level
        from .sense.cgroup import Cgroups

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

    from .judge.decide import Judge
    from .judge.pressure import compile_rule
    from .sense.zram import Zram

    settings = settings_for(args)
    procfs = tool_procfs(args)
    sampler = open_sampler(procfs, args.reader or settings.reader)
    zram = Zram(procfs)
    first = sampler.read()
    th = settings.compile(first.mem_total_kib, first.swap_total_kib)
    judge = Judge(th, settings.sampling, compile_rule(settings.psi, th.mem_warn_kib))
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
        level = judge.judge(s, now).level
        victim = chooser.victim(s, level, now) if chooser is not None else None
        facts = read_facts(procfs, victim.proc.pid, victim.proc.start_time) if victim is not None else None
        f = watch_fields(s, level.name, victim, facts)
        print(json.dumps(f) if args.json else watch_line(f), flush=True)
        n += 1
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    """``pyoomd replay TRACE``: the daemon's code over a recorded trace (pyoomd/replay.py)."""
    import time

    from . import replay
    from .config import load_config
    from .errors import EXIT_CONFIG, EXIT_DATAERR
    from .policy.rules import loaded_from_plan
    from .runtime import settings_from_plan
    from .trace import TraceError, read_trace

    try:
        trace = read_trace(args.trace)
    except TraceError as e:
        print(f"pyoomd: {e}", file=sys.stderr)
        return EXIT_DATAERR
    h = trace.header
    recorded_settings = settings_from_plan(h["settings"])
    recorded_policy = loaded_from_plan(h["policy"]) if h.get("policy") else None
    runs: list[tuple[str, Any, Any]] = []
    new_settings = load_config(args.config) if args.config else recorded_settings
    new_policy = load_policies(args.policy) if args.policy else recorded_policy
    changed = bool(args.config or args.policy)
    label = ", ".join(x for x in (f"config {args.config}" if args.config else "",
                                  f"policy {' '.join(args.policy)}" if args.policy else "") if x) or "the recorded plan"
    if args.compare and changed:
        runs.append(("the recorded plan", recorded_settings, recorded_policy))
    elif args.compare:
        print("pyoomd: --compare needs --config or --policy (what to compare the recorded plan with)",
              file=sys.stderr)
        return EXIT_CONFIG
    runs.append((label, new_settings, new_policy))
    live = replay.live_rows(trace)
    doc: dict[str, Any] = {"trace": _trace_summary(trace), "runs": [],
                           "live": {"kills": live, "levels": replay.live_levels(trace, trace.t0)}}
    first: list[dict[str, Any]] | None = None
    for name, settings, policy in runs:
        t0 = time.perf_counter()
        res = replay.run(trace, settings, policy)
        r = replay.report(trace, res, name)
        r["wall_s"] = round(time.perf_counter() - t0, 4)
        ref, ref_name = (first, "the recorded plan") if first is not None else (live, "the live daemon")
        r["compared_to"] = ref_name
        r["differences"] = replay.differences(ref, r["kills"], ref_name)
        r["timing"] = replay.timing(ref, r["kills"])
        if first is None and args.compare:
            first = r["kills"]
        doc["runs"].append(r)
    if args.json:
        print_json(doc)
    else:
        print(replay.format_report(doc))
    return EXIT_OK


def _trace_summary(trace: Any) -> dict[str, Any]:
    import time

    h = trace.header
    return {"path": trace.path, "pyoomd": h.get("pyoomd"), "format": h.get("version"),
            "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(h.get("created", 0))),
            "seconds": round(trace.t1 - trace.t0, 3), "samples": sum(1 for e in trace.entries if e[0] == "s"),
            "entries": len(trace.entries), "reason": h.get("reason"), "victim": h.get("victim"),
            "recorded_by_pid": h.get("pid"), "thresholds": h.get("thresholds")}


def cmd_record(args: argparse.Namespace) -> int:
    """``pyoomd record FILE``: a dry-run daemon's inputs for N seconds, with
    a whole-table look every --look-every seconds, written as a trace."""
    import time

    from .daemon import Daemon
    from .daemon.launch import trace_header
    from .report import recorder
    from .report.log import configure, get_logger
    from .runtime import settings_from_plan, settings_to_plan
    from .trace import write_trace

    settings = settings_for(args)
    plan = settings_to_plan(settings)
    plan["dry_run"] = True
    plan["recorder"] = dict(plan["recorder"], seconds=max(1.0, args.seconds + 5),
                            memory_mib=max(64.0, plan["recorder"]["memory_mib"]))
    settings_rt = settings_from_plan(plan)
    loaded = load_policies_for(args, settings)
    procfs = tool_procfs(args)
    configure("console")
    ring, rp, rs = recorder.recording(procfs, open_sampler(procfs, settings.reader), settings_rt.recorder)
    d = Daemon(settings_rt, rp, rs, get_logger(), clock=time.monotonic, sleep=time.sleep)
    d.use_policies(loaded)
    recorder.attach(d, ring, settings_rt.recorder, lambda: trace_header(d, rp.root), write_on_kill=False)
    end = time.monotonic() + args.seconds
    next_look = 0.0
    try:
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_look:  # every process read, as a scan of everything would
                d.scan(top_n=1_000_000)
                next_look = now + args.look_every
            pause = d.tick()
            time.sleep(max(0.0, min(pause, next_look - time.monotonic(), end - time.monotonic())))
    except KeyboardInterrupt:
        pass
    header = dict(trace_header(d, rp.root), reason="record", victim=None)
    entries = recorder.entries_of(*ring.snapshot())
    info = write_trace(args.file, header, entries)
    print(f"wrote {info['path']}: {info['entries']} entries over {info['seconds']} s, {info['bytes']} bytes",
          file=sys.stderr)
    return EXIT_OK


# `status --dump-trace` waits this long for the daemon's trace (writing 2 MiB
# of ring takes ~0.2 s here; the idle wait is woken by the signal).
DUMP_WAIT_S = 10.0


def dump_trace(socket_path: str, out: str) -> int:
    """The daemon's pid from the status socket's peer credentials (as our PID
    namespace sees it, not as the daemon says), SIGUSR1 to it, then the new
    ``*-dump.trace.gz`` in its recorder directory (from the status document)
    copied to ``out``."""
    import json
    import os
    import shutil
    import signal
    import socket
    import struct
    import time

    from .cli import EXIT_UNAVAILABLE
    from .trace import TRACE_SUFFIX

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5.0)
            s.connect(socket_path)
            pid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        doc = json.loads(b"".join(chunks))
    except (OSError, ValueError) as e:
        print(f"pyoomd: cannot read the status socket {socket_path}: {e} (is pyoomd running? are you root?)",
              file=sys.stderr)
        return EXIT_UNAVAILABLE
    rec = doc.get("recorder") or {}
    if not rec.get("enabled") or pid <= 0:
        print("pyoomd: the daemon's flight recorder is off (recorder: {enabled: false}) or unknown to it",
              file=sys.stderr)
        return EXIT_UNAVAILABLE
    d = rec["dir"]
    before = set(os.listdir(d)) if os.path.isdir(d) else set()
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + DUMP_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.05)
        new = sorted(n for n in (os.listdir(d) if os.path.isdir(d) else ())
                     if n not in before and n.endswith("-dump" + TRACE_SUFFIX))
        if new:
            shutil.copyfile(os.path.join(d, new[-1]), out)
            print(f"wrote {out} (the daemon's {os.path.join(d, new[-1])})", file=sys.stderr)
            return EXIT_OK
    print(f"pyoomd: no trace appeared in {d} within {DUMP_WAIT_S:g}s (see the daemon's trace_failed event)",
          file=sys.stderr)
    return EXIT_FAILURE
