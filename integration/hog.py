"""A bounded memory hog for integration tests and benchmarks.

Grows at --rate MiB/s (0: as fast as memset goes) up to --max MiB, then holds
for --hold seconds and exits.  Pages are really touched (memset), so RSS and
MemAvailable follow.  --ignore-term makes it ignore SIGTERM.

Cooperating hogs: --free-on-usr1 frees everything it holds (madvise
MADV_DONTNEED) and stops growing when SIGUSR1 comes (a soft action's
program sends it); --free-on-lowmem ADDRESS does the same when a
LowMemoryWarning signal of level >= 50 arrives on that D-Bus bus (it
prints "lowmem LEVEL" for each one heard).  --go-file PATH: wait for PATH
to exist before growing (hogs that must grow together).
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import signal
import sys
import threading
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
    ap.add_argument("--free-on-usr1", action="store_true")
    ap.add_argument("--free-on-lowmem", metavar="DBUS_ADDRESS")
    ap.add_argument("--go-file")
    args = ap.parse_args()
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    chunks = []
    lock = threading.RLock()
    freed = threading.Event()

    def grab(mib: int) -> None:
        with lock:
            if freed.is_set():
                return
            m = mmap.mmap(-1, mib << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            buf = (ctypes.c_char * (mib << 20)).from_buffer(m)
            ctypes.memset(buf, 0x5A, mib << 20)
            chunks.append((m, buf))

    def free_all(why: str) -> None:
        with lock:
            freed.set()
            for m, _ in chunks:
                m.madvise(mmap.MADV_DONTNEED)
        print(f"freed {why}", flush=True)

    if args.free_on_usr1:
        signal.signal(signal.SIGUSR1, lambda *_: free_all("usr1"))
    if args.free_on_lowmem:
        listening = threading.Event()
        threading.Thread(target=_listen_lowmem, args=(args.free_on_lowmem, free_all, listening),
                         daemon=True).start()
        listening.wait(10)

    if args.start:
        grab(min(args.start, args.max))
    print("ready", flush=True)
    while args.go_file and not os.path.exists(args.go_file):
        time.sleep(0.005)
    time.sleep(args.delay)
    have = min(args.start, args.max)
    t0 = time.monotonic()
    while have < args.max and not freed.is_set():
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


def _listen_lowmem(address: str, free_all: object, listening: threading.Event) -> None:
    """Hear LowMemoryWarning (org.freedesktop.LowMemoryMonitor) on the bus at
    ``address`` through a match rule; free everything at level >= 50."""
    from jeepney import MatchRule, message_bus
    from jeepney.io.blocking import open_dbus_connection

    conn = open_dbus_connection(address)
    rule = MatchRule(type="signal", interface="org.freedesktop.LowMemoryMonitor", member="LowMemoryWarning",
                     path="/org/freedesktop/LowMemoryMonitor")
    conn.send_and_get_reply(message_bus.AddMatch(rule))
    listening.set()
    while True:
        msg = conn.receive()
        if rule.matches(msg):
            level = int(msg.body[0])
            print(f"lowmem {level}", flush=True)
            if level >= 50:
                free_all(f"lowmem {level}")  # type: ignore[operator]


if __name__ == "__main__":
    sys.exit(main())
