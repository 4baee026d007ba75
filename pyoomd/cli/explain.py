"""``pyoomd explain PID...``: why processes would (or would not) be chosen."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import EXIT_FAILURE, EXIT_OK
from ..judge.choose import Choice, Scoring, choose
from ..model import Candidate
from ..policy.matchers import MATCHERS
from ..sense import snapshot
from ..sense.facts import kib_cell, read_facts
from ..sense.procfs import Procfs
from ..textsafe import cell
from .options import load_policies_for, settings_for
from .output import print_json
from .scoring import tool_procfs, tool_scoring


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
        from ..act.soft import unit_of_cgroup

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
