"""The judge a daemon runs with, from its settings: one place for the daemon
(start-up and reload) and the tools that judge as it does (``watch``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .decide import Judge
from .pressure import compile_rule
from .relief import compile_relief
from .thrash import compile_thrash

if TYPE_CHECKING:
    from ..settings.amounts import Thresholds
    from ..settings.schema import Settings


def make_judge(settings: Settings, th: Thresholds) -> Judge:
    """The judge with the PSI and thrash rules gated on the WARN level."""
    relief = getattr(settings, "swap_relief", None)  # absent from plans of older versions
    thrash = getattr(settings, "thrash", None)
    return Judge(th, settings.sampling, compile_rule(settings.psi, th.mem_warn_kib),
                 compile_relief(relief) if relief is not None else None,
                 compile_thrash(thrash, th.mem_warn_kib) if thrash is not None else None)
