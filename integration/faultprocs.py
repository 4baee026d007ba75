"""Small misbehaving processes for the fault and load scenarios.

    faultprocs.py zombie-parent            holds one unreaped zombie child
    faultprocs.py thread-hog MIB           main thread exits; another holds MIB
    faultprocs.py exit-after SECONDS       ignores SIGTERM, exits by itself
    faultprocs.py fork-storm SECONDS       forks short-lived children flat out

Each prints "ready" (and, for zombie-parent, the zombie's pid) on stdout once
it is in the state the test needs.  All are bounded in memory and time.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import signal
import sys
import threading
import time

SYS_EXIT = 60  # x86_64 exit(2): ends the calling thread only (exit_group is 231)
HOLD_S = 120.0  # upper bound on any of these living on their own
REPORT_S = 0.25  # fork-storm's progress lines: the test may stop it at any time


def touch(mib: int) -> mmap.mmap:
    m = mmap.mmap(-1, mib << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf = (ctypes.c_char * (mib << 20)).from_buffer(m)
    ctypes.memset(buf, 0x5A, mib << 20)
    del buf
    return m


def zombie_parent() -> None:
    child = os.fork()
    if child == 0:
        os._exit(0)
    while True:  # wait until the child really is a zombie, never reap it
        with open(f"/proc/{child}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                break
        time.sleep(0.01)
    print(f"ready {child}", flush=True)
    time.sleep(HOLD_S)


def thread_hog(mib: int) -> None:
    def hold() -> None:
        keep = touch(mib)
        print("ready", flush=True)
        time.sleep(HOLD_S)
        del keep

    threading.Thread(target=hold).start()
    time.sleep(0.2)
    ctypes.CDLL(None).syscall(SYS_EXIT, 0)  # the thread-group leader exits; the holder lives on


def exit_after(seconds: float) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    keep = touch(16)
    print("ready", flush=True)
    time.sleep(seconds)
    del keep


def fork_storm(seconds: float) -> None:
    """Fork children that exit at once, as fast as we can, for ``seconds``.
    Prints how many it has made on stderr every REPORT_S."""
    print("ready", flush=True)
    made = 0
    end = time.monotonic() + seconds
    report = time.monotonic() + REPORT_S
    while time.monotonic() < end:
        if time.monotonic() >= report:
            report += REPORT_S
            print(f"forked {made}", file=sys.stderr, flush=True)
        try:
            pid = os.fork()
        except OSError:
            time.sleep(0.001)
            continue
        if pid == 0:
            os._exit(0)
        made += 1
        while True:  # reap what has exited, without blocking
            try:
                got, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if got == 0:
                break
    print(f"forked {made}", file=sys.stderr, flush=True)


def main() -> int:
    what, arg = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "0"
    if what == "zombie-parent":
        zombie_parent()
    elif what == "thread-hog":
        thread_hog(int(arg))
    elif what == "exit-after":
        exit_after(float(arg))
    elif what == "fork-storm":
        fork_storm(float(arg))
    else:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
