"""The daemon: ``Daemon`` (core.py) wires sense, judge, act and report;
``launch`` builds and runs it from a compiled plan."""

from .core import (
    ERROR_LOG_EVERY_S,
    FREES_REREAD_S,
    FREES_TOP,
    IDLE_HOUSEKEEPING_S,
    STUCK_FORGET_S,
    WARM_MAX_AGE,
    WARM_SLACK,
    Daemon,
)

__all__ = ["ERROR_LOG_EVERY_S", "FREES_REREAD_S", "FREES_TOP", "IDLE_HOUSEKEEPING_S", "STUCK_FORGET_S",
           "WARM_MAX_AGE", "WARM_SLACK", "Daemon"]
