"""Policy regexes: a linear-time engine (RE2) and bounded texts.

Python's ``re`` backtracks: ``^(\\w+\\s?)*$`` against a 41-character
command line that any user can choose takes minutes, holding the GIL (no
signal handler, status or metrics thread runs meanwhile) - a process name
could stop the killer.  Every policy regex (``comm``, ``cmdline``,
``parent``, earlyoom's ``--prefer``/``--avoid``/``--ignore``) is compiled
by RE2 (``google-re2``), whose match time is linear in the text, and the
texts a matcher sees are bounded (``MATCH_CMDLINE_MAX``, ``MATCH_NAME_MAX``),
so one match costs microseconds whatever the pattern and the process.

RE2 has no backreferences (``\\1``), lookaround (``(?=``, ``(?<!``),
possessive or atomic groups, ``\\Z``, and repetition counts above 1000: such a
pattern is an error at load and in ``pyoomd check`` (naming file:line and
RE2's own words for the construct).  Like Python's ``re`` on ``str``,
patterns are Unicode, but ``\\w``, ``\\d``, ``\\s`` and ``\\b`` are ASCII
only in RE2 (use ``[[:alpha:]]``-style classes or explicit ranges for more).
"""

from __future__ import annotations

import functools
from typing import Any

# The first this many characters of the command line are what ``cmdline``
# regexes see (argv joined by spaces).  /proc/PID/cmdline is read up to
# 64 KiB; the program and its leading options, which rules are written for,
# come first.  4 KiB is ps's own default width limit.
MATCH_CMDLINE_MAX = 4096
# comm is at most 15 bytes (TASK_COMM_LEN 16); a fake procfs or a future
# kernel cannot make a name matcher see more than this.
MATCH_NAME_MAX = 64


@functools.cache
def _re2() -> tuple[Any, Any]:
    """re2 and its options, imported at the first pattern: a daemon whose
    policy has no regex does not load RE2 and libstdc++ (2.3 MiB resident;
    README, "Memory of the running daemon")."""
    import re2

    options = re2.Options()
    options.log_errors = False  # RE2 would print each bad pattern on stderr (absl); we report it ourselves
    # The compiled program's memory (RE2's default, 8 MiB): a pattern whose
    # automaton needs more fails to compile instead of growing the daemon.
    options.max_mem = 8 << 20
    return re2, options


Pattern = Any  # re2._Regexp: .search(text), .pattern


class RegexError(ValueError):
    """A pattern RE2 cannot compile; the message names the construct."""


def compile_policy_regex(pattern: str) -> Pattern:
    """The RE2 program for ``pattern``; RegexError naming what RE2 refused."""
    re2, options = _re2()
    try:
        return re2.compile(pattern, options)
    except re2.error as e:
        raw = e.args[0] if e.args else e
        what = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        raise RegexError(f"{what} (policy regexes use RE2, a linear-time engine: no backreferences, "
                         "lookaround, possessive/atomic groups or \\Z)") from None
    except (TypeError, ValueError) as e:  # a NUL or a surrogate in the pattern
        raise RegexError(str(e)) from None


def bound_cmdline(text: str) -> str:
    return text if len(text) <= MATCH_CMDLINE_MAX else text[:MATCH_CMDLINE_MAX]


def bound_name(text: str) -> str:
    return text if len(text) <= MATCH_NAME_MAX else text[:MATCH_NAME_MAX]


def search(pattern: Pattern, text: str) -> bool:
    """``pattern.search(text)``, never raising: a lone surrogate (not from
    /proc, whose texts are decoded with "replace") is replaced first."""
    try:
        return pattern.search(text) is not None
    except UnicodeEncodeError:
        return pattern.search(text.encode("utf-8", "replace").decode("utf-8")) is not None
