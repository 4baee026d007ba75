"""The project's error types.  Each carries where it came from: the file, the
line, the field, the raw value, the pid."""

from __future__ import annotations

import sys
from collections.abc import Callable

# Exit codes (also in the README, "Command line"):
#   0   success
#   1   unexpected runtime failure
#   2   bad command-line flags (argparse's convention)
#   65  a trace that cannot be replayed (EX_DATAERR: unreadable, or a newer format)
#   69  the requested reader backend is unavailable (EX_UNAVAILABLE)
#   72  /proc (meminfo) missing or unreadable (EX_OSFILE)
#   78  invalid configuration or policy (EX_CONFIG)
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_UNAVAILABLE, EXIT_OSFILE, EXIT_CONFIG = 69, 72, 78
EXIT_DATAERR = 65  # sysexits EX_DATAERR: an input file (a trace) that cannot be used


class PyoomdError(Exception):
    """Base class: every error pyoomd raises on purpose."""


class ParseError(PyoomdError):
    """A /proc or /sys file did not say what we expected."""

    def __init__(self, path: str, field: str, raw: object, message: str = "") -> None:
        self.path = path
        self.field = field
        self.raw = raw
        self.message = message or "cannot parse"
        raw_s = repr(raw)
        if len(raw_s) > 80:
            raw_s = raw_s[:77] + "..."
        super().__init__(f"{path}: {field}: {self.message} (raw {raw_s})")


class ConfigError(PyoomdError):
    """A config or policy file is invalid.  ``line`` is 1-based, or None."""

    def __init__(self, file: str, message: str, line: int | None = None, column: int | None = None) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.message = message
        where = file
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {message}")


class ProcessGone(PyoomdError):
    """The process vanished (or its pid was reused) while we looked at it."""

    def __init__(self, pid: int, what: str = "") -> None:
        self.pid = pid
        super().__init__(f"pid {pid} is gone{': ' + what if what else ''}")


class StartupError(PyoomdError):
    """The daemon cannot start; ``exit_code`` is the documented exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        self.exit_code = exit_code
        super().__init__(message)


def exit_code_of(command: Callable[[], int]) -> int:
    """Run a command (``pyoomd run`` in the loop, any other in cli/dispatch.py): a
    config or start-up error becomes its message on stderr and its
    documented exit code; Ctrl-C a clean exit."""
    try:
        return command()
    except ConfigError as e:
        sys.stderr.write(f"pyoomd: config error: {e}\n")
        return EXIT_CONFIG
    except StartupError as e:
        sys.stderr.write(f"pyoomd: {e}\n")
        return e.exit_code
    except KeyboardInterrupt:
        return EXIT_OK
