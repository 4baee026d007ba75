"""The emulated small desktop's scene, PID 1 of a private PID namespace.

Started by integration/desktop.py (``unshare --pid --fork --mount-proc``)
once the ballast has left the scene its budget.  Starts three idle tabs at
oom_score_adj +300 (part of each put into zram with MADV_PAGEOUT), the
interactive probe, the daemon under test (TERM/KILL levels absolute, swap
10 %/5 %), then the leak; ends when the leak is gone and the scene has
lingered, or at its timeout.  Prints one JSON result line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from integration.nsrun import exe_named, hide_system_bus, mem_available_kib, set_adj, start_daemon

PROCS = os.path.join(HERE, "desktop_procs.py")


def start(role: str, arg: str, comm: str, *extra: str, life: float = 60.0) -> subprocess.Popen[bytes]:
    argv = [sys.executable, PROCS, role, arg, "--life", str(life), *extra]
    p = subprocess.Popen(argv, executable=exe_named(comm, False), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line.startswith(b"ready"):
        raise RuntimeError(f"{role} did not start: {line!r}")
    return p


def run(spec: dict[str, Any]) -> dict[str, Any]:
    life = float(spec.get("timeout", 30)) + 20
    data = spec.get("data", "zero3")
    work = spec["workdir"]  # made (and removed) by desktop.py, which reads the probe's file if we are ended
    out: dict[str, Any] = {}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for i in range(spec.get("tabs", 3)):
            procs[f"tab{i}"] = start("tab", str(spec.get("tab_mib", 300)), f"tab{i}", "--data", data,
                                     "--pageout", str(spec.get("pageout_pct", 0)), life=life)
            set_adj(procs[f"tab{i}"].pid, 300)
        probe_out = os.path.join(work, "probe.json")
        procs["probe"] = start("probe", probe_out, "probe", "--workdir", work, life=life)
        avail0 = mem_available_kib()
        term_kib, kill_kib = spec["term_mib"] * 1024, spec["kill_mib"] * 1024
        daemon, log = start_daemon(spec, term_kib, kill_kib)
        time.sleep(spec.get("baseline_s", 1.0))
        t0 = time.monotonic()
        procs["leak"] = start("leak", str(spec.get("leak_rate", 150)), "leak", "--data", data,
                              "--max", str(spec.get("leak_max_mib", 6144)), life=life)
        deadline = t0 + spec.get("timeout", 30)
        died: dict[str, float] = {}
        leak_gone = None
        while time.monotonic() < deadline:
            now = time.monotonic()
            for name, p in procs.items():
                if name not in died and p.poll() is not None:
                    died[name] = round(now - t0, 3)
            if "leak" in died and leak_gone is None:
                leak_gone = now
            if leak_gone is not None and now - leak_gone >= spec.get("linger", 3.0):
                break
            time.sleep(0.02)
        procs["probe"].send_signal(signal.SIGTERM)
        try:
            procs["probe"].wait(10)
        except subprocess.TimeoutExpired:
            pass
        for name, p in procs.items():
            if name not in died and p.poll() is not None and name != "probe":
                died[name] = round(time.monotonic() - t0, 3)
        probe = {}
        if os.path.exists(probe_out):
            with open(probe_out) as f:
                probe = json.load(f)
            probe["max_stall_at_s"] = round(probe["max_stall_at_s"] + probe.pop("t0") - t0, 2)
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(5)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.join(2)
        for e in log.events:
            e["_t"] = round(e["_t"] - t0, 3)
        out = {"avail0_kib": avail0, "term_kib": term_kib, "kill_kib": kill_kib, "died": died,
               "returncodes": {n: p.poll() for n, p in procs.items()},
               "pids": {n: p.pid for n, p in procs.items()}, "probe": probe, "events": log.events,
               "daemon": spec.get("daemon", "pyoomd"),
               "daemon_lines": [[round(t - t0, 3), line] for t, line in zip(log.raw_t, log.raw)][-200:]}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        import shutil
        if spec.get("daemon_tmpdir"):
            shutil.rmtree(spec["daemon_tmpdir"], ignore_errors=True)
    return out


def main() -> int:
    if os.getpid() != 1:
        print("desktop_scene.py must run as PID 1 of a private PID namespace", file=sys.stderr)
        return 2
    hide_system_bus()  # low_memory_monitor must not reach the machine's bus
    result = run(json.loads(sys.argv[1]))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
