"""Command line: run, sample, rank, explain, check.

Exit codes (also in the README):
  0   success
  1   unexpected runtime failure
  2   bad command-line flags (argparse's convention)
  65  a trace that cannot be replayed (EX_DATAERR: unreadable, or a newer format)
  69  the requested reader backend is unavailable (EX_UNAVAILABLE)
  72  /proc (meminfo) missing or unreadable (EX_OSFILE)
  78  invalid configuration or policy (EX_CONFIG)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .errors import (  # noqa: F401  (the exit codes are re-exported)
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_OSFILE,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    ConfigError,
    StartupError,
    exit_code_of,
)
from .settings.amounts import Amount, parse_amount
from .settings.load import DEFAULT_CONFIG_PATH, load_config
from .settings.schema import Settings


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"pyoomd: error: {message}\n")
        sys.exit(EXIT_USAGE)


def _pair(text: str, unit: str) -> tuple[Amount, Amount | None]:
    """``10`` or ``10,5`` (percent for -m/-s, KiB or sizes for -M/-S)."""
    parts = text.split(",")
    if len(parts) > 2 or not all(p.strip() for p in parts):
        raise argparse.ArgumentTypeError(f"expected VALUE[,KILL], got {text!r}")
    try:
        vals = [parse_amount(p.strip() + unit if unit and not p.strip().endswith("%") else p.strip())
                for p in parts]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return vals[0], (vals[1] if len(vals) == 2 else None)


def _amount(text: str) -> Amount:
    try:
        return parse_amount(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _pct_pair(text: str) -> tuple[Amount, Amount | None]:
    return _pair(text, "%")


def _size_pair(text: str) -> tuple[Amount, Amount | None]:
    return _pair(text, "")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pyoomd", description="Userspace early-OOM killer.")
    p.add_argument("--version", action="version", version=f"pyoomd {__version__}")
    p.add_argument("--procfs", default="/proc", help=argparse.SUPPRESS)  # tests: a fixture /proc
    p.add_argument("--cgroup-root", default=None, help=argparse.SUPPRESS)  # tests: a fixture cgroup tree
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run the daemon")
    _common(run)
    run.add_argument("--dry-run", "--dryrun", action="store_true", default=None,
                     help="choose victims and log them, send no signal")
    run.add_argument("-m", dest="mem_pct", type=_pct_pair, metavar="PCT[,KILL]",
                     help="available memory %% for TERM[,KILL] (KILL defaults to half)")
    run.add_argument("-s", dest="swap_pct", type=_pct_pair, metavar="PCT[,KILL]",
                     help="free swap %% for TERM[,KILL]")
    run.add_argument("-M", dest="mem_size", type=_size_pair, metavar="SIZE[,KILL]",
                     help="available memory size for TERM[,KILL]; bare number = KiB")
    run.add_argument("-S", dest="swap_size", type=_size_pair, metavar="SIZE[,KILL]",
                     help="free swap size for TERM[,KILL]; bare number = KiB")
    run.add_argument("--log-format", choices=["auto", "console", "json"])
    run.add_argument("--grace", type=float, metavar="SECONDS", help="SIGTERM grace before SIGKILL")
    run.add_argument("--warn", type=_amount, metavar="PCT%%|SIZE",
                     help="WARN level for available memory (growth tracking, PSI gate); default 20%%")
    run.add_argument("--no-growth", dest="growth", action="store_false", default=None,
                     help="rank by oom_score and policies only, as earlyoom does")
    run.add_argument("--growth-weight", type=float, metavar="W", help="weight of the growth term (default 10)")
    run.add_argument("--growth-window", type=float, metavar="SECONDS", help="growth window (default 20)")
    from .migrate import add_earlyoom_flags

    add_earlyoom_flags(run)

    status = sub.add_parser("status", help="the running daemon's state (from its status socket)")
    status.add_argument("--json", action="store_true")
    status.add_argument("--socket", metavar="PATH", help="status socket (default: the config's status.socket)")
    status.add_argument("--config", metavar="FILE", help=f"config file (default {DEFAULT_CONFIG_PATH} if present)")
    status.add_argument("--dump-trace", metavar="FILE",
                        help="have the daemon write its flight recorder's ring now, and copy the trace to FILE")

    mig = sub.add_parser("migrate-earlyoom", help="write a pyoomd config and policy from earlyoom's EARLYOOM_ARGS")
    mig.add_argument("file", metavar="FILE", help="e.g. /etc/default/earlyoom")
    mig.add_argument("--out-dir", metavar="DIR", help="write config.yaml and policies.d/earlyoom.yaml here "
                     "(default: print them)")

    sample = sub.add_parser("sample", help="one memory reading")
    sample.add_argument("--json", action="store_true")
    sample.add_argument("--reader", choices=["auto", "cffi", "python"], default="auto")

    rank = sub.add_parser("rank", help="the candidates as the daemon would rank them now")
    _common(rank)
    rank.add_argument("--top", type=int, default=10, metavar="N")
    rank.add_argument("--json", action="store_true")
    rank.add_argument("--growth-over", type=float, default=0.0, metavar="SECONDS",
                      help="measure each process's growth over this many seconds first (default 0: not measured)")

    watch = sub.add_parser("watch", help="a live line per second: available, swap free, PSI, level")
    watch.add_argument("--config", metavar="FILE", help=f"config file (default {DEFAULT_CONFIG_PATH} if present)")
    watch.add_argument("--reader", choices=["auto", "cffi", "python"])
    watch.add_argument("--count", type=int, metavar="N", help="stop after N lines (default: until Ctrl-C)")
    watch.add_argument("--interval", type=float, default=1.0, metavar="SECONDS")
    watch.add_argument("--json", action="store_true", help="one JSON object a line")
    watch.add_argument("--policy", action="append", metavar="DIR|FILE",
                       help="policy file or directory (repeatable); replaces the config's policy_dirs")
    watch.add_argument("--no-victim", action="store_true",
                       help="do not show the victim the daemon would choose (no process table reads)")

    explain = sub.add_parser("explain", help="why processes would (or would not) be chosen")
    _common(explain)
    explain.add_argument("pids", type=int, nargs="+", metavar="PID")
    explain.add_argument("--json", action="store_true")
    explain.add_argument("--growth-over", type=float, default=0.0, metavar="SECONDS",
                         help="measure each process's growth over this many seconds first (default 0: not measured)")

    rep = sub.add_parser("replay", help="replay a recorded trace against a config or policy (TRACE.md)")
    rep.add_argument("trace", metavar="TRACE", help="a trace file (the flight recorder's, or `pyoomd record`'s)")
    rep.add_argument("--config", metavar="FILE", help="replay with this config (default: the plan recorded)")
    rep.add_argument("--policy", action="append", metavar="DIR|FILE",
                     help="replay with these policies (repeatable; default: the policy recorded)")
    rep.add_argument("--json", action="store_true")
    rep.add_argument("--compare", action="store_true",
                     help="also replay the recorded plan and compare the two (with --config or --policy)")

    recp = sub.add_parser("record", help="record a trace without a daemon (dry-run sampling and process looks)")
    recp.add_argument("file", metavar="FILE", help="trace to write (gzip JSON lines, TRACE.md)")
    recp.add_argument("--seconds", type=float, default=60.0, metavar="N", help="how long (default 60)")
    recp.add_argument("--config", metavar="FILE", help=f"config file (default {DEFAULT_CONFIG_PATH} if present)")
    recp.add_argument("--policy", action="append", metavar="DIR|FILE",
                      help="policy file or directory (repeatable); replaces the config's policy_dirs")
    recp.add_argument("--look-every", type=float, default=1.0, metavar="S",
                      help="read the whole process table this often (default 1 s)")

    check = sub.add_parser("check", help="validate policy files")
    check.add_argument("paths", nargs="+", metavar="FILE|DIR")
    check.add_argument("--host", metavar="NAME", help="which files apply to this host (default: this one)")
    check.add_argument("--strict", action="store_true", help="warnings are errors too")
    return p


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help=f"config file (default {DEFAULT_CONFIG_PATH} if present)")
    p.add_argument("--reader", choices=["auto", "cffi", "python"])
    p.add_argument("--policy", action="append", metavar="DIR|FILE",
                   help="policy file or directory (repeatable); replaces the config's policy_dirs")


def _levels(term_kill: tuple[Amount, Amount | None] | None, other: tuple[Amount, Amount | None] | None,
            ) -> dict[str, Amount]:
    """Merge -m (percent) and -M (size) for one resource: where both are
    given the lower value wins at resolve time, as in earlyoom.  KILL
    defaults to half of TERM, as in earlyoom."""
    out: dict[str, Any] = {}
    for which in (term_kill, other):
        if which is None:
            continue
        term, kill = which
        kill = kill or Amount(pct=term.pct / 2 if term.pct is not None else None,
                              kib=term.kib // 2 if term.kib is not None else None)
        for key, val in (("term", term), ("kill", kill)):
            prev = out.get(key)
            out[key] = val if prev is None else Amount(pct=prev.pct if prev.pct is not None else val.pct,
                                                       kib=prev.kib if prev.kib is not None else val.kib)
    return out


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {}
    mem = _levels(getattr(args, "mem_pct", None), getattr(args, "mem_size", None))
    swap = _levels(getattr(args, "swap_pct", None), getattr(args, "swap_size", None))
    if mem:
        o["memory"] = mem
    if swap:
        o["swap"] = swap
    if getattr(args, "dry_run", None):
        o["dry_run"] = True
    if getattr(args, "log_format", None):
        o["log_format"] = args.log_format
    if getattr(args, "reader", None):
        o["reader"] = args.reader
    if getattr(args, "grace", None) is not None:
        o["kill"] = {"grace": args.grace}
    if getattr(args, "warn", None) is not None:
        o.setdefault("memory", {})["warn"] = args.warn
    growth = {k: v for k, v in (("enabled", getattr(args, "growth", None)),
                                ("weight", getattr(args, "growth_weight", None)),
                                ("window", getattr(args, "growth_window", None))) if v is not None}
    if growth:
        o["growth"] = growth
    from .migrate import earlyoom_overrides

    o.update(earlyoom_overrides(args))
    return o


def settings_for(args: argparse.Namespace) -> Settings:
    path = args.config
    if path is None and os.path.exists(DEFAULT_CONFIG_PATH):
        path = DEFAULT_CONFIG_PATH
    return load_config(path, overrides_from(args))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_code_of(lambda: _dispatch(args))


def _dispatch(args: argparse.Namespace) -> int:
    from . import commands  # the heavy imports wait until a command needs them

    handler = {"run": commands.cmd_run, "sample": commands.cmd_sample, "rank": commands.cmd_rank,
               "watch": commands.cmd_watch, "status": commands.cmd_status,
               "migrate-earlyoom": commands.cmd_migrate_earlyoom,
               "explain": commands.cmd_explain, "check": commands.cmd_check,
               "replay": commands.cmd_replay, "record": commands.cmd_record}[args.cmd]
    return handler(args)


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    sys.exit(main())
