"""The idle wait: while memory is above the WARN level the loop samples in C
(Sampler.idle_wait) and comes back to Python only when there is something
to judge, a signal, a wake or housekeeping."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Protocol, cast

from ..errors import ParseError
from ..judge.decide import RATE_SAFETY, RATE_STEP_S, RATE_WINDOW_S
from ..model import Level
from ..sense.sample import IdleParams, IdleResult
from .base import DaemonParts

# While memory is above the WARN level the loop samples in C (Sampler.idle_wait)
# and comes back to Python for a tick at least this often; sooner when an
# observer asks for it (its ``idle_every_s``: metrics, memory reports; the
# watchdog is pinged from inside the wait, and a status request wakes it
# through ``wake``).  At the OK level the daemon itself has nothing
# periodic to do; each such tick costs ~300 us of CPU (cold caches), so a
# short period would cost more than the sampling (README, Sampling).
IDLE_HOUSEKEEPING_S = 60.0


class _Pinger(Protocol):
    """An observer that pings the watchdog (report/sdnotify.py ``idle_ping``)."""

    def idle_ping(self) -> tuple[int, float, float] | None: ...

    def pinged(self, at: float) -> None: ...


class Idle(DaemonParts):
    """One part of the Daemon (daemon/core.py), as the module docstring says."""

    def _can_idle(self) -> bool:
        """Only at the OK level with nothing pending: above WARN no kill, PSI
        rule or growth following can start (see idle_gate_kib)."""
        st = self.state
        # The wait for a victim's memory is pending until its deadline (the
        # tick clears it only at TERM and below, where it is used).
        releasing = st.release is not None and self.clock() < st.release[0]
        return (st.level == Level.OK and not releasing and not st.episode.active
                and not st.reload and not st.stop)

    def idle_gate_kib(self) -> int:
        """The highest MemAvailable at which anything can start: the WARN
        level (growth following starts there, the PSI rule counts only at or
        below it, TERM and KILL are at or below it)."""
        th = self.thresholds
        gate = max(th.mem_warn_kib, th.mem_term_kib, th.mem_kill_kib)
        pressure = getattr(self.judge, "pressure", None)
        if pressure is not None:
            gate = max(gate, pressure.rule.gate_kib)
        return gate

    def idle_timeout_s(self) -> float:
        """How long the idle wait may last: IDLE_HOUSEKEEPING_S, or less if an
        observer needs ticks more often (``idle_every_s``)."""
        every = [IDLE_HOUSEKEEPING_S]
        for obs in self.observers:
            if self._pinger_spec(obs) is not None:
                continue  # the idle wait pings the watchdog itself
            want = getattr(obs, "idle_every_s", None)
            if want is not None and want > 0:
                every.append(float(want))
        return max(self.settings.sampling.min_interval, min(every))

    def _idle(self, idle_wait: Callable[[IdleParams], IdleResult], pause: float,
              wake_fd: int | None) -> IdleResult | None:
        """Sleep ``pause``, then sample in C until there is something to judge.
        Returns the sample for the next tick, or None when sampling failed
        (the tick reads again and reports the error)."""
        s = self.settings.sampling
        waiter = self.waiter
        psi_fd = getattr(waiter, "fd", None)
        pinger = next((o for o in self.observers if self._pinger_spec(o) is not None), None)
        ping = self._pinger_spec(pinger) if pinger is not None else None
        params = IdleParams(
            gate_kib=self.idle_gate_kib(), timeout_s=self.idle_timeout_s(), first_sleep_s=pause,
            min_interval_s=s.min_interval, max_interval_s=s.max_interval,
            min_rate_kib_s=s.min_rate_mib_s * 1024.0, max_rate_kib_s=s.max_rate_mib_s * 1024.0,
            rate_kib_s=self.judge.mem_rate_kib_s(), rate_safety=RATE_SAFETY,
            rate_step_s=RATE_STEP_S, rate_window_s=RATE_WINDOW_S, psi_fd=psi_fd, wake_fd=wake_fd,
            notify_fd=ping[0] if ping else None, notify_every_s=ping[1] if ping else 0.0,
            notify_last_s=ping[2] if ping else 0.0)
        try:
            got = idle_wait(params)
        except (OSError, ParseError):
            return None
        finally:
            _drain(wake_fd)
        if got.reason == "psi" and waiter is not None:
            waiter.note(got.revents)
        if got.pings and pinger is not None:
            cast("_Pinger", pinger).pinged(got.notify_last_s)
        return got

    @staticmethod
    def _pinger_spec(obs: object) -> tuple[int, float, float] | None:
        """An observer's watchdog ping request (report/sdnotify.py idle_ping)."""
        idle_ping = getattr(obs, "idle_ping", None)
        return idle_ping() if idle_ping is not None else None

    def _signal_wakeup(self) -> int | None:
        """A non-blocking pipe that Python's C-level signal handler writes to
        (signal.set_wakeup_fd): the idle wait polls it, so a SIGTERM or SIGHUP
        ends the wait even when it lands just before the wait begins (EINTR
        alone would miss that one).  None where it cannot be set (not the
        main thread, or someone else's fd is in place)."""
        self._wake_pipe: tuple[int, int] | None = None
        try:
            r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except ValueError:  # not the main thread
            old = None
        if old is None or old != -1:
            if old is not None:
                signal.set_wakeup_fd(old)
            os.close(r)
            os.close(w)
            return None
        self._wake_pipe = (r, w)
        return r

    def wake(self) -> None:
        """End the idle wait now (from any thread: the status socket asks for
        a fresh sample).  Outside run(), or on the non-idle path (which
        sleeps at most sampling.max_interval), there is nothing to end."""
        pipe = getattr(self, "_wake_pipe", None)
        if pipe is not None:
            try:
                os.write(pipe[1], b"w")
            except OSError:
                pass  # full (a wake is already pending) or closed (run() ended)

    def _signal_wakeup_off(self) -> None:
        pipe = getattr(self, "_wake_pipe", None)
        if pipe is not None:
            try:
                signal.set_wakeup_fd(-1)
            except ValueError:
                pass
            os.close(pipe[0])
            os.close(pipe[1])
            self._wake_pipe = None


def _drain(fd: int | None) -> None:
    """Empty the signal wakeup pipe (the handlers have run or will)."""
    if fd is None:
        return
    try:
        while os.read(fd, 512):
            pass
    except OSError:  # BlockingIOError: empty
        pass

