"""The flight recorder's costs (issue 16): the ring's RSS, the time it adds
to a sample and to a scan, and how long a replay of a 120 s trace takes.

    python3 integration/bench/recorder.py [--seconds 120] [--interval-ms 2]

Fills a ring (the daemon's default bound, 2 MiB) with ``--seconds`` of
samples every ``--interval-ms`` (the fastest rate the daemon samples at)
and a whole-table look at this machine's /proc every second (read only),
and reports VmRSS before and after; then records a dry-run daemon over a
fake /proc for 120 simulated seconds (MemAvailable hovering above TERM,
then falling through it) and times the replay of its trace.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from pyoomd.judge.rank import NoPolicy, score
from pyoomd.model import MemSample
from pyoomd.report import recorder
from pyoomd.sense import snapshot
from pyoomd.sense.procfs import Procfs

GIB = 1 << 20


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class _Samples:
    backend, has_psi = "python", False

    def __init__(self) -> None:
        self.i = 0

    def read(self) -> MemSample:
        self.i += 1
        return MemSample(24 * GIB, 3 * GIB + (self.i * 7919) % 50000, 0, 0, None, False)

    def close(self) -> None:
        pass


def ring_cost(seconds: float, interval_ms: float, ring_mib: float = 2.0) -> dict[str, object]:
    """RSS of a ring filled as the daemon would at its fastest."""
    t = [0.0]
    ring = recorder.Ring(seconds, int(max(ring_mib, 0.25) * (1 << 20)))
    rp: Procfs = recorder.RecordingProcfs("/proc", ring, clock=lambda: t[0])
    rs: object = recorder.RecordingSampler(_Samples(), ring, clock=lambda: t[0])
    if ring_mib == 0:  # the baseline: the same reads, nothing recorded
        rp, rs = Procfs("/proc"), _Samples()
    gc.collect()
    before = rss_kib()
    per_sample, per_look = [], []
    steps = int(seconds * 1000 / interval_ms)
    every = max(1, int(1000 / interval_ms))
    for i in range(steps):
        t[0] = i * interval_ms / 1000
        a = time.perf_counter()
        rs.read()  # type: ignore[attr-defined]
        per_sample.append(time.perf_counter() - a)
        if i % every == 0:
            a = time.perf_counter()
            snapshot.scan(rp, lambda p: score(p, NoPolicy()), 0, top_n=1, exhaustive=True)
            per_look.append(time.perf_counter() - a)
    gc.collect()
    after = rss_kib()
    bare_look = []
    plain = Procfs("/proc")
    for _ in range(20):
        a = time.perf_counter()
        snapshot.scan(plain, lambda p: score(p, NoPolicy()), 0, top_n=1, exhaustive=True)
        bare_look.append(time.perf_counter() - a)
    per_sample.sort()
    per_look.sort()
    bare_look.sort()
    return {"seconds": seconds, "interval_ms": interval_ms, "samples": steps, "looks": len(per_look),
            "processes": len(plain.pids()), "ring_bytes": ring.nbytes, "dropped_chunks": ring.dropped_chunks,
            "rss_before_kib": before, "rss_after_kib": after, "rss_cost_kib": after - before,
            "entries_kept": len(recorder.entries_of(*ring.snapshot())),
            "record_sample_us_median": round(per_sample[len(per_sample) // 2] * 1e6, 2),
            "look_ms_median_recorded": round(per_look[len(per_look) // 2] * 1e3, 2),
            "look_ms_median_bare": round(bare_look[len(bare_look) // 2] * 1e3, 2)}


def replay_time() -> dict[str, object]:
    """Record 120 simulated seconds of a dry-run daemon, replay the trace."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                    "tests"))
    from pathlib import Path

    from helpers import BASE, FakeProc, build  # type: ignore[import-not-found]

    from pyoomd.cli import replay
    from pyoomd.daemon import Daemon
    from pyoomd.daemon.launch import trace_header
    from pyoomd.settings.load import settings_from_dict
    from pyoomd.settings.plan import settings_from_plan
    from pyoomd.trace import read_trace

    tmp = Path(tempfile.mkdtemp(prefix="pyoomd-bench-rec-"))
    procs = [FakeProc(BASE + i, 300 + i, comm=f"p{i}".encode(), rss_kib=(50 + i) * 1024) for i in range(200)]
    procfs = build(tmp / "proc", procs)
    now = [1000.0]

    class S(_Samples):
        def read(self) -> MemSample:  # hover 100-300 MiB above TERM (2 GiB) for 115 s, then fall through
            t = now[0] - 1000.0
            wobble = 100 + 200 * abs(((t * 0.37) % 2) - 1)
            avail = 2 * GIB + int(wobble * 1024) if t < 115 else int(2 * GIB - (t - 115) * 50 * 1024)
            return MemSample(16 * GIB, avail, 0, 0, None, False)

    cfg = settings_from_dict({"dry_run": True, "status": {"socket": None},
                              "psi": {"enabled": False, "wakeup": {"enabled": False}},
                              "memory": {"term": "2G", "kill": "1G", "warn": "3G"},
                              "swap": {"term": "0%", "kill": "0%"},
                              "recorder": {"dir": str(tmp / "traces"), "seconds": 125}})
    ring, rp, rs = recorder.recording(procfs, S(), cfg.recorder)
    rp.clock = rs.clock = lambda: now[0]

    class Log:
        def __getattr__(self, name: str) -> object:
            return lambda event, **kw: None

    d = Daemon(cfg, rp, rs, Log(), clock=lambda: now[0], sleep=lambda s: None)
    d.killer.open_verified = lambda pid, start: os.open("/dev/null", os.O_RDONLY)  # type: ignore[method-assign]
    rec = recorder.attach(d, ring, cfg.recorder, lambda: trace_header(d, rp.root), write_on_kill=False)
    rec.clock = d.vmstat.clock = lambda: now[0]
    while now[0] < 1120.0:
        now[0] += max(d.tick(), 0.002)
    from pyoomd.trace import write_trace

    path = str(tmp / "t.trace.gz")
    info = write_trace(path, dict(trace_header(d, rp.root), reason="bench"), recorder.entries_of(*ring.snapshot()))
    t0 = time.perf_counter()
    trace = read_trace(path)
    t_read = time.perf_counter() - t0
    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        res = replay.run(trace, settings_from_plan(trace.header["settings"]), None)
        walls.append(time.perf_counter() - t0)
    return {"trace_seconds": info["seconds"], "entries": info["entries"], "trace_bytes": info["bytes"],
            "samples": sum(1 for e in trace.entries if e[0] == "s"), "read_s": round(t_read, 3),
            "replay_s": [round(w, 3) for w in walls], "ticks": res.ticks, "kills": len(res.kills)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--interval-ms", type=float, default=2.0)
    ap.add_argument("--ring-mib", type=float, default=2.0, help="the ring's bound (recorder.memory_mib)")
    ap.add_argument("--no-replay", action="store_true")
    args = ap.parse_args()
    out: dict[str, object] = {"ring": ring_cost(args.seconds, args.interval_ms, args.ring_mib)}
    if not args.no_replay:
        out["replay"] = replay_time()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
