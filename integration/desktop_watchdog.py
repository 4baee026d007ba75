"""The emulated desktop's watchdog (integration/desktop.py), a process of its own.

With most of RAM mlocked, anything that scans /proc or allocates in the
emergency falls into direct reclaim itself.  So this one is ready before the
emergency: memory locked (mlockall), /proc/meminfo kept open, and a pidfd for
each process it may have to end, handed over as ``pid N`` lines on stdin as
they start (the ballast, then the scene's PID 1, whose death ends the whole
namespace).  Every 20 ms it reads MemAvailable; when it stays below
``--low-mib`` for ``--window`` seconds, or at ``--deadline``, it sends
SIGKILL through the pidfds and releases the memory at
once (process_mrelease): the scene first, the ballast too unless memory
comes back within a second.  Prints one JSON line each time it fires.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import select
import signal
import sys
import time

from pyoomd.act.kill import process_mrelease

MCL_CURRENT, MCL_FUTURE = 1, 2


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--low-mib", type=int, default=150)
    ap.add_argument("--window", type=float, default=3.0)
    ap.add_argument("--deadline", type=float, default=90.0)
    a = ap.parse_args()
    ctypes.CDLL(None).mlockall(MCL_CURRENT | MCL_FUTURE)
    fd = os.open("/proc/meminfo", os.O_RDONLY)
    low_kib = a.low_mib * 1024
    scene: list[int] = []
    t0 = time.monotonic()
    below_since: float | None = None
    poller = select.poll()
    poller.register(0, select.POLLIN)
    buf = b""
    print("ready", flush=True)
    ballast: list[int] = []
    done = False
    while not done:
        for _, ev in poller.poll(20):
            data = os.read(0, 4096)
            if not data:  # the runner closed stdin: all scenes are over
                done = True
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                kind, _, pid_text = line.partition(b" ")
                try:
                    pfd = os.pidfd_open(int(pid_text))
                except (OSError, ValueError):
                    continue
                (ballast if kind == b"ballast" else scene).append(pfd)
        now = time.monotonic()
        avail = _avail(fd)
        below_since = (below_since or now) if avail < low_kib else None
        why = None
        if below_since is not None and now - below_since >= a.window:
            why = f"MemAvailable below {a.low_mib} MiB for {a.window:g}s"
        elif now - t0 >= a.deadline:
            why, done = f"deadline {a.deadline:g}s", True
        if why is None:
            continue
        # The scene first (its processes are the ones stuck in reclaim); the
        # ballast too when memory does not come back within a second, or at
        # the deadline.
        _kill(scene)
        scene = []
        freed = False
        until = time.monotonic() + 1.0
        while time.monotonic() < until and not done:
            if _avail(fd) > 4 * low_kib:
                freed = True
                break
            time.sleep(0.02)
        if not freed:
            _kill(ballast)
            ballast = []
        below_since = None
        print(json.dumps({"fired": True, "why": why, "ballast_killed": not freed,
                          "at_s": round(now - t0, 2)}), flush=True)
    return 0


def _avail(fd: int) -> int:
    data = os.pread(fd, 4096, 0)
    i = data.find(b"MemAvailable:")
    return int(data[i + 13:data.find(b"kB", i)])


def _kill(pidfds: list[int]) -> None:
    for pfd in pidfds:
        try:
            signal.pidfd_send_signal(pfd, signal.SIGKILL)
            process_mrelease(pfd)
        except OSError:
            pass
        os.close(pfd)


if __name__ == "__main__":
    sys.exit(main())
