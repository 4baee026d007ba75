"""Text from processes (comm, cmdline: any user chooses them) made safe for
a terminal, a log line, a notification: stdlib only, imported by the loop.

``escape_nonprintable``: every character ``str.isprintable()`` rejects (C0
and C1 controls such as ESC, ``\\x0b``, ``\\x85``, DEL, the line and
paragraph separators U+2028/U+2029, format characters such as U+202E) as a
backslash escape, so no sequence reaches a terminal and no line is split.
``bound_fields``: long strings in an event cut, with a marker, so one log
line stays below journald's 48 KiB LineMax.
"""

from __future__ import annotations

from typing import Any

# Longest string kept whole in a log field (characters); a JSON line escapes
# a U+FFFD (what invalid UTF-8 in a cmdline decodes to) as 6 bytes.
FIELD_MAX_CHARS = 4096
# A rendered line is kept below this (journald's default LineMax is 48 KiB:
# longer lines are split into several journal entries, none of them JSON).
LINE_MAX_BYTES = 32 * 1024


def _esc(c: str) -> str:
    n = ord(c)
    if n <= 0xFF:
        return f"\\x{n:02x}"
    return f"\\u{n:04x}" if n <= 0xFFFF else f"\\U{n:08x}"


def escape_nonprintable(text: str, backslash: bool = False) -> str:
    """``text`` with each non-printable character as ``\\xNN``/``\\uNNNN``;
    ``backslash``: also ``\\`` as ``\\\\`` (the result is then unambiguous)."""
    if text.isprintable() and not (backslash and "\\" in text):
        return text
    out = []
    for c in text:
        if c == "\\" and backslash:
            out.append("\\\\")
        elif c.isprintable():
            out.append(c)
        else:
            out.append(_esc(c))
    return "".join(out)


def cell(value: object) -> str:
    """One field of a ``rank``/``explain``/``watch`` table line."""
    return escape_nonprintable(str(value), backslash=True)


def bound(value: Any, limit: int = FIELD_MAX_CHARS) -> Any:
    """``value`` with every string (also inside lists, tuples and dicts) cut
    to ``limit`` characters and ``...[N chars cut]`` appended."""
    if isinstance(value, str):
        if len(value) <= limit:
            return value
        return f"{value[:limit]}...[{len(value) - limit} chars cut]"
    if isinstance(value, dict):
        return {k: bound(v, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [bound(v, limit) for v in value]
    return value


def needs_bound(value: Any, limit: int = FIELD_MAX_CHARS) -> bool:
    if isinstance(value, str):
        return len(value) > limit
    if isinstance(value, dict):
        return any(needs_bound(v, limit) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(needs_bound(v, limit) for v in value)
    return False


def markup_escape(text: str) -> str:
    """Plain text for a notification body: the Desktop Notifications spec's
    body markup (``<b>``, ``<a href>``, ``<img>``) neutralised, ``&``, ``<``
    and ``>`` as entities, and no control character."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return escape_nonprintable(text)
