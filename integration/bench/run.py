"""pyoomd, earlyoom and nohang side by side: one command.

    sudo python3 integration/bench/run.py [--runs 3] [--quick] [--daemons ...] [--scenarios ...]

Every scenario that can kill runs in its own private PID namespace
(nsbench.py as PID 1, via ``unshare --pid --fork --mount-proc``), inside
integration/harness.py's memory-limited safety cgroup and holding its
scenario lock, with TERM/KILL levels set relative to the MemAvailable found
inside.  Daemons alternate: each run starts with the next daemon in turn.
Hogs are bounded (at most a few GiB) and every scenario is bounded in time.

Prints a table (median and [min..max] of the runs) and writes every raw
figure to integration/bench/results/last.json.

    sudo python3 integration/bench/run.py --thrash [--runs 1]

runs the thrash scene instead: the emulated small desktop with real zram
swap (integration/desktop.py) under pyoomd, earlyoom, nohang and nohang with
psi_checking_enabled, and prints its own table (results/thrash.json).  Nothing here is a result:
every figure comes from this run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
import daemons
import micro

from integration import harness

RESULTS = os.path.join(HERE, "results", "last.json")
CSRC = os.path.join(HERE, "csrc")
GRACE_S = 3.0  # pyoomd --grace and nohang max_soft_exit_time (earlyoom has no such setting)
TERM_BELOW_MIB, KILL_BELOW_MIB = 600, 1400  # below the MemAvailable found at scenario start


def scenarios(quick: bool) -> dict[str, dict[str, Any]]:
    """The scenario specs given to nsbench.py (daemon and paths added later)."""
    # --max 2500: 1100 MiB past KILL, so that the scene still reaches TERM when something else on a
    # busy machine frees memory while it runs (CI once saw a run with --max 1500 never cross TERM).
    steady_hog = ["--rate", "256", "--max", "2500", "--start", "100", "--hold", "10"]
    base = {"kind": "kill", "term_below_mib": TERM_BELOW_MIB, "kill_below_mib": KILL_BELOW_MIB, "grace_s": GRACE_S}
    return {
        "steady": {**base, "bystanders": [32, 32], "hog": steady_hog, "timeout": 10},
        # Pre-warmed: see csrc/bhog.c.  Max 2 GiB: past KILL, bounded.
        "burst": {**base, "bystanders": [32, 32], "timeout": 8,
                  "hog": ["--rate", "0", "--max", "2048", "--start", "100", "--prewarm", "--hold", "5"]},
        # Ignores SIGTERM, then holds between TERM (600) and KILL (1400 below).
        "ignorer": {**base, "bystanders": [32], "timeout": GRACE_S + 7,
                    "hog": ["--rate", "256", "--max", "1000", "--start", "100", "--hold", str(GRACE_S + 20),
                            "--ignore-term"]},
        "crowd2k": {**base, "crowd": 2000, "hog": steady_hog, "timeout": 10},
        "crowd10k": {**base, "crowd": 10000, "hog": steady_hog, "timeout": 10},
    }


def build_tools(tmp: str) -> str:
    out = os.path.join(tmp, "bin")
    os.makedirs(out)
    if shutil.which("gcc") is None:
        raise SystemExit("gcc is needed to build the bench's C helpers")
    for name in ("bhog", "crowd", "witness", "preadbench"):
        subprocess.run(["gcc", "-O2", "-Wall", "-o", os.path.join(out, name), os.path.join(CSRC, name + ".c")],
                       check=True)
    return out


def run_ns(spec: dict[str, Any], bound_s: float) -> dict[str, Any]:
    """nsbench.py as PID 1 of a fresh PID namespace, in the safety cgroup,
    under the global scenario lock.  Bounded by bound_s."""
    with harness.scenario_slot():
        cg = harness.SafetyCgroup()
        env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        cmd = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, os.path.join(HERE, "nsbench.py"),
               json.dumps(spec)]
        try:
            r = subprocess.run(cmd, capture_output=True, timeout=bound_s, preexec_fn=cg.enter, env=env, cwd=ROOT)
        finally:
            cg.remove()
    if r.returncode != 0 or not r.stdout.strip():
        raise RuntimeError(f"scenario failed rc={r.returncode}\n{r.stdout.decode()[-2000:]}\n{r.stderr.decode()[-3000:]}")
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


# -- figures from one raw result -------------------------------------------------
_ISO = re.compile(r'"timestamp": "([^"]+)"')


def _iso_s(line: str) -> float | None:
    m = _ISO.search(line)
    if not m:
        return None
    return _dt.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()


def rank_ms(r: dict[str, Any]) -> float | None:
    """The daemon's own time from 'memory is low' to 'victim chosen'.
    pyoomd: its low_memory -> kill event timestamps (the scan is between).
    earlyoom/nohang: arrival of their 'low memory' line -> their 'sending
    signal' line (stdout, so only as fine as their output)."""
    lines = r["daemon_lines"]
    if r["daemon"] == "pyoomd":
        low = next((_iso_s(t) for _, t in lines if '"event": "low_memory"' in t), None)
        kill = next((_iso_s(t) for _, t in lines if '"event": "kill"' in t), None)
        return None if low is None or kill is None else (kill - low) * 1000
    pats = {"earlyoom": ("low memory!", "sending SIG"),
            "nohang": ("STARTING implement_corrective_action", "Sending SIG"),
            "nohang10": ("STARTING implement_corrective_action", "Sending SIG")}
    lo, send = pats[r["daemon"]]
    t_low = next((t for t, line in lines if lo.lower() in line.lower()), None)
    t_send = next((t for t, line in lines if send.lower() in line.lower() and t_low is not None and t >= t_low),
                  None)
    return None if t_low is None or t_send is None else (t_send - t_low) / 1e6


def figures(name: str, r: dict[str, Any]) -> dict[str, Any]:
    cross, death, term = r.get("cross_ns"), r.get("hog_death_ns"), r.get("hog_term_ns")
    f: dict[str, Any] = {
        "overshoot_mib": round(r["overshoot_mib"], 1),
        "latency_ms": round((death - cross) / 1e6, 1) if cross and death and not r["hog_survived"] else None,
        "to_signal_ms": round((term - cross) / 1e6, 1) if cross and term else None,
        "right_victim": (not r["hog_survived"]) and all(r["bystanders_alive"]) and r["daemon_alive_at_end"],
        "daemon_vmhwm_mib": round((r["daemon_vmhwm_kib"] or 0) / 1024, 1),
        "rank_ms": rank_ms(r),
        # How far MemAvailable fell below its start value at its lowest: a run in which it never
        # reached TERM (term_below_mib) did not test the daemon at all, whatever else it shows.
        "min_below_start_mib": round((r["avail0_kib"] - r["min_avail_kib"]) / 1024, 1),
    }
    # The overshoot, split at the witness' first sample at or below TERM:
    # how far below TERM that sample already was (MemAvailable moves in
    # batches, so the crossing sample lands some way past the line whatever
    # the daemon does) and how much lower it went after it (the daemon's part).
    w = r.get("witness", {})
    if w.get("cross_ns") and "cross_kib" in w:
        f["at_crossing_mib"] = round((r["term_kib"] - w["cross_kib"]) / 1024, 1)
        f["after_crossing_mib"] = round(max(0, w["cross_kib"] - w["min_kib"]) / 1024, 1)
        f["max_drop_mib"] = round(w["max_drop_kib"] / 1024, 1)
        f["big_drops"] = w["big_drops"]
    if name == "ignorer":
        f["term_to_kill_s"] = (round((death - term) / 1e9, 3) if term and death and not r["hog_survived"]
                               else None)
        f["killed_by"] = ("SIGKILL" if r["hog_returncode"] == -9 else
                          "survived" if r["hog_survived"] else f"rc {r['hog_returncode']}")
    if "crowd_made" in r:
        f["crowd"] = r["crowd_made"]
    return f


# -- aggregation and the table -----------------------------------------------------
def agg(values: list[Any]) -> dict[str, Any]:
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not nums:
        return {"median": None, "min": None, "max": None, "n": 0, "of": len(values)}
    return {"median": round(statistics.median(nums), 3), "min": round(min(nums), 3), "max": round(max(nums), 3),
            "n": len(nums), "of": len(values)}


def fmt(a: dict[str, Any], unit: str = "", nd: int = 1) -> str:
    if a["median"] is None:
        return "never" if a["of"] else "-"
    s = f"{a['median']:.{nd}f}{unit} [{a['min']:.{nd}f}..{a['max']:.{nd}f}]"
    if a["n"] < a["of"]:
        s += f" ({a['of'] - a['n']}/{a['of']} none)"
    return s


def table(summary: dict[str, Any], daemon_names: list[str]) -> str:
    rows: list[tuple[str, Callable[[str], str]]] = []
    sc = summary["scenarios"]

    def cell(scn: str, key: str, unit: str = "", nd: int = 1) -> Callable[[str], str]:
        # A figure no run had (the witness never saw the crossing, so no split of the overshoot): "-".
        return lambda d: fmt(sc[scn][d][key], unit, nd) if key in sc.get(scn, {}).get(d, {}) else "-"

    def victims(scn: str) -> Callable[[str], str]:
        def f(d: str) -> str:
            if scn not in sc or d not in sc[scn]:
                return "-"
            v = sc[scn][d]["right_victim"]
            return f"{v['yes']}/{v['of']}"
        return f

    for scn in ("steady", "burst", "crowd2k", "crowd10k"):
        if scn in sc:
            rows.append((f"{scn} overshoot MiB", cell(scn, "overshoot_mib")))
            if scn == "steady":
                rows.append(("  of which: below TERM at the crossing sample", cell(scn, "at_crossing_mib")))
                rows.append(("  of which: further drop after it", cell(scn, "after_crossing_mib")))
                rows.append(("  largest 1-ms drop before the crossing MiB", cell(scn, "max_drop_mib")))
            rows.append((f"{scn} latency ms (crossing->death)", cell(scn, "latency_ms")))
            rows.append((f"{scn} right victim", victims(scn)))
    for scn in ("crowd2k", "crowd10k"):
        if scn in sc:
            rows.append((f"{scn} crossing->SIGTERM ms", cell(scn, "to_signal_ms")))
            rows.append((f"{scn} time to rank ms (own log)", cell(scn, "rank_ms")))
    if "ignorer" in sc:
        rows.append((f"ignorer SIGTERM->SIGKILL s (grace {GRACE_S:g}s)", cell("ignorer", "term_to_kill_s", "", 2)))
        rows.append(("ignorer right victim", victims("ignorer")))
    if "idle" in sc:
        rows.append((f"idle CPU % (stat, {summary['idle_s']:g} s)", cell("idle", "cpu_pct_stat", "", 3)))
        rows.append(("idle CPU % (schedstat ns)", cell("idle", "cpu_pct_schedstat", "", 3)))
        rows.append(("peak RSS MiB (VmHWM, idle)", cell("idle", "vmhwm_mib", "", 1)))
    names = [d for d in daemon_names]
    w0 = max(len(r[0]) for r in rows) if rows else 10
    cols = [[r[1](d) for r in rows] for d in names]
    ws = [max(len(d), *(len(c) for c in col)) if col else len(d) for d, col in zip(names, cols)]
    out = ["| " + "figure".ljust(w0) + " | " + " | ".join(d.ljust(w) for d, w in zip(names, ws)) + " |",
           "|" + "-" * (w0 + 2) + "|" + "|".join("-" * (w + 2) for w in ws) + "|"]
    for i, (label, _) in enumerate(rows):
        out.append("| " + label.ljust(w0) + " | " + " | ".join(col[i].ljust(w) for col, w in zip(cols, ws)) + " |")
    return "\n".join(out)


def micro_table(m: dict[str, Any]) -> str:
    out = ["| micro-benchmark | median [min..max] |", "|---|---|"]
    for key, label, unit in (("sample_cffi_us", "one sample, cffi reader", "us"),
                             ("sample_python_us", "one sample, pure-Python reader", "us"),
                             ("sample_bare_pread_us", "bare C pread of the same files (floor)", "us"),
                             ("rank_1k_ms", "rank 1,000 processes (fake /proc)", "ms"),
                             ("rank_10k_ms", "rank 10,000 processes (fake /proc)", "ms"),
                             ("burst_rate_mib_s", "burst hog rate, pre-warmed", "MiB/s"),
                             ("burst_rate_cold_mib_s", "burst hog rate, cold (not pre-warmed)", "MiB/s")):
        if key in m:
            out.append(f"| {label} | {fmt(m[key], ' ' + unit, 2)} |")
    if "sample_cffi_us" in m and "sample_bare_pread_us" in m:
        if "cffi_over_pread_paired" in m:  # round by round in turn, the median of the ratios
            out.append(f"| cffi / bare pread (paired rounds) | {fmt(m['cffi_over_pread_paired'], 'x', 2)} |")
        else:
            out.append(f"| cffi / bare pread | {m['sample_cffi_us']['median'] / m['sample_bare_pread_us']['median']:.2f}x |")
    return "\n".join(out)


def machine() -> dict[str, Any]:
    with open("/proc/meminfo") as f:
        mi = {line.split(":")[0]: int(line.split()[1]) for line in f}
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu": cpu, "mem_total_gib": round(mi["MemTotal"] / 1048576, 1),
            "swap_total_gib": round(mi.get("SwapTotal", 0) / 1048576, 1), "kernel": platform.release(),
            "python": platform.python_version()}


THRASH_DAEMONS = ("pyoomd", "earlyoom", "nohang", "nohang_psi")
THRASH_SCENES = {
    "seeded ~3:1": {"data": "zero3", "pageout_pct": 50},
    "incompressible": {"data": "random", "pageout_pct": 50},
}


def thrash_main(runs: int, out: str) -> int:
    """The thrash scene for each daemon; one ballast for all (see desktop.run_many)."""
    from integration import desktop

    daemons.ensure_installed()
    daemons.stop_services()
    specs, keys = [], []
    for run in range(runs):
        for scene, over in THRASH_SCENES.items():
            for d in THRASH_DAEMONS:
                specs.append({**over, "daemon": d})
                keys.append((scene, d, run))
    results = desktop.run_many(specs)
    rows: list[str] = []
    reasons: list[str] = []
    for (scene, d, run), r in zip(keys, results):
        if r.get("skipped"):
            rows.append(f"| {scene} | {d} | skipped: {r['skipped']} | | | | |")
            continue
        kills = [e for e in r.get("events", []) if e.get("event") == "kill"]
        died = r.get("died", {})
        dog = r.get("watchdog") or []
        what = ", ".join(f"{n} at {t:.1f}s" for n, t in sorted(died.items(), key=lambda x: x[1])) or "no kill"
        if dog:
            what = f"no kill: watchdog ended it ({dog[0]['why']})"
        p = r.get("probe", {})
        rows.append(f"| {scene} | {d} | {what} | {p.get('max_stall_s', '?')} s | {p.get('p99_stall_s', '?')} s "
                    f"| {p.get('stalls_over_100ms', '?')} | {r.get('kernel_oom_kills', '?')} |")
        if kills and d == "pyoomd":
            reasons.append(f"{scene}: {kills[0].get('reason', '')}")
    text = ("| scene | daemon | killed (s after the leak started) | probe max stall | probe p99 | stalls > 100 ms "
            "| kernel OOM kills |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    text += "".join(f"\n\npyoomd's reason, {r}" for r in reasons)
    print(text)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"table": text, "results": results, "keys": keys}, f, indent=1, default=str)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="short idle window (10 s), fewer micro rounds")
    ap.add_argument("--daemons", nargs="+", default=["pyoomd", "earlyoom", "nohang"], choices=daemons.DAEMONS)
    ap.add_argument("--scenarios", nargs="+", default=["steady", "burst", "ignorer", "crowd2k", "crowd10k", "idle"])
    ap.add_argument("--no-micro", action="store_true")
    ap.add_argument("--idle-s", type=float)
    ap.add_argument("--out", default=RESULTS)
    ap.add_argument("--pyoomd-from", choices=("install", "source"), default="install",
                    help="install: pip install the repo into a fresh venv and run that, as deployed (default); "
                         "source: run the repo's source with this interpreter (faster to start)")
    ap.add_argument("--thrash", action="store_true", help="the thrash scene only (integration/desktop.py)")
    args = ap.parse_args(argv)
    if args.thrash:
        return thrash_main(args.runs, os.path.join(HERE, "results", "thrash.json"))
    why = harness.why_not_runnable()
    if why:
        print(f"bench: cannot run: {why}", file=sys.stderr)
        return 77
    others = [d for d in args.daemons if d != "pyoomd"]
    vers = daemons.ensure_installed() if others else daemons.versions()
    daemons.stop_services()
    idle_s = args.idle_s or (10.0 if args.quick else 60.0)
    t_start = time.time()
    tmp = tempfile.mkdtemp(prefix="pyoomd-bench-")
    os.chmod(tmp, 0o755)
    try:
        bindir = build_tools(tmp)
        nohang_copy = daemons.make_relaxed_nohang(tmp) if any(d.startswith("nohang") for d in args.daemons) else ""
        pyoomd_python = (daemons.install_pyoomd(tmp) if "pyoomd" in args.daemons and args.pyoomd_from == "install"
                         else None)
        specs = scenarios(args.quick)
        raw: dict[str, dict[str, list[Any]]] = {}
        names = list(args.daemons)
        for run in range(args.runs):
            order = names[run % len(names):] + names[: run % len(names)]  # alternate who goes first
            for scn in args.scenarios:
                if scn == "idle":
                    spec = {"kind": "idle", "daemons": order, "pct": [10, 5], "idle_s": idle_s, "grace_s": GRACE_S,
                            "bin": bindir, "tmpdir": tmp, "nohang_copy": nohang_copy, "pyoomd_python": pyoomd_python}
                    r = run_ns(spec, idle_s + 60)
                    for d, v in r["daemons"].items():
                        raw.setdefault("idle", {}).setdefault(d, []).append(
                            {**v, "vmhwm_mib": round((v["vmhwm_kib"] or 0) / 1024, 1)})
                    print(f"run {run + 1} idle: " + ", ".join(
                        f"{d} {v['cpu_pct_schedstat']:.3f}% {(v['vmhwm_kib'] or 0) / 1024:.1f}MiB alive={v['alive']}"
                        for d, v in r["daemons"].items()),
                        flush=True)
                    continue
                for d in order:
                    spec = {**specs[scn], "daemon": d, "bin": bindir, "tmpdir": tmp, "nohang_copy": nohang_copy,
                            "pyoomd_python": pyoomd_python}
                    r = run_ns(spec, specs[scn]["timeout"] + 60)
                    f = figures(scn, r)
                    raw.setdefault(scn, {}).setdefault(d, []).append({"figures": f, "raw": r})
                    print(f"run {run + 1} {scn} {d}: " + ", ".join(f"{k}={v}" for k, v in f.items()), flush=True)
        summary: dict[str, Any] = {"scenarios": {}, "idle_s": idle_s}
        for scn, by_d in raw.items():
            for d, runs in by_d.items():
                if scn == "idle":
                    s = {k: agg([x[k] for x in runs]) for k in ("cpu_pct_stat", "cpu_pct_schedstat", "vmhwm_mib")}
                else:
                    keys = {k for x in runs for k in x["figures"]}
                    s = {k: agg([x["figures"].get(k) for x in runs]) for k in keys if k not in ("right_victim", "killed_by")}
                    s["right_victim"] = {"yes": sum(bool(x["figures"]["right_victim"]) for x in runs), "of": len(runs)}
                    if scn == "ignorer":
                        s["killed_by"] = [x["figures"]["killed_by"] for x in runs]
                summary["scenarios"].setdefault(scn, {})[d] = s
        m = {} if args.no_micro else micro.run_all(bindir, quick=args.quick)
        summary["micro"] = m
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "versions": {**vers, "pyoomd": _pyoomd_version()}, "runs": args.runs,
            "command": "sudo python3 integration/bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "duration_s": round(time.time() - t_start), "grace_s": GRACE_S,
            "levels": f"TERM = MemAvailable at start - {TERM_BELOW_MIB} MiB, KILL = - {KILL_BELOW_MIB} MiB; "
                      "idle: 10 %/5 % of MemTotal",
            "pyoomd_from": ("a fresh venv, pip install of the repo (not editable)" if pyoomd_python
                            else f"the repo's source run by {sys.executable}"),
            "nohang_comparable_by": "a locally relaxed copy of /usr/sbin/nohang generated at run time in a temp dir "
                                    f"({daemons.NOHANG_50_PCT!r} -> {daemons.NOHANG_RELAXED!r}), never committed"}
    text = table(summary, args.daemons)
    if summary.get("micro"):
        text += "\n\n" + micro_table(summary["micro"])
    print()
    print(f"{meta['date']}; {meta['machine']['cpus']} CPUs ({meta['machine']['cpu']}), "
          f"{meta['machine']['mem_total_gib']} GiB, swap {meta['machine']['swap_total_gib']} GiB, "
          f"kernel {meta['machine']['kernel']}; {meta['versions']}; {args.runs} runs")
    print(f"pyoomd run from: {meta['pyoomd_from']}")
    print(f"nohang made comparable by: {meta['nohang_comparable_by']}")
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "summary": summary, "table": text, "raw": raw}, f, indent=1)
    print(f"\nwrote {args.out}")
    return 0


def _pyoomd_version() -> str:
    try:
        from pyoomd import __version__
        r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        return f"{__version__} ({r.stdout.strip() or '?'})"
    except (ImportError, OSError, subprocess.SubprocessError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
