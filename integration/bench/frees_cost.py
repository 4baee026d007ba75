"""What frees_kib (sense/facts.py, Daemon._prefetch_frees) costs the loop, in-process.

    python integration/bench/frees_cost.py [--rounds 8] [--crowd 10000]

Starts a 700 MiB hog (csrc/bhog.c, not growing) and a crowd of idle
processes (csrc/crowd.c), builds a dry-run Daemon on the real /proc (no
signal is ever sent: dry run, and the thresholds are judged on a fake
sampler), and for each round: one look of the growth follower at WARN
(the prefetch after it), 0.5 s, then one TERM tick (the warm scan and the
dry-run kill event).  Prints medians.  Run it with PYTHONPATH set to another
tree to compare (a tree without frees_kib prints only what it has).
Only its own children are stopped, by their Popen handles.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


class _Log:
    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


class _Sampler:
    """MemAvailable at WARN (8 of 24 GiB) or below TERM (1 GiB)."""

    backend = "python"

    def __init__(self) -> None:
        self.low = False

    def read(self) -> Any:
        from pyoomd.model import MemSample

        return MemSample(24 << 20, (1 << 20) if self.low else (8 << 20), 0, 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--crowd", type=int, default=10000)
    args = ap.parse_args()
    if shutil.which("gcc") is None:
        raise SystemExit("gcc is needed to build csrc/bhog.c and csrc/crowd.c")
    from pyoomd.daemon import Daemon
    from pyoomd.model import Level
    from pyoomd.sense.procfs import Procfs
    from pyoomd.settings.load import load_config

    tmp = tempfile.mkdtemp(prefix="pyoomd-frees-cost-")
    for name in ("bhog", "crowd"):
        subprocess.run(["gcc", "-O2", "-o", os.path.join(tmp, name), os.path.join(HERE, "csrc", name + ".c")],
                       check=True)
    hog = subprocess.Popen([os.path.join(tmp, "bhog"), "--rate", "0", "--max", "700", "--start", "700",
                            "--hold", "600"], stdout=subprocess.PIPE)
    crowd = subprocess.Popen([os.path.join(tmp, "crowd"), str(args.crowd)], stdout=subprocess.PIPE)
    try:
        assert hog.stdout is not None and crowd.stdout is not None
        hog.stdout.readline()
        crowd.stdout.readline()
        sampler: Any = _Sampler()  # read() is all the daemon uses of a sampler here
        settings = load_config(None, {"dry_run": True, "memory": {"term": "10%", "kill": "5%", "warn": "50%"}})
        d = Daemon(settings, Procfs(), sampler, _Log())
        has_frees = hasattr(d, "frees")
        looks: list[float] = []
        prefetch: list[float] = []
        ticks: list[float] = []
        if has_frees:
            orig = d._prefetch_frees

            def timed() -> None:
                t = time.perf_counter()
                orig()
                prefetch.append((time.perf_counter() - t) * 1000)

            d._prefetch_frees = timed  # type: ignore[method-assign]
        for _ in range(args.rounds):
            sampler.low = False
            d.state.level = Level.OK
            d._followed_at = -1e9
            t = time.perf_counter()
            d._follow_growth(Level.WARN, d.clock(), sampler.read())
            looks.append((time.perf_counter() - t) * 1000)
            time.sleep(0.5)
            sampler.low = True
            t = time.perf_counter()
            d.tick()
            ticks.append((time.perf_counter() - t) * 1000)
            d.state.episode.active = False

        def med(xs: list[float]) -> str:
            return f"{statistics.median(xs):.1f} [{min(xs):.1f}..{max(xs):.1f}]"

        print(f"{args.crowd} idle processes + a 700 MiB hog, {args.rounds} rounds, median [min..max]")
        print(f"look at WARN ms (prefetch included)     {med(looks)}")
        print(f"TERM tick ms (warm scan, dry-run kill)  {med(ticks)}")
        if has_frees:
            print(f"prefetch after a look ms               {med(prefetch)}")
            from pyoomd.sense import snapshot

            hog_info = snapshot.read_proc(d.procfs, hog.pid)
            if hog_info is not None:
                us = []
                for _ in range(2000):
                    t = time.perf_counter()
                    d._frees_fields(hog_info)
                    us.append((time.perf_counter() - t) * 1e6)
                print(f"_frees_fields us (2000 calls)           {statistics.median(us):.2f} median, "
                      f"p99 {sorted(us)[int(len(us) * 0.99)]:.2f}")
                r = d.frees.reading(hog_info.identity)
                print(f"the hog's read: frees_kib {r.facts.frees_kib if r else None}, "
                      f"{r.ms if r else None} ms in the reader's thread")
            d.frees.close()
    finally:
        for p in (crowd, hog):
            p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
