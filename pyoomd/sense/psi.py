"""PSI triggers: wake the daemon the moment memory stalls begin.

The kernel interface (Documentation/accounting/psi.rst): open the pressure
file ``O_RDWR | O_NONBLOCK``, write ``"some|full <stall_us> <window_us>"``,
then ``poll()`` for ``POLLPRI``: it fires when the tasks stalled at least
``stall_us`` within any ``window_us`` window (at most once per window).

Privileges: since Linux 6.5 a process without CAP_SYS_RESOURCE may register
triggers only with a window that is a multiple of 2 s (the unprivileged PSI
poller runs on the 2 s averaging clock); others are refused with EINVAL.
Measured on this 6.18 kernel as root without CAP_SYS_RESOURCE: ``some 150000
1000000`` and ``some 500000 500000`` -> EINVAL; ``some 150000 2000000`` and
``some 100000 4000000`` -> accepted.  So when the requested window is refused
we retry with the next multiple of 2 s and say so; where there is no PSI file
(kernel < 4.20, CONFIG_PSI=n, psi=0) or no trigger is accepted, the daemon
runs on sampling alone.  ``Waiter.mode`` says which, for the ``startup`` event.
"""

from __future__ import annotations

import errno
import math
import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass

from .procfs import Procfs

# psi.c: "window_us < WINDOW_MIN_US || window_us > WINDOW_MAX_US" -> EINVAL.
WINDOW_MIN_US = 500_000
WINDOW_MAX_US = 10_000_000
# The window granularity allowed without CAP_SYS_RESOURCE (psi.c, 6.5+:
# "if (!privileged && window_us % 2000000) return -EINVAL").
UNPRIVILEGED_WINDOW_US = 2_000_000


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    kind: str  # "some" | "full"
    stall_us: int
    window_us: int

    def text(self) -> bytes:
        return f"{self.kind} {self.stall_us} {self.window_us}".encode() + b"\0"

    def describe(self) -> str:
        return f"{self.kind} {_fmt_us(self.stall_us)}/{_fmt_us(self.window_us)}"


def _fmt_us(us: int) -> str:
    if us % 1_000_000 == 0:
        return f"{us // 1_000_000}s"
    return f"{us / 1000:g}ms"


def widened(spec: TriggerSpec) -> TriggerSpec | None:
    """The same trigger on the next 2 s multiple window, or None if the
    window already is one (nothing left to try) or would exceed the maximum."""
    if spec.window_us % UNPRIVILEGED_WINDOW_US == 0:
        return None
    window = math.ceil(spec.window_us / UNPRIVILEGED_WINDOW_US) * UNPRIVILEGED_WINDOW_US
    if window > WINDOW_MAX_US:
        return None
    return TriggerSpec(spec.kind, min(spec.stall_us, window), window)


Opener = Callable[[str, int], int]
Writer = Callable[[int, bytes], int]


def register(path: str, spec: TriggerSpec, opener: Opener = os.open,
             writer: Writer = os.write) -> tuple[int | None, str]:
    """Register ``spec`` on the pressure file ``path``.  Returns (fd, mode):
    fd is None when falling back to sampling; mode describes what is in force."""
    try:
        fd = opener(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, "sampling only (no PSI)"
    except OSError as e:
        return None, f"sampling only (cannot open {path}: {os.strerror(e.errno or 0)})"
    if not _is_kernel_psi_file(fd):
        os.close(fd)
        return None, f"sampling only ({path} is not a kernel PSI file)"
    note = ""
    attempt: TriggerSpec | None = spec
    while attempt is not None:
        try:
            writer(fd, attempt.text())
            return fd, f"psi-trigger {attempt.describe()}{note}"
        except OSError as e:
            if e.errno != errno.EINVAL:
                os.close(fd)
                return None, f"sampling only (trigger refused: {os.strerror(e.errno or 0)})"
            nxt = widened(attempt)
            if nxt is not None:
                note = f" ({_fmt_us(attempt.window_us)} window refused: no CAP_SYS_RESOURCE)"
            attempt = nxt
    os.close(fd)
    return None, f"sampling only (trigger {spec.describe()} refused)"


def _is_kernel_psi_file(fd: int) -> bool:
    """procfs and cgroupfs report size 0 and read as PSI lines.  A regular
    file (a test fixture under a fake /proc root) must never be written to."""
    try:
        if os.fstat(fd).st_size != 0:
            return False
        return os.pread(fd, 4096, 0).startswith(b"some ")
    except OSError:
        return False


class Waiter:
    """What the daemon sleeps on: ``wait(timeout)`` returns after ``timeout``
    seconds, or at once (True) when the PSI trigger fires."""

    def __init__(self, fd: int | None, mode: str, sleep: Callable[[float], None] = time.sleep) -> None:
        self.fd = fd
        self.mode = mode
        self._sleep = sleep
        self._poll: select.poll | None = None
        if fd is not None:
            self._poll = select.poll()
            self._poll.register(fd, select.POLLPRI)
        self.wakeups = 0  # trigger wake-ups so far (for metrics and tests)

    def wait(self, timeout_s: float) -> bool:
        if self._poll is None:
            self._sleep(timeout_s)
            return False
        events = self._poll.poll(max(0, math.ceil(timeout_s * 1000)))
        for _, ev in events:
            if ev & select.POLLPRI:
                self.wakeups += 1
                return True
            if ev & (select.POLLERR | select.POLLNVAL):
                # The file went away (a removed cgroup): keep sampling.
                self._fallback("sampling only (trigger lost: POLLERR)")
                self._sleep(timeout_s)
        return False

    def note(self, revents: int) -> bool:
        """Events that someone else's poll() saw on ``fd`` (the idle wait
        polls it in C): counted and handled as ``wait`` would.  True for a
        trigger."""
        if revents & select.POLLPRI:
            self.wakeups += 1
            return True
        if revents & (select.POLLERR | select.POLLNVAL):
            self._fallback("sampling only (trigger lost: POLLERR)")
        return False

    def _fallback(self, mode: str) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.fd, self._poll, self.mode = None, None, mode

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd, self._poll = None, None

    def __call__(self, timeout_s: float) -> None:
        """A drop-in for time.sleep."""
        self.wait(timeout_s)


def open_waiter(procfs: Procfs, kind: str = "some", stall_s: float = 0.15, window_s: float = 1.0) -> Waiter:
    """A Waiter on the system-wide memory pressure file."""
    spec = TriggerSpec(kind, round(stall_s * 1e6), max(WINDOW_MIN_US, round(window_s * 1e6)))
    fd, mode = register(procfs.pressure_memory, spec)
    return Waiter(fd, mode)
