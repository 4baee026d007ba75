"""The command line's flags (argparse): ``build_parser``.  What they mean
for the config is in cli/options.py, earlyoom's own flags in
cli/earlyoom_flags.py; the exit codes are pyoomd/errors.py's."""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import EXIT_USAGE
from ..settings.amounts import Amount, parse_amount
from ..settings.load import DEFAULT_CONFIG_PATH
from .earlyoom_flags import add_earlyoom_flags


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
