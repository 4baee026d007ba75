"""``pyoomd`` COMMAND in this process: parse the flags, run the sub-command,
turn a config or start-up error into its exit code (pyoomd/errors.py).
``run`` usually does not come here (cli/entry.py sends it to the loop)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ..errors import exit_code_of
from .arguments import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_code_of(lambda: _dispatch(args))


def _dispatch(args: argparse.Namespace) -> int:
    # the heavy imports wait until a command needs them, and then only its own module's
    handler: Callable[[argparse.Namespace], int]
    if args.cmd == "rank":
        from . import rank

        handler = rank.cmd_rank
    elif args.cmd == "explain":
        from . import explain

        handler = explain.cmd_explain
    elif args.cmd == "watch":
        from . import watch

        handler = watch.cmd_watch
    elif args.cmd in ("replay", "record"):
        from . import traces

        handler = traces.cmd_replay if args.cmd == "replay" else traces.cmd_record
    else:
        from . import commands

        handler = {"run": commands.cmd_run, "sample": commands.cmd_sample, "status": commands.cmd_status,
                   "migrate-earlyoom": commands.cmd_migrate_earlyoom, "check": commands.cmd_check}[args.cmd]
    return handler(args)

if __name__ == "__main__":
    sys.exit(main())
