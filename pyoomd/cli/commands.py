"""The small sub-commands: run (in this process), status, migrate-earlyoom,
sample, check.  Each builds what it needs and returns an exit code; rank,
explain, watch, replay and record have modules of their own."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from ..daemon.launch import open_sampler
from ..errors import EXIT_CONFIG, EXIT_OK, EXIT_UNAVAILABLE
from ..model import MemSample
from ..sense.facts import read_facts
from ..sense.procfs import Procfs
from .options import settings_for
from .output import print_json
from .traces import dump_trace


def cmd_run(args: argparse.Namespace) -> int:
    """``run`` in this process (``pyoomd.cli.dispatch.main``); the ``pyoomd`` command
    itself compiles in a child instead (``pyoomd.daemon.launch``).  Both build the
    daemon from the same JSON plan."""
    import json

    from ..daemon.launch import serve
    from .compile_child import build_plan

    def plan() -> dict[str, Any]:  # invalid: ConfigError, exit 78 before anything runs
        return dict(json.loads(json.dumps(build_plan(args))))

    return serve(plan(), plan)  # SIGHUP: same file, same flags, same --policy or policy_dirs


def cmd_status(args: argparse.Namespace) -> int:
    """The running daemon's state, read from its status socket."""
    from ..report.control import format_status, query_peer

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


def cmd_check(args: argparse.Namespace) -> int:
    """Validate policy files: ``file:line:column: message`` for each error,
    warnings for risky rules, and which files apply to the host."""
    import socket

    from ..errors import ConfigError
    from ..policy.load import check_file, expand

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
