"""sd_notify(3) without libsystemd: READY, STATUS, WATCHDOG, RELOADING, STOPPING.

The protocol is one AF_UNIX datagram of ``KEY=VALUE`` lines to the socket
named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket).
Sending never blocks the loop: the socket is non-blocking and every error
is swallowed (a full queue or a dead manager must not stop a killer).

``SdNotifyObserver`` plugs into ``Daemon.observers``:

* ``startup`` event -> ``READY=1`` and a first ``STATUS=``;
* every tick -> ``WATCHDOG=1`` once half of ``$WATCHDOG_USEC`` has passed, so
  a loop that hangs stops the pings and systemd restarts the service;
* a level change -> ``STATUS=`` at once; otherwise ``STATUS=`` is refreshed at
  most every ``status_every_s`` seconds;
* ``reloading`` / ``reloaded`` / ``reload_failed`` -> ``RELOADING=1`` then ``READY=1``;
* ``shutdown`` -> ``STOPPING=1``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from ..model import Decision, Level, MemSample
from ..textsafe import cell
from ..units import human_kib

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"

# systemctl status shows STATUS=; a fresh MemAvailable every 5 s is plenty
# and costs one datagram (~10 us), so a 2 ms loop is not slowed.
STATUS_EVERY_S = 5.0


def socket_address(name: str) -> str | None:
    """``$NOTIFY_SOCKET`` -> an address for sendto: a path, or a leading NUL
    for the abstract namespace (``@name``).  None if unusable."""
    if not name:
        return None
    if name.startswith("@"):
        return "\0" + name[1:]
    if name.startswith("/"):
        return name
    return None  # vsock:... and relative paths are not for us


class Notifier:
    """A datagram socket to the service manager.  ``send`` returns whether the
    message left; with no ``$NOTIFY_SOCKET`` it is a no-op returning False."""

    def __init__(self, address: str | None, watchdog_usec: int = 0) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self.sent = 0
        self.failed = 0
        self._sock: socket.socket | None = None
        self._ping_sock: socket.socket | None = None
        if address is not None:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            except OSError:
                self._sock = None

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None, unset: bool = True) -> Notifier:
        """Read ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``.

        With ``unset`` (the default, as sd_notify's unset_environment) they
        are removed from the environment, so programs we start (hooks) do not
        inherit them and cannot speak for us."""
        env = os.environ if environ is None else environ
        address = socket_address(env.get(ENV_SOCKET, ""))
        watchdog = 0
        try:
            usec = int(env.get(ENV_WATCHDOG_USEC, "0"))
            wd_pid = env.get(ENV_WATCHDOG_PID)
            if usec > 0 and (not wd_pid or int(wd_pid) == os.getpid()):
                watchdog = usec
        except ValueError:
            watchdog = 0
        if unset:
            for key in (ENV_SOCKET, ENV_WATCHDOG_USEC, ENV_WATCHDOG_PID):
                env.pop(key, None)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> bool:
        if self._sock is None or self.address is None or not lines:
            return False
        # A newline inside a value would start a new assignment: flatten it.
        text = "\n".join(line.replace("\n", " ") for line in lines)
        try:
            self._sock.sendto(text.encode("utf-8", "replace"), self.address)
        except OSError:
            self.failed += 1
            return False
        self.sent += 1
        return True

    def ping_fd(self) -> int | None:
        """A datagram socket connected to the service manager, for the idle
        wait's watchdog pings (sense/sample.py IdleParams.notify_fd); None
        without one.  Made on first use, kept open."""
        if self._sock is None or self.address is None:
            return None
        if self._ping_sock is None:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                s.setblocking(False)
                s.connect(self.address)
            except OSError:
                return None
            self._ping_sock = s
        return self._ping_sock.fileno()

    def close(self) -> None:
        for sock in (self._sock, self._ping_sock):
            if sock is not None:
                sock.close()
        self._sock = self._ping_sock = None


def status_text(level: Level, sample: MemSample, last_kill: str | None = None, dry_run: bool = False) -> str:
    """One line for ``systemctl status``: level, MemAvailable, SwapFree."""
    text = (f"{level.name}: MemAvailable {human_kib(sample.mem_available_kib, 1)} "
            f"({sample.mem_available_pct:.1f}%)")
    if sample.swap_total_kib:
        text += f", SwapFree {human_kib(sample.swap_free_kib, 1)} ({sample.swap_free_pct:.1f}%)"
    else:
        text += ", no swap"
    if dry_run:
        text += ", dry-run"
    if last_kill:
        text += f"; last kill: {last_kill}"
    return text


class SdNotifyObserver:
    """The daemon observer that talks to systemd.  ``max_tick_gap_s`` is the
    longest the loop may go between ticks while it waits on a victim (SIGTERM
    grace + kill timeout + a sleep): if the unit's watchdog is too short for
    it, the watchdog timeout is raised with ``WATCHDOG_USEC=`` rather than
    letting systemd kill us in the middle of a kill."""

    def __init__(self, notifier: Notifier, clock: Callable[[], float] = time.monotonic,
                 status_every_s: float = STATUS_EVERY_S, max_tick_gap_s: float = 0.0,
                 dry_run: bool = False) -> None:
        self.notifier = notifier
        self.clock = clock
        self.status_every_s = status_every_s
        self.dry_run = dry_run
        self.watchdog_s = notifier.watchdog_usec / 1e6
        # Pings must come at least every (timeout - longest gap) to be safe.
        self.watchdog_extended_usec = 0
        if self.watchdog_s > 0 and max_tick_gap_s > 0 and max_tick_gap_s >= self.watchdog_s / 2:
            needed = 2 * max_tick_gap_s + 2.0
            self.watchdog_extended_usec = int(needed * 1e6)
            self.watchdog_s = needed
        self.last_ping = -1e18
        self.last_status_at = -1e18
        self.last_level: Level | None = None
        self.last_sample: MemSample | None = None
        self.last_kill: str | None = None
        self.ready = False

    def idle_ping(self) -> tuple[int, float, float] | None:
        """(fd, every_s, last_ping) for the daemon's idle wait, which pings
        the watchdog itself after a sample (Daemon._idle), so the loop need
        not come back to Python for it; None without a watchdog or socket."""
        if self.watchdog_s <= 0:
            return None
        fd = self.notifier.ping_fd()
        return None if fd is None else (fd, self.watchdog_s / 2, self.last_ping)

    def pinged(self, at: float) -> None:
        """The idle wait pinged, the last time at ``at`` (time.monotonic)."""
        self.last_ping = max(self.last_ping, at)

    @property
    def idle_every_s(self) -> float | None:
        """How often the daemon's idle wait must come back for a tick (see
        Daemon.idle_timeout_s): a third of the watchdog timeout (10 s for
        WatchdogSec=30s), so a ping, due after half of it, comes at most
        5/6 of the way.  STATUS needs no more: a level change ends the idle
        wait anyway (WARN and below are ticked in Python), and the refresh
        rides on these ticks."""
        return self.watchdog_s / 3 if self.watchdog_s > 0 else None

    # -- Observer -------------------------------------------------------------
    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        if event == "startup":
            self.dry_run = bool(fields.get("dry_run", self.dry_run))
            lines = ["READY=1"]
            if self.watchdog_extended_usec:
                lines.append(f"WATCHDOG_USEC={self.watchdog_extended_usec}")
            if self.watchdog_s > 0:
                lines.append("WATCHDOG=1")
                self.last_ping = self.clock()
            lines.append(f"STATUS={self._status()}")
            self.notifier.send(*lines)
            self.ready = True
            self.last_status_at = self.clock()
        elif event == "reloading":
            usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading configuration")
        elif event in ("reloaded", "reload_failed"):
            self.dry_run = bool(fields.get("dry_run", self.dry_run))
            status = self._status()
            if event == "reload_failed":
                status = f"reload failed, old configuration kept; {status}"
            self.notifier.send("READY=1", f"STATUS={status}")
            self.last_status_at = self.clock()
        elif event == "kill":
            dry = " [dry-run]" if fields.get("dry_run") else ""
            # comm is anyone's choice: `systemctl status` shows it escaped (no ESC, no newline)
            self.last_kill = f"{cell(fields.get('comm'))} (pid {fields.get('pid')}, {fields.get('signal')}){dry}"
            self.last_status_at = -1e18  # show it on the next tick
        elif event == "shutdown":
            self.notifier.send("STOPPING=1", "STATUS=stopping")

    def on_tick(self, sample: MemSample, decision: Decision) -> None:
        now = self.clock()
        self.last_sample = sample
        lines = []
        if self.watchdog_s > 0 and now - self.last_ping >= self.watchdog_s / 2:
            lines.append("WATCHDOG=1")
            self.last_ping = now
        if self.ready and (decision.level != self.last_level or now - self.last_status_at >= self.status_every_s):
            self.last_level = decision.level
            self.last_status_at = now
            lines.append(f"STATUS={self._status()}")
        if lines:
            self.notifier.send(*lines)

    # -- helpers --------------------------------------------------------------
    def _status(self) -> str:
        if self.last_sample is None:
            return "starting"
        return status_text(self.last_level or Level.OK, self.last_sample, self.last_kill, self.dry_run)

    def prime(self, sample: MemSample) -> None:
        """The sample taken before the loop starts, so READY's STATUS has numbers."""
        self.last_sample = sample
        if self.last_level is None:
            self.last_level = Level.OK


def observer_for(settings: Any, first_sample: MemSample,
                 environ: MutableMapping[str, str] | None = None) -> SdNotifyObserver | None:
    """The observer for ``pyoomd run`` under systemd, or None when not started
    by a service manager (no ``$NOTIFY_SOCKET``).  The longest gap between
    ticks is a kill: SIGTERM grace, then the SIGKILL wait, the settle pause,
    one full sleep and a second for the process-table scan."""
    notifier = Notifier.from_env(environ)
    if not notifier.enabled:
        return None
    k = settings.kill
    gap = k.grace + k.kill_timeout + k.settle + settings.sampling.max_interval + 1.0
    obs = SdNotifyObserver(notifier, max_tick_gap_s=gap, dry_run=settings.dry_run)
    obs.prime(first_sample)
    return obs
