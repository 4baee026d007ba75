"""The tests' logger: a real structlog logger whose events structlog's own
``structlog.testing.LogCapture`` keeps (what ``capture_logs`` uses), so a
test hands it to a Daemon or an observer and asserts on events, never on
formatted text.  Code that logs through ``pyoomd.report.log.get_logger()``
is tested with ``structlog.testing.capture_logs()`` directly."""

from __future__ import annotations

import logging
from typing import Any

import structlog
from structlog.testing import LogCapture


class Log:
    """``Daemon(..., log=Log())``; then ``log.named("kill")``, ``log.events``."""

    def __init__(self, *processors: Any) -> None:
        """``processors`` run before the capture (e.g. pyoomd's own, or one
        that stamps each event with the test's clock)."""
        self.capture = LogCapture()
        self._logger = structlog.wrap_logger(
            structlog.ReturnLogger(), processors=[*processors, self.capture],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))

    def __getattr__(self, method: str) -> Any:  # info, warning, error, ...
        return getattr(self._logger, method)

    @property
    def leveled(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(level, event, fields) of each event, in order."""
        return [(e["log_level"], e["event"], fields_of(e)) for e in self.capture.entries]

    @property
    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """(event, fields) of each event, in order."""
        return [(e["event"], fields_of(e)) for e in self.capture.entries]

    def named(self, name: str) -> list[dict[str, Any]]:
        return [fields_of(e) for e in self.capture.entries if e["event"] == name]


def fields_of(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in ("event", "log_level")}
