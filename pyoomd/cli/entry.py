"""The ``pyoomd`` command: ``run`` goes to the light loop, the rest to cli/dispatch.py.

``pyoomd run`` must not import what cli/dispatch.py imports (argparse, pydantic,
YAML): the loop lives for days and keeps every page it ever touched
(mlockall).  So the sub-command is found here without argparse; ``run``
goes to ``pyoomd.daemon.launch`` (which has a child process parse and validate the
whole argv), anything else to ``pyoomd.cli.dispatch.main``.  Should this guess ever
be wrong, the command still works: dispatch.main runs ``run`` in-process too.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

# cli/arguments.py's global options that take a value (argparse also accepts any
# unambiguous prefix, e.g. --proc).
_VALUE_OPTIONS = ("--procfs",)


def subcommand(argv: Sequence[str]) -> str | None:
    """The sub-command argparse would see in ``argv``, or None if unsure."""
    it = iter(argv)
    for a in it:
        if a == "--":
            return next(it, None)
        if not a.startswith("-") or a == "-":
            return a
        if "=" in a:
            continue
        if len(a) > 2 and a.startswith("--") and any(o.startswith(a) for o in _VALUE_OPTIONS):
            next(it, None)
        elif a in ("-h", "--help") or (a.startswith("--") and "--version".startswith(a) and len(a) > 3):
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if subcommand(argv) == "run":
        from ..daemon.launch import main as run_loop

        return run_loop(argv)
    from .dispatch import main as cli_main

    return cli_main(argv)
