"""Micro-benchmarks: one sample (cffi reader, pure-Python reader, bare C
pread of the same files: the floor set by the kernel), ranking cost at 1k and
10k processes (a fake /proc tree in tmp, and the real /proc of a private PID
namespace holding a crowd of idle processes), and the burst hog's rate."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

PF_NORMAL = 0x00400000


def _agg(xs: list[float]) -> dict[str, Any]:
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3),
            "n": len(xs), "of": len(xs)}


def per_call_us(fn: Callable[[], object], number: int, rounds: int) -> dict[str, Any]:
    fn()
    t = timeit.Timer(fn)
    return _agg([x / number * 1e6 for x in t.repeat(rounds, number)])


def sample_costs(bindir: str, quick: bool) -> dict[str, Any]:
    from pyoomd.sense.procfs import Procfs
    from pyoomd.sense.sample import Sampler

    number, rounds = (5000, 5) if quick else (20000, 9)
    out = {}
    s = Sampler(Procfs(), "python")
    out["sample_python_us"] = per_call_us(s.read, number, rounds)
    s.close()
    # The cffi reader and the bare C pread, round by round in turn: this VM's
    # speed drifts within a run (other tenants), and a ratio of two medians
    # taken minutes apart measured the drift as much as the reader (one run
    # saw the floor itself go from 6.3 to 9.2 us).  Each round's pair gives
    # a ratio; the figure is their median.
    s = Sampler(Procfs(), "cffi")
    timer = timeit.Timer(s.read)
    s.read()
    cffi_us, bare_us, ratios = [], [], []
    for _ in range(rounds):
        cffi_us.append(timer.timeit(number) / number * 1e6)
        r = subprocess.run([os.path.join(bindir, "preadbench"), str(number), "1"], capture_output=True,
                           text=True, check=True)
        bare_us.append(json.loads(r.stdout)["median_ns"] / 1000)
        ratios.append(cffi_us[-1] / bare_us[-1])
    s.close()
    out["sample_cffi_us"] = _agg(cffi_us)
    out["sample_bare_pread_us"] = _agg(bare_us)
    out["cffi_over_pread_paired"] = _agg(ratios)
    return out


def build_fake_proc(root: str, n: int) -> None:
    """n processes, oom_score spread out, one big one; the files pyoomd reads."""
    os.makedirs(root)
    with open(os.path.join(root, "meminfo"), "w") as f:
        f.write("MemTotal: 16000000 kB\nMemAvailable: 8000000 kB\n")
    base = 5_000_000  # above any real pid_max: never ours
    for i in range(n):
        pid = base + i
        d = os.path.join(root, str(pid))
        os.mkdir(d)
        score = 900 if i == n // 2 else i % 200
        rss_pages = 100 + i % 50
        files = {
            "stat": f"{pid} (proc{i}) S 1 {pid} {pid} 0 -1 {PF_NORMAL} 120 0 0 0 3 2 0 0 20 0 1 0 {1000 + i} "
                    f"4096000 {rss_pages} 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
            "status": f"Name:\tproc{i}\nState:\tS (sleeping)\nTgid:\t{pid}\nPid:\t{pid}\nPPid:\t1\n"
                      f"Uid:\t1000\t1000\t1000\t1000\nVmRSS:\t{rss_pages * 4:>10} kB\nVmSwap:\t       0 kB\nThreads:\t1\n",
            "oom_score": f"{score}\n", "oom_score_adj": "0\n", "cmdline": f"/usr/bin/proc{i}\0",
            "cgroup": "0::/user.slice/app.scope\n",
        }
        for name, data in files.items():
            with open(os.path.join(d, name), "w") as f:
                f.write(data)
        os.symlink("/usr/bin/proc", os.path.join(d, "exe"))


def rank_once_ms(proc_root: str) -> Callable[[], float]:
    from pyoomd.judge.rank import NoPolicy, order, score
    from pyoomd.sense import snapshot
    from pyoomd.sense.procfs import Procfs

    procfs = Procfs(proc_root)
    policy = NoPolicy()

    def once() -> float:
        t = time.perf_counter()
        table = snapshot.scan(procfs, lambda p: score(p, policy), policy.max_bonus, 5)
        order(table.candidates)
        return (time.perf_counter() - t) * 1000
    return once


def rank_costs(quick: bool) -> dict[str, Any]:
    out = {}
    tmp = tempfile.mkdtemp(prefix="pyoomd-bench-proc-")
    try:
        for n, key in ((1000, "rank_1k_ms"), (10000, "rank_10k_ms")):
            root = os.path.join(tmp, f"proc{n}")
            build_fake_proc(root, n)
            once = rank_once_ms(root)
            once()
            out[key] = _agg([once() for _ in range(5 if quick else 15)])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def burst_rate(bindir: str) -> dict[str, Any]:
    """The burst hog's own rate, 1 GiB, pre-warmed and cold (bounded; no killer)."""
    out: dict[str, Any] = {}
    for key, extra in (("burst_rate_mib_s", ["--prewarm"]), ("burst_rate_cold_mib_s", [])):
        rates = []
        for _ in range(3):
            p = subprocess.Popen([os.path.join(bindir, "bhog"), "--rate", "0", "--max", "1024", "--hold", "0",
                                  "--wait-go", *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert p.stdout is not None and p.stdin is not None
            p.stdout.readline()
            t = time.monotonic()
            p.stdin.write(b"g")
            p.stdin.flush()
            p.wait(30)
            rates.append(1024 / (time.monotonic() - t))
        out[key] = _agg(rates)
    return out


def run_all(bindir: str, quick: bool = False, crowd_rank: Callable[[int], dict[str, Any]] | None = None
            ) -> dict[str, Any]:
    out = sample_costs(bindir, quick)
    out.update(rank_costs(quick))
    out.update(burst_rate(bindir))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python3 integration/bench/micro.py [--quick] [--only sample|rank|burst]``:
    builds the C helpers it needs in a temp dir and prints the figures as JSON
    (with ``cffi_over_pread``, the cffi reader's cost over the bare pread floor)."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--only", choices=("sample", "rank", "burst"), help="one group of figures")
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="pyoomd-micro-")
    try:
        tools = {"sample": ["preadbench"], "burst": ["bhog"], "rank": []}
        need = tools[args.only] if args.only else ["preadbench", "bhog"]
        for name in need:
            subprocess.run(["gcc", "-O2", "-Wall", "-o", os.path.join(tmp, name),
                            os.path.join(HERE, "csrc", name + ".c")], check=True)
        if args.only == "sample":
            out = sample_costs(tmp, args.quick)
        elif args.only == "rank":
            out = rank_costs(args.quick)
        elif args.only == "burst":
            out = burst_rate(tmp)
        else:
            out = run_all(tmp, args.quick)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if "sample_cffi_us" in out:
        out["cffi_over_pread"] = out["cffi_over_pread_paired"]["median"]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
