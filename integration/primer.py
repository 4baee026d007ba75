"""Drain the memory this VM hides, and hold it for one scene.

What a process frees here goes to the host's free page reporting first and
comes back to MemFree over seconds to minutes; a new allocation is served
from those pages before MemAvailable moves.  Measured here: 3000 MiB freed,
1440 MiB back at once and the rest at 8-20 MiB/s; the first 750 MiB of the
next allocation left MemAvailable where it was, and in one failed scene the
first 2.2 GiB did, so its hogs never took MemAvailable down to TERM.

This process (outside the scene's PID namespace, oom_score_adj 1000)
allocates in 32 MiB steps until four steps in a row (128 MiB) took
MemAvailable down by at least 96 MiB, or MAX_MIB is held, prints ``primed
HELD_MIB HIDDEN_MIB`` and holds the memory until its stdin closes or LIFE_S
passes.  The scene then starts with the hidden pages in use and
MemAvailable telling the truth about what an allocation takes.  On a machine that hides nothing it stops after 128 MiB.

Usage: primer.py LIFE_S (with the repository on PYTHONPATH, as harness.py runs it)
"""

from __future__ import annotations

import ctypes
import mmap
import signal
import sys

from integration.nsrun import mem_available_kib

STEP_MIB = 32
DROP_STEPS = 4
MAX_MIB = 4096


def mem_available_mib() -> int:
    return mem_available_kib() // 1024


def main() -> int:
    life_s = int(sys.argv[1])
    signal.alarm(life_s)  # the hard lifetime: SIGALRM ends the process
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")  # the kernel's first choice if anything goes wrong
    except OSError:
        pass
    start = mem_available_mib()
    seen = [start]  # MemAvailable after each step
    held: list[mmap.mmap] = []
    # Stop once the last DROP_STEPS steps took MemAvailable down by at least
    # 3/4 of their size: the hidden pages come back in bursts, so one step
    # that lowers MemAvailable does not mean the pool is empty.
    while len(held) * STEP_MIB < MAX_MIB and not (
            len(seen) > DROP_STEPS
            and seen[-1 - DROP_STEPS] - seen[-1] >= DROP_STEPS * STEP_MIB * 3 // 4):
        m = mmap.mmap(-1, STEP_MIB << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        ctypes.memset((ctypes.c_char * (STEP_MIB << 20)).from_buffer(m), 0x5A, STEP_MIB << 20)
        held.append(m)
        seen.append(mem_available_mib())
    held_mib = len(held) * STEP_MIB
    print(f"primed {held_mib} {max(0, held_mib - (start - mem_available_mib()))}", flush=True)
    sys.stdin.read()  # until the harness closes it (or dies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
