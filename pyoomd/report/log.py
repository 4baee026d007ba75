"""Logging: console lines on a TTY, JSON lines otherwise (stdlib only).

Events are stable names with flat keys (see README, "Log events"), so tests
and log shippers can rely on them: startup, sample_error, low_memory,
kill, victim_exited, escalate, victim_stuck, kill_skipped, shutdown, ...

The output is what structlog printed with the processors pyoomd used
(add_log_level, TimeStamper(fmt="iso", utc=True), JSONRenderer or
ConsoleRenderer(colors=False)): a JSON object with the event's fields in
the order given, then ``event``, ``level`` and ``timestamp`` (ISO 8601,
UTC, ``Z``).  structlog itself is not used: importing it costs the running
loop ~10 MiB (it imports asyncio, which imports ssl); see README,
"Memory of the running daemon".
"""

from __future__ import annotations

import _thread
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from ..textsafe import FIELD_MAX_CHARS, LINE_MAX_BYTES, bound, escape_nonprintable, needs_bound

# structlog's add_log_level: the method name, warn -> warning, exception -> error.
_LEVEL_OF = {"debug": "debug", "info": "info", "warning": "warning", "warn": "warning", "error": "error",
             "critical": "critical", "exception": "error", "msg": "info"}
_LEVEL_WIDTH = len("exception")  # ConsoleRenderer pads to its longest level name
_EVENT_WIDTH = 30  # ConsoleRenderer's pad_event_to
_CONSOLE_QUOTE = frozenset(" \t=\r\n\"'")


def _fallback(obj: object) -> Any:
    """JSON for what json cannot encode, as structlog's JSONRenderer did."""
    method = getattr(obj, "__structlog__", None)
    return method() if method is not None else repr(obj)


def timestamp(now_ns: int | None = None) -> str:
    """``datetime.now(timezone.utc).isoformat()`` with ``Z``, without datetime."""
    ns = time.time_ns() if now_ns is None else now_ns
    secs, us = divmod(ns // 1000, 1_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{text}.{us:06d}Z" if us else f"{text}Z"


def render_json(event_dict: dict[str, Any]) -> str:
    return json.dumps(event_dict, default=_fallback)


def _console_value(value: object) -> str:
    if isinstance(value, str):  # repr escapes every non-printable character (ESC, \x85, U+2028, ...)
        return repr(value) if _CONSOLE_QUOTE.intersection(value) or not value.isprintable() else value
    return repr(value)


def render_console(event_dict: dict[str, Any]) -> str:
    """ConsoleRenderer(colors=False): timestamp, [level], event padded to 30,
    then key=value sorted by key (strings bare unless they need quotes)."""
    d = dict(event_dict)
    cols = []
    if "timestamp" in d:
        cols.append(str(d.pop("timestamp")))
    if "level" in d:
        cols.append(f"[{str(d.pop('level')).ljust(_LEVEL_WIDTH)}]")
    if "event" in d:
        cols.append(str(d.pop("event")).ljust(_EVENT_WIDTH))
    cols.extend(f"{k}={_console_value(d[k])}" for k in sorted(d))
    line = " ".join(c for c in cols if c).rstrip(" ")
    # Whatever a key, the event or an object's repr held: nothing raw reaches the terminal.
    return escape_nonprintable(line)


def render_bounded(render: Callable[[dict[str, Any]], str], fields: dict[str, Any]) -> str:
    """``render(fields)``, its long strings cut (``...[N chars cut]``) so the
    line stays below ``LINE_MAX_BYTES``: first to ``FIELD_MAX_CHARS``, then
    shorter; a line still too long (a huge list) keeps only event, level,
    timestamp and ``truncated_bytes``.  Only the line is cut: observers
    (hooks, metrics) got the event's fields whole."""
    if needs_bound(fields):
        fields = bound(fields)
    line = render(fields)
    limit = FIELD_MAX_CHARS
    while len(line) > LINE_MAX_BYTES // 4 and len(line.encode("utf-8", "surrogateescape")) > LINE_MAX_BYTES:
        limit //= 8
        if limit < 16:
            short: dict[str, Any] = {"truncated_bytes": len(line.encode("utf-8", "surrogateescape"))}
            short.update((k, fields[k]) for k in ("event", "level", "timestamp") if k in fields)
            return render(short)
        fields = bound(fields, limit)
        line = render(fields)
    return line


class _Flushing:
    """A line-flushing wrapper: a log line must reach the journal before a
    SIGKILL of our own could lose it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = _thread.allocate_lock()  # observers log from their threads

    def write(self, text: str) -> None:
        with self._lock:
            try:
                self._stream.write(text)
                self._stream.flush()
            except (OSError, ValueError):
                pass  # the log destination is gone: keep killing, stop logging

    def flush(self) -> None:
        pass


class _Config:
    out: _Flushing | None = None  # None: not configured yet (stderr, auto)
    render = staticmethod(render_json)
    journal: Any = None  # report/journal.JournalSink when stderr is the journal


def configure(fmt: str = "auto", stream: TextIO | None = None, journal_socket: str | None = None) -> None:
    """``fmt`` is auto, console or json.  Logs go to ``stream`` (stderr); with
    auto, native journal entries when stderr is the journal
    (report/journal.py; ``journal_socket`` or ``$PYOOMD_JOURNAL_SOCKET``
    stands in for journald's socket in tests)."""
    stream = stream or sys.stderr
    if _Config.journal is not None:
        _Config.journal.close()
        _Config.journal = None
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
        try:
            fd = stream.fileno()
        except (OSError, ValueError, AttributeError):
            fd = -1
        from . import journal

        if fd >= 0 and journal.stderr_is_journal(fd):
            path = journal_socket or os.environ.get("PYOOMD_JOURNAL_SOCKET") or journal.JOURNAL_SOCKET
            _Config.journal = journal.JournalSink(path)
    _Config.out = _Flushing(stream)
    _Config.render = staticmethod(render_json if fmt == "json" else render_console)


class Logger:
    """``log.info("event", key=value, ...)`` and so on, as structlog's bound
    logger was called; the configuration in force at each call is used."""

    __slots__ = ()

    def _log(self, method: str, event: str, fields: dict[str, Any]) -> None:
        if _Config.out is None:
            configure()
        fields["event"] = event
        fields["level"] = _LEVEL_OF[method]
        fields["timestamp"] = timestamp()
        assert _Config.out is not None
        if _Config.journal is not None and _Config.journal.send(bound(fields) if needs_bound(fields) else fields):
            return
        _Config.out.write(render_bounded(_Config.render, fields) + "\n")

    def debug(self, event: str, **fields: Any) -> None:
        self._log("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, fields)

    def msg(self, event: str, **fields: Any) -> None:
        self._log("msg", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, fields)

    def warn(self, event: str, **fields: Any) -> None:
        self._log("warn", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._log("exception", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._log("critical", event, fields)


_LOGGER = Logger()


def get_logger() -> Logger:
    return _LOGGER


TRACEBACK_MAX_CHARS = 4000


def _trace(exc_type: Any, exc: BaseException | None, tb: Any) -> str:
    import traceback

    text = "".join(traceback.format_exception(exc_type, exc, tb))
    return text if len(text) <= TRACEBACK_MAX_CHARS else "...[cut]" + text[-TRACEBACK_MAX_CHARS:]


def install_excepthooks() -> None:
    """An exception nobody caught (in any thread, or one Python could only
    report as "unraisable") becomes a JSON event with a bounded traceback
    field, never text printed raw into the log stream; so does a Python
    warning."""
    import threading

    def thread_hook(args: Any) -> None:
        if args.exc_type is SystemExit:
            return
        _LOGGER.error("thread_exception", thread=getattr(args.thread, "name", None),
                      error=repr(args.exc_value)[:1000], traceback=_trace(args.exc_type, args.exc_value,
                                                                          args.exc_traceback))

    def main_hook(exc_type: Any, exc: BaseException, tb: Any) -> None:
        _LOGGER.error("uncaught_exception", error=repr(exc)[:1000], traceback=_trace(exc_type, exc, tb))

    def unraisable_hook(u: Any) -> None:
        _LOGGER.error("unraisable_exception", error=repr(u.exc_value)[:1000], message=str(u.err_msg or ""),
                      object=repr(u.object)[:200], traceback=_trace(u.exc_type, u.exc_value, u.exc_traceback))

    def warning_hook(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                     line: Any = None) -> None:
        _LOGGER.warning("python_warning", category=getattr(category, "__name__", str(category)),
                        message=str(message)[:1000], where=f"{filename}:{lineno}")

    import warnings

    threading.excepthook = thread_hook
    sys.excepthook = main_hook
    sys.unraisablehook = unraisable_hook
    warnings.showwarning = warning_hook


def kernel_style(pid: int, comm: str, uid: int, vm_kib: int, anon_kib: int, file_kib: int,
                 shmem_kib: int) -> str:
    """The line the kernel's OOM killer prints, so existing grep habits work."""
    return (f"Killed process {pid} ({comm}) total-vm:{vm_kib}kB, anon-rss:{anon_kib}kB, "
            f"file-rss:{file_kib}kB, shmem-rss:{shmem_kib}kB, UID:{uid}")
