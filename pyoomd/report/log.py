"""structlog setup: console lines on a TTY, JSON lines otherwise.

Events are stable names with flat keys (see README, "Log events"), so tests
and log shippers can rely on them: startup, sample_error, low_memory,
kill, victim_exited, escalate, victim_stuck, kill_skipped, shutdown, ...
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import structlog


def configure(fmt: str = "auto", stream: TextIO | None = None) -> None:
    """``fmt`` is auto, console or json.  Logs go to ``stream`` (stderr)."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=processors,
        logger_factory=structlog.WriteLoggerFactory(file=_Flushing(stream)),
        cache_logger_on_first_use=True,
    )


class _Flushing:
    """A line-flushing wrapper: a log line must reach the journal before a
    SIGKILL of our own could lose it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            pass  # the log destination is gone: keep killing, stop logging

    def flush(self) -> None:
        pass


def get_logger() -> Any:
    return structlog.get_logger("pyoomd")


def kernel_style(pid: int, comm: str, uid: int, vm_kib: int, anon_kib: int, file_kib: int,
                 shmem_kib: int) -> str:
    """The line the kernel's OOM killer prints, so existing grep habits work."""
    return (f"Killed process {pid} ({comm}) total-vm:{vm_kib}kB, anon-rss:{anon_kib}kB, "
            f"file-rss:{file_kib}kB, shmem-rss:{shmem_kib}kB, UID:{uid}")
