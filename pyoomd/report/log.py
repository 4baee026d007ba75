"""Logging: structlog, configured once for every pyoomd process.

Events are stable names with flat keys (see README, "Log events"), so tests
and log shippers can rely on them: startup, sample_error, low_memory,
kill, victim_exited, escalate, victim_stuck, kill_skipped, shutdown, ...

The pipeline (``configure``), each step a plain structlog processor:

1. ``add_log_level`` and ``TimeStamper(fmt="iso", utc=True)`` (structlog's);
2. ``killed_process_line``: the kernel-style ``Killed process ...`` line for
   a ``killed_process`` event, so existing grep habits work;
3. ``bound_strings``: every string of the event cut to ``FIELD_MAX_CHARS``
   (hostile command lines);
4. ``JournalSender``: when stderr is the journal, one native journal entry
   (report/journal.py) and the event stops there;
5. a renderer: structlog's ``JSONRenderer`` or ``ConsoleRenderer(colors=False)``,
   wrapped by ``Bounded``, which keeps a line below ``LINE_MAX_BYTES`` and
   escapes what a name could carry to a terminal.

Lines go through structlog's ``WriteLogger`` to a stream that flushes each
line and ignores a vanished destination.  Loggers are not cached, so
``configure`` again (SIGHUP, tests) and ``structlog.testing.capture_logs``
take effect everywhere.  What importing structlog costs the running daemon
(it imports asyncio, which imports ssl) is measured in the README, "Memory
of the running daemon".
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

import structlog
from structlog.dev import ConsoleRenderer
from structlog.processors import JSONRenderer, TimeStamper, add_log_level, format_exc_info
from structlog.typing import EventDict, Processor, WrappedLogger

from ..textsafe import FIELD_MAX_CHARS, LINE_MAX_BYTES, bound, escape_nonprintable, needs_bound

LOGGER_NAME = "pyoomd"
_KERNEL_FIELDS = ("pid", "comm", "uid", "total_vm_kib", "anon_rss_kib", "file_rss_kib", "shmem_rss_kib")


def kernel_style(pid: int, comm: str, uid: int, vm_kib: int, anon_kib: int, file_kib: int,
                 shmem_kib: int) -> str:
    """The line the kernel's OOM killer prints, so existing grep habits work."""
    return (f"Killed process {pid} ({comm}) total-vm:{vm_kib}kB, anon-rss:{anon_kib}kB, "
            f"file-rss:{file_kib}kB, shmem-rss:{shmem_kib}kB, UID:{uid}")


def killed_process_line(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """A ``killed_process`` event with the kernel's fields gets its ``line``."""
    if event_dict.get("event") == "killed_process" and "line" not in event_dict \
            and all(k in event_dict for k in _KERNEL_FIELDS):
        event_dict["line"] = kernel_style(*(event_dict[k] for k in _KERNEL_FIELDS))
    return event_dict


def bound_strings(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """Every string (also inside lists and dicts) cut to ``FIELD_MAX_CHARS``
    with ``...[N chars cut]``.  Only the log is cut: observers (hooks,
    metrics) got the event's fields whole."""
    if needs_bound(event_dict):
        return bound(dict(event_dict))  # type: ignore[no-any-return]  # bound keeps a dict a dict
    return event_dict


class JournalSender:
    """When the journal is the destination: the event as one native entry,
    and nothing more (``DropEvent``).  A send that fails lets the event go
    on to the line renderer (stderr): no event is lost."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        if self.sink.send(event_dict):
            raise structlog.DropEvent
        return event_dict


class Bounded:
    """``render(event_dict)`` kept below ``LINE_MAX_BYTES``: long strings cut
    shorter and shorter; a line still too long (a huge list) keeps only
    event, level, timestamp and ``truncated_bytes``.  ``escape``: every
    non-printable character escaped (the console renderer prints strings
    bare)."""

    def __init__(self, render: Callable[[WrappedLogger, str, EventDict], Any], escape: bool = False) -> None:
        self.render = render
        self.escape = escape

    def _line(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        line = str(self.render(logger, method, dict(event_dict)))
        return escape_nonprintable(line) if self.escape else line

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        line = self._line(logger, method, event_dict)
        limit = FIELD_MAX_CHARS
        while len(line) > LINE_MAX_BYTES // 4 and len(line.encode("utf-8", "surrogateescape")) > LINE_MAX_BYTES:
            limit //= 8
            if limit < 16:
                short: dict[str, Any] = {"truncated_bytes": len(line.encode("utf-8", "surrogateescape"))}
                short.update((k, event_dict[k]) for k in ("event", "level", "timestamp") if k in event_dict)
                return self._line(logger, method, short)
            line = self._line(logger, method, bound(dict(event_dict), limit))
        return line


class _Stream:
    """Each line flushed at once (a log line must reach the journal before a
    SIGKILL of our own could lose it); a destination that is gone is
    ignored: keep killing, stop logging.  structlog's WriteLogger holds the
    lock around write + flush (observers log from their threads)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> None:
        try:
            self._stream.write(text)
        except (OSError, ValueError):
            pass

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass


class _State:
    journal: Any = None  # report/journal.JournalSink while stderr is the journal


def processors(fmt: str, journal: Any = None) -> list[Processor]:
    """The chain for ``fmt`` (json or console), with a journal sink first
    when one is given."""
    chain: list[Processor] = [add_log_level, TimeStamper(fmt="iso", utc=True), killed_process_line,
                              bound_strings]
    if journal is not None:
        chain.append(JournalSender(journal))
    if fmt == "json":
        chain += [format_exc_info, Bounded(JSONRenderer())]
    else:
        chain.append(Bounded(ConsoleRenderer(colors=False), escape=True))
    return chain


def configure(fmt: str = "auto", stream: TextIO | None = None, journal_socket: str | None = None) -> None:
    """``fmt`` is auto, console or json.  Logs go to ``stream`` (stderr); with
    auto, native journal entries when stderr is the journal
    (report/journal.py; ``journal_socket`` or ``$PYOOMD_JOURNAL_SOCKET``
    stands in for journald's socket in tests)."""
    stream = stream or sys.stderr
    if _State.journal is not None:
        _State.journal.close()
        _State.journal = None
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
        try:
            fd = stream.fileno()
        except (OSError, ValueError, AttributeError):
            fd = -1
        from . import journal

        if fd >= 0 and journal.stderr_is_journal(fd):
            path = journal_socket or os.environ.get("PYOOMD_JOURNAL_SOCKET") or journal.JOURNAL_SOCKET
            _State.journal = journal.JournalSink(path)
    structlog.configure(
        processors=processors(fmt, _State.journal),
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.WriteLoggerFactory(file=_Stream(stream)),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def get_logger() -> Any:
    """pyoomd's structlog logger; configured for stderr (auto) if nothing
    configured structlog yet (``capture_logs`` counts as configured)."""
    if not structlog.is_configured():
        configure()
    return structlog.get_logger(LOGGER_NAME)


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
        get_logger().error("thread_exception", thread=getattr(args.thread, "name", None),
                      error=repr(args.exc_value)[:1000], traceback=_trace(args.exc_type, args.exc_value,
                                                                          args.exc_traceback))

    def main_hook(exc_type: Any, exc: BaseException, tb: Any) -> None:
        get_logger().error("uncaught_exception", error=repr(exc)[:1000], traceback=_trace(exc_type, exc, tb))

    def unraisable_hook(u: Any) -> None:
        get_logger().error("unraisable_exception", error=repr(u.exc_value)[:1000], message=str(u.err_msg or ""),
                      object=repr(u.object)[:200], traceback=_trace(u.exc_type, u.exc_value, u.exc_traceback))

    def warning_hook(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                     line: Any = None) -> None:
        get_logger().warning("python_warning", category=getattr(category, "__name__", str(category)),
                        message=str(message)[:1000], where=f"{filename}:{lineno}")

    import warnings

    threading.excepthook = thread_hook
    sys.excepthook = main_hook
    sys.unraisablehook = unraisable_hook
    warnings.showwarning = warning_hook

