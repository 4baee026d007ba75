"""One benchmark scenario, run as PID 1 of a private PID namespace.

Started by run.py through ``unshare --pid --fork --mount-proc python
nsbench.py SPEC_JSON`` inside a memory-limited cgroup (integration/harness.py's
SafetyCgroup), holding harness's scenario lock.  /proc shows only what this
process starts, so whatever a daemon kills, it kills in here; when this process
exits the kernel kills everything left in the namespace.

kind "kill": crowd (optional), bystanders, hog (allocated, "ready", waiting
for "go"), then MemAvailable is read and the TERM/KILL levels are set
relative to it, then the daemon, the C witness (MemAvailable every 1 ms),
then "go".  Every time is CLOCK_MONOTONIC (time.monotonic_ns, the same clock
in every process): the witness' first sample at or below TERM (crossing),
the hog's SIGTERM arrival (its handler's clock), its death (pidfd readable),
the daemon's log lines as they arrive.

kind "idle": the daemons side by side, default-like percentage levels, no
pressure; CPU from /proc/PID/stat utime+stime (and schedstat's ns for
resolution) over the window, peak RSS = VmHWM.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import daemons

from integration.nsrun import hide_system_bus, mem_available_kib  # run_ns puts the repo root on PYTHONPATH

CLK_TCK = os.sysconf("SC_CLK_TCK")


class Lines(threading.Thread):
    """Collects a process's output lines with their arrival time (ns)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[tuple[int, str]] = []
        self.cond = threading.Condition()

    def run(self) -> None:
        for raw in self.stream:
            with self.cond:
                self.lines.append((time.monotonic_ns(), raw.decode(errors="replace").rstrip("\n")))
                self.cond.notify_all()

    def wait_for(self, needle: str, timeout: float) -> tuple[int, str] | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for item in self.lines:
                    if needle in item[1]:
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)


class DeathWatch(threading.Thread):
    """The moment a process exits: its pidfd polls readable."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.fd = os.pidfd_open(pid)
        self.death_ns: int | None = None

    def run(self) -> None:
        p = select.poll()
        p.register(self.fd, select.POLLIN)
        while not p.poll(1000):
            pass
        self.death_ns = time.monotonic_ns()


def start_daemon(name: str, spec: dict[str, Any], term_kib: int, kill_kib: int,
                 pct: tuple[float, float] | None = None) -> tuple[subprocess.Popen[bytes], Lines]:
    argv, extra = daemons.command(name, term_kib, kill_kib, spec["grace_s"], spec["tmpdir"], spec["nohang_copy"],
                                  pct, spec.get("pyoomd_python"))
    env = {k: v for k, v in {**os.environ, **extra}.items() if v is not None}
    d = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=env)
    lines = Lines(d.stdout)
    lines.start()
    if lines.wait_for(daemons.READY[name], 20) is None:
        d.kill()
        raise RuntimeError(f"{name} did not start: " + "\n".join(t for _, t in lines.lines[-20:]))
    return d, lines


def stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def proc_cpu(pid: int) -> tuple[float, float]:
    """(utime+stime seconds from stat, on-CPU seconds from schedstat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    with open(f"/proc/{pid}/schedstat") as f:
        ns = int(f.read().split()[0])
    return ticks / CLK_TCK, ns / 1e9


def vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def bhog(spec: dict[str, Any], args: list[str]) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([os.path.join(spec["bin"], "bhog"), *args], stdout=subprocess.PIPE,
                         stdin=subprocess.PIPE)
    assert p.stdout is not None
    if p.stdout.readline().strip() != b"ready":
        raise RuntimeError("hog did not start")
    return p


def run_kill(spec: dict[str, Any]) -> dict[str, Any]:
    res: dict[str, Any] = {"daemon": spec["daemon"]}
    crowd = None
    if spec.get("crowd"):
        t = time.monotonic()
        crowd = subprocess.Popen([os.path.join(spec["bin"], "crowd"), str(spec["crowd"])], stdout=subprocess.PIPE)
        assert crowd.stdout is not None
        res["crowd_made"] = int(crowd.stdout.readline().split()[1])
        res["crowd_spawn_s"] = round(time.monotonic() - t, 3)
    bystanders = [bhog(spec, ["--rate", "0", "--max", str(m), "--start", str(m), "--hold", "600"])
                  for m in spec.get("bystanders", [])]
    hog = bhog(spec, [*spec["hog"], "--wait-go"])
    hog_out = Lines(hog.stdout)
    hog_out.start()
    time.sleep(0.2)  # let the crowd and the hog's start allocation settle
    avail0 = mem_available_kib()
    term_kib = avail0 - spec["term_below_mib"] * 1024
    kill_kib = avail0 - spec["kill_below_mib"] * 1024
    res.update(avail0_kib=avail0, term_kib=term_kib, kill_kib=kill_kib)
    daemon, dlines = start_daemon(spec["daemon"], spec, term_kib, kill_kib)
    witness = subprocess.Popen([os.path.join(spec["bin"], "witness"), "--term-kib", str(term_kib),
                                "--period-us", str(spec.get("witness_us", 1000))], stdout=subprocess.PIPE)
    assert witness.stdout is not None
    witness.stdout.readline()
    death = DeathWatch(hog.pid)
    death.start()
    time.sleep(0.3)
    go_ns = time.monotonic_ns()
    assert hog.stdin is not None
    hog.stdin.write(b"g")
    hog.stdin.flush()
    deadline = time.monotonic() + spec["timeout"]
    while time.monotonic() < deadline and hog.poll() is None:
        time.sleep(0.01)
    time.sleep(spec.get("linger", 0.3))
    witness.send_signal(signal.SIGTERM)
    w = json.loads(witness.communicate(timeout=5)[0].decode().strip().splitlines()[-1])
    hwm = vm_hwm_kib(daemon.pid)
    daemon_alive = daemon.poll() is None
    stop(daemon)
    dlines.join(2)
    hog_rc = hog.poll()
    if hog_rc is None:
        hog.kill()
        hog.wait()
    hog_out.join(2)
    term_ns = next((int(t.split()[1]) for _, t in hog_out.lines if t.startswith("term ")), None)
    res.update(
        go_ns=go_ns, witness=w, min_avail_kib=w["min_kib"],
        overshoot_mib=max(0, term_kib - w["min_kib"]) / 1024,
        cross_ns=w["cross_ns"] or None, hog_term_ns=term_ns, hog_death_ns=death.death_ns,
        hog_returncode=hog_rc, hog_survived=hog_rc is None,
        bystanders_alive=[b.poll() is None for b in bystanders],
        daemon_vmhwm_kib=hwm, daemon_alive_at_end=daemon_alive,
        daemon_lines=[[t, line] for t, line in dlines.lines[-400:]],
    )
    for b in bystanders:
        stop(b)
    if crowd is not None:
        crowd.kill()
    return res


def run_idle(spec: dict[str, Any]) -> dict[str, Any]:
    pct = (spec["pct"][0], spec["pct"][1])
    started = [(name, *start_daemon(name, spec, 0, 0, pct)) for name in spec["daemons"]]
    time.sleep(spec.get("settle_s", 2.0))  # start-up is not idle
    before = {name: proc_cpu(d.pid) for name, d, _ in started}
    t0 = time.monotonic()
    time.sleep(spec["idle_s"])
    wall = time.monotonic() - t0
    out = {}
    for name, d, lines in started:
        after = proc_cpu(d.pid)
        out[name] = {
            "cpu_pct_stat": 100 * (after[0] - before[name][0]) / wall,
            "cpu_pct_schedstat": 100 * (after[1] - before[name][1]) / wall,
            "vmhwm_kib": vm_hwm_kib(d.pid), "alive": d.poll() is None,
            "tail": [line for _, line in lines.lines[-8:]],
        }
    for _, d, _ in started:
        stop(d)
    return {"wall_s": wall, "daemons": out}


def main() -> int:
    if os.getpid() != 1:
        print("nsbench.py must run as PID 1 of a private PID namespace", file=sys.stderr)
        return 2
    hide_system_bus()  # low_memory_monitor must not reach the machine's bus
    spec = json.loads(sys.argv[1])
    res = run_idle(spec) if spec["kind"] == "idle" else run_kill(spec)
    sys.stdout.write(json.dumps(res) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
