"""The processes of the emulated small desktop (integration/desktop.py).

One file, one role per sub-command; each bounded in time (``--life``):

- ``ballast MIB_LEFT``: mmap + mlock memory until MemAvailable is down to
  MIB_LEFT (outside the scene's PID namespace: the scene's daemon cannot see
  or kill it).  oom_score_adj 1000, so the kernel would kill it first;
- ``tab MIB``: an idle browser tab: MIB of data (``--data``), then with
  ``--pageout PCT`` that share of it put into swap at once (MADV_PAGEOUT:
  zram then holds real data, as on a desktop that has been swapping);
- ``leak RATE``: grows by RATE MiB/s of the same kind of data;
- ``probe OUT``: the interactive program: every 20 ms touches a slice of an
  anonymous and of a file-backed working set; writes its longest stall (how
  late an iteration finished after it was due) to OUT on SIGTERM.

Data (``--data``): ``zero3`` is ~3:1 for lz4/lzo (each 4 KiB page: 1/3
random bytes, the rest zeros; no two pages alike), ``random``
incompressible.  Pages are never all one byte (zram stores those as
"same pages", for free).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import signal
import sys
import time

MADV_PAGEOUT = 21
PAGE = 4096
CHUNK = 1 << 20
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.mlock.argtypes = (ctypes.c_void_p, ctypes.c_size_t)


def template(kind: str, size: int = 4 * CHUNK) -> bytes:
    """``size`` bytes of pages of the given compressibility."""
    if kind == "random":
        return os.urandom(size)
    third = PAGE // 3
    return b"".join(os.urandom(third) + bytes(PAGE - third) for _ in range(size // PAGE))


class Filler:
    """Anonymous memory filled from a template, 1 MiB at a time.  Each copy
    shifts the template's random bytes by the chunk number (no two chunks alike)."""

    def __init__(self, kind: str) -> None:
        self.tpl = template(kind)
        self.maps: list[tuple[mmap.mmap, int]] = []
        self.n = 0

    def grow(self, mib: int) -> mmap.mmap:
        m = mmap.mmap(-1, mib * CHUNK, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        span = len(self.tpl) - CHUNK
        for i in range(mib):
            off = (self.n * 4096 * 7) % span
            ctypes.memmove(addr + i * CHUNK, self.tpl[off:off + CHUNK], CHUNK)
            ctypes.memmove(addr + i * CHUNK, self.n.to_bytes(8, "little"), 8)  # unique first bytes
            self.n += 1
        self.maps.append((m, addr))
        return m


def mem_available_kib() -> int:
    with open("/proc/meminfo", "rb") as f:
        for line in f:
            if line.startswith(b"MemAvailable:"):
                return int(line.split()[1])
    raise RuntimeError("no MemAvailable")


def set_adj(value: int) -> None:
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(str(value))


def ballast(left_mib: int, life_s: float) -> int:
    set_adj(1000)
    # The hard lifetime: SIGALRM's default action ends us.  Locking takes
    # 10-70 s here (first touch of RAM the VM never used is slow), then life_s.
    signal.alarm(120)
    maps = []
    locked = 0
    while True:
        room = mem_available_kib() // 1024 - left_mib
        if room < 32:
            break
        mib = min(512, room - 16) if room > 600 else min(64, room - 16)
        m = mmap.mmap(-1, mib * CHUNK, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        if _libc.mlock(addr, mib * CHUNK) != 0:
            print(f"mlock failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr, flush=True)
            return 1
        maps.append(m)
        locked += mib
    signal.alarm(int(life_s) + 1)
    print(f"ready {locked}", flush=True)
    time.sleep(life_s)
    return 0


def tab(mib: int, kind: str, pageout_pct: float, life_s: float) -> int:
    signal.alarm(int(life_s) + 1)
    f = Filler(kind)
    m = f.grow(mib)
    if pageout_pct > 0:
        addr = f.maps[0][1]
        n = int(mib * CHUNK * pageout_pct / 100) // PAGE * PAGE
        if _libc.madvise(addr, n, MADV_PAGEOUT) != 0:
            print(f"madvise failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr, flush=True)
    print("ready", flush=True)
    del m
    time.sleep(life_s)
    return 0


def leak(rate: float, max_mib: int, kind: str, life_s: float) -> int:
    signal.alarm(int(life_s) + 1)
    f = Filler(kind)
    print("ready", flush=True)
    t0 = time.monotonic()
    for have in range(1, max_mib + 1):
        f.grow(1)
        pause = t0 + have / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    time.sleep(life_s)
    return 0


def probe(out: str, anon_mib: int, file_mib: int, workdir: str, life_s: float) -> int:
    """Every 20 ms: touch 1/16 of each working set (a whole pass in 0.32 s)."""
    signal.alarm(int(life_s) + 1)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    anon = Filler("zero3").grow(anon_mib)
    path = os.path.join(workdir, "probe-file")
    with open(path, "wb") as fh:
        tpl = template("zero3")
        fh.writelines(tpl for _ in range(file_mib // 4))
        fh.flush()
        os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    fmap = mmap.mmap(fd, file_mib * CHUNK, prot=mmap.PROT_READ)
    os.close(fd)
    a_pages, f_pages = anon_mib * CHUNK // PAGE, file_mib * CHUNK // PAGE
    print("ready", flush=True)
    period, slices = 0.02, 16
    worst, worst_at, late = 0.0, 0.0, []
    t0 = due = time.monotonic()
    k = 0
    saved = t0

    def save() -> None:
        srt = sorted(late)
        res = {"max_stall_s": round(worst, 4), "max_stall_at_s": round(worst_at, 2), "iterations": len(srt),
               "p99_stall_s": round(srt[int(len(srt) * 0.99)], 4) if srt else None,
               "stalls_over_100ms": sum(1 for x in srt if x > 0.1), "t0": t0, "saved_at": time.monotonic()}
        with open(out + ".tmp", "w") as fh:
            json.dump(res, fh)
        os.replace(out + ".tmp", out)

    while not stop:
        sl = k % slices
        for p in range(sl, a_pages, slices):
            anon[p * PAGE] = (anon[p * PAGE] + 1) & 0xFF
        s = 0
        for p in range(sl, f_pages, slices):
            s += fmap[p * PAGE]
        end = time.monotonic()
        stall = end - due
        late.append(stall)
        if stall > worst:
            worst, worst_at = stall, end - t0
        k += 1
        due = max(due + period, end)  # never make up for lost time
        if end - saved >= 0.5:  # if the scene is ended by the watchdog, the last figures remain
            save()
            saved = end
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    save()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=("ballast", "tab", "leak", "probe"))
    ap.add_argument("arg")
    ap.add_argument("--life", type=float, default=60.0)
    ap.add_argument("--data", choices=("zero3", "random"), default="zero3")
    ap.add_argument("--pageout", type=float, default=0.0)
    ap.add_argument("--max", type=int, default=4096)
    ap.add_argument("--anon", type=int, default=64)
    ap.add_argument("--file", type=int, default=64)
    ap.add_argument("--workdir", default="/var/tmp")
    a = ap.parse_args()
    if a.role == "ballast":
        return ballast(int(a.arg), a.life)
    if a.role == "tab":
        return tab(int(a.arg), a.data, a.pageout, a.life)
    if a.role == "leak":
        return leak(float(a.arg), a.max, a.data, a.life)
    return probe(a.arg, a.anon, a.file, a.workdir, a.life)


if __name__ == "__main__":
    sys.exit(main())
