"""``pyoomd run``'s validation, in a short-lived process of its own.

    python -m pyoomd.cli.compile_child [--plan-fd FD] [GLOBAL OPTIONS] run [RUN OPTIONS]

parses the flags (argparse), loads and validates the config (pydantic, YAML)
and the policies, and writes the compiled plan (``pyoomd.settings.plan``) as one
JSON document to FD (default: stdout).  The running loop (``pyoomd.daemon.launch``)
starts this at start-up and on SIGHUP, so it never imports the ~30 MiB
these libraries take (README, "Memory of the running daemon").

Errors are printed on stderr as ``pyoomd run`` prints them, with the same
exit codes (2 bad flags, 78 invalid config or policy); a config error is
also written to FD as ``{"error": {"file", "line", "column", "message"},
"exit": 78}``, so a reload can report it as ``file:line: message``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ..errors import EXIT_CONFIG, EXIT_OK, EXIT_USAGE, ConfigError, StartupError
from ..settings.plan import PLAN_VERSION, settings_to_plan


def build_plan(args: Any) -> dict[str, Any]:
    """The plan for parsed ``run`` arguments; ConfigError if invalid."""
    from ..policy.rules import loaded_to_plan
    from .options import config_path, load_policies_for, settings_for

    settings = settings_for(args)
    loaded = load_policies_for(args, settings)
    return {"plan": PLAN_VERSION, "procfs": args.procfs,
            "config_files": [f for f in (config_path(args),) if f],
            "settings": settings_to_plan(settings), "policy": loaded_to_plan(loaded)}


def _write(out: TextIO, doc: dict[str, Any]) -> None:
    try:
        out.write(json.dumps(doc))
        out.flush()
    except OSError:
        pass  # the loop is gone or gave up waiting: nobody to tell


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out: TextIO = sys.stdout
    if argv[:1] == ["--plan-fd"] and len(argv) > 1:
        out = os.fdopen(int(argv[1]), "w", encoding="utf-8")
        argv = argv[2:]
    from .arguments import build_parser

    args = build_parser().parse_args(argv)  # bad flags: exit 2; --help, --version: exit 0, no plan
    if args.cmd != "run":
        sys.stderr.write(f"pyoomd.cli.compile_child: only the run command is compiled, not {args.cmd!r}\n")
        return EXIT_USAGE
    try:
        plan = build_plan(args)
    except ConfigError as e:
        sys.stderr.write(f"pyoomd: config error: {e}\n")
        _write(out, {"error": {"file": e.file, "line": e.line, "column": e.column, "message": e.message},
                     "exit": EXIT_CONFIG})
        return EXIT_CONFIG
    except StartupError as e:
        sys.stderr.write(f"pyoomd: {e}\n")
        return e.exit_code
    _write(out, plan)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
