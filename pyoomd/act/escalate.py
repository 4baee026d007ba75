"""The escalation both killers share (act/kill.py, act/cgroup_kill.py).

The first signal is SIGKILL at the KILL level or when the policy asks for it,
else SIGTERM; after SIGTERM the victim gets until the end of its grace to
exit, re-sampling memory every ``WAIT_STEP_S`` to escalate to SIGKILL at once
when the KILL level is reached.  The killers get the sample function
(``resample``: re-read memory, the level now), never the daemon.
"""

from __future__ import annotations

import select
import signal
from collections.abc import Callable

from ..model import Candidate, Level

# While waiting for a victim, re-sample memory this often to escalate at once
# when the KILL level is reached: 5 ms costs < 1 % CPU during the grace.
WAIT_STEP_S = 0.005

# The level now (memory re-read): the act stage's sample function.
Resample = Callable[[], Level]


def first_signal(level: Level, victim: Candidate) -> signal.Signals:
    """SIGKILL at the KILL level or when the victim's policy says so, else SIGTERM."""
    return signal.SIGKILL if level >= Level.KILL or victim.signal == "SIGKILL" else signal.SIGTERM


def grace_of(victim: Candidate, default_s: float) -> float:
    """The victim's grace after SIGTERM: its policy's, else the plan's."""
    return victim.grace_s if victim.grace_s is not None else default_s


def wait_term(exited: Callable[[float], bool], deadline: float, clock: Callable[[], float],
              resample: Resample) -> str | None:
    """Wait for exit after SIGTERM (``exited(timeout_s)`` polls the victim).
    None if it exited; else why we escalate."""
    while True:
        now = clock()
        if now >= deadline:
            return "grace period over"
        if exited(min(WAIT_STEP_S, deadline - now)):
            return None
        if resample() >= Level.KILL:
            return "KILL level reached"


def wait_readable(pidfd: int, timeout_s: float) -> bool:
    """True when the process behind pidfd has exited (the pidfd polls readable)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout_s * 1000 + 0.999))))
