"""A bounded memory hog for integration tests and benchmarks.

Grows at --rate MiB/s (0: as fast as memset goes) up to --max MiB, then holds
for --hold seconds and exits.  Pages are really touched (memset), so RSS and
MemAvailable follow.  --ignore-term makes it ignore SIGTERM.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import signal
import sys
import time

CHUNK_MIB = 1  # 1 MiB steps: at 256 MiB/s one every 3.9 ms, finer than any daemon's sampling


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=256.0, help="MiB/s; 0 = as fast as possible")
    ap.add_argument("--max", type=int, default=1024, help="MiB, hard bound")
    ap.add_argument("--start", type=int, default=0, help="MiB to allocate at once before growing")
    ap.add_argument("--hold", type=float, default=30.0, help="seconds to hold at --max")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to wait before growing")
    ap.add_argument("--ignore-term", action="store_true")
    args = ap.parse_args()
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    chunks = []

    def grab(mib: int) -> None:
        m = mmap.mmap(-1, mib << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        buf = (ctypes.c_char * (mib << 20)).from_buffer(m)
        ctypes.memset(buf, 0x5A, mib << 20)
        chunks.append((m, buf))

    if args.start:
        grab(min(args.start, args.max))
    print("ready", flush=True)
    time.sleep(args.delay)
    have = min(args.start, args.max)
    t0 = time.monotonic()
    while have < args.max:
        step = min(CHUNK_MIB, args.max - have)
        grab(step)
        have += step
        if args.rate > 0:
            due = t0 + (have - args.start) / args.rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    time.sleep(args.hold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
