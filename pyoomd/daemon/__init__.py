"""The daemon: ``Daemon`` (core.py) wires sense, judge, act and report; its
parts by concept (tick.py, act.py, follow.py, idle.py, reload.py, ...) and
``launch`` (build and run it from a compiled plan)."""

from .core import Daemon
from .follow import FREES_REREAD_S, FREES_TOP, STUCK_FORGET_S, WARM_MAX_AGE, WARM_SLACK
from .idle import IDLE_HOUSEKEEPING_S
from .tick import ERROR_LOG_EVERY_S

__all__ = ["ERROR_LOG_EVERY_S", "FREES_REREAD_S", "FREES_TOP", "IDLE_HOUSEKEEPING_S", "STUCK_FORGET_S",
           "WARM_MAX_AGE", "WARM_SLACK", "Daemon"]
