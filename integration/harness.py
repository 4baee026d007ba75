"""Runs nsrun.py scenarios in a private PID namespace inside a memory-limited
v1 cgroup created below our own (a safety net: whatever goes wrong, the
scenario cannot take more than LIMIT of the machine)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

from integration.nsrun import mem_available_kib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Scenarios use at most ~3 GiB of hogs; 6 GiB leaves room for the daemon,
# Python interpreters and page cache, and is a quarter of this 24 GiB machine.
SAFETY_LIMIT_BYTES = 6 << 30
V1_MEMORY = "/sys/fs/cgroup/memory"
# Scenarios set thresholds relative to MemAvailable: two at once (parallel
# test runs, a benchmark beside a test) would trip each other's daemons.
# Every scenario holds this lock while it runs.
SCENARIO_LOCK = "/tmp/pyoomd-scenario.lock"
# Memory counts as settled when MemAvailable moves by at most 6 MiB in 1 s.
# Measured here (a Firecracker VM): after a scenario frees ~2 GiB, MemFree
# keeps coming back for several seconds in 1-second steps of 8-16 MiB (the
# balloon's free page reporting holds freed pages while it reports them), and
# the baseline of back-to-back scenarios differed by up to 500 MiB.
# Memory that a dead process freed comes back late on this VM: its free page
# reporting (/sys/module/page_reporting/parameters/max_waiting_mib = 1024
# here) holds up to that much of what was freed off the free lists and
# returns it over minutes (measured: 2 GiB freed, 778 MiB back at once, the
# rest at 5-12 MiB/s; bursts within a scene).  So MemAvailable can rise by up
# to this much during a scene, and a victim's death can return this much
# less than it held: scenes keep margins larger than this on the side a
# rise would spoil (TERM to be crossed; memory back above TERM after a kill).
# The pages it holds also serve the next allocation before MemAvailable
# moves (a scene's first 2.2 GiB once, with the harness's second run beside
# it): scenario_slot drains them before each scene (integration/primer.py).
LATE_FREE_MIB = 1024
# How far past TERM a scene's hogs go when the scene needs TERM crossed (and
# how far past the hogs' maximum KILL is put when it must stay out of reach,
# less LATE_FREE_MIB: a rise only delays a crossing).  Write sizes as
# ``TERM_BELOW + MARGIN_MIB``, so the margin is visible in the scene.
MARGIN_MIB = LATE_FREE_MIB + 676  # 1700: late-freed memory + the drift seen between scenes
SETTLE_STEP_S = 1.0
SETTLE_KIB = 6 * 1024
SETTLE_TIMEOUT_S = 12.0


def why_not_runnable() -> str | None:
    """None if scenarios can run here, else the reason to skip."""
    if os.geteuid() != 0:
        return "integration scenarios need root (unshare --pid, bind mounts)"
    if not os.path.exists("/usr/bin/unshare") and not _which("unshare"):
        return "unshare(1) is not installed"
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    if r.returncode != 0:
        return f"cannot create a PID namespace: {r.stderr.decode().strip()}"
    return None


def _which(name: str) -> str | None:
    for d in os.environ.get("PATH", "").split(":"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


def own_v1_memory_cgroup() -> str | None:
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "memory" in controllers.split(","):
                return path
    return None


class SafetyCgroup:
    """A child v1 memory cgroup of ours with a hard limit; removed on exit."""

    def __init__(self, limit_bytes: int = SAFETY_LIMIT_BYTES) -> None:
        self.path: str | None = None
        own = own_v1_memory_cgroup()
        if own is None or not os.path.isdir(V1_MEMORY):
            return
        path = os.path.join(V1_MEMORY, own.lstrip("/"), f"pyoomd-it-{uuid.uuid4().hex[:8]}")
        try:
            os.mkdir(path)
            with open(os.path.join(path, "memory.limit_in_bytes"), "w") as f:
                f.write(str(limit_bytes))
            self.path = path
        except OSError:
            if os.path.isdir(path):
                os.rmdir(path)

    def enter(self) -> None:
        """Called in the child between fork and exec: moves only itself."""
        if self.path:
            with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    def remove(self) -> None:
        if self.path:
            try:
                os.rmdir(self.path)
            except OSError:
                pass


def run_scenario(spec: dict[str, Any], extra_s: float = 30.0) -> dict[str, Any]:
    """Run one scenario; return nsrun's JSON result.  Bounded in time."""
    with scenario_slot():
        return _run_locked(spec, extra_s)


def run_scenario_in_slot(spec: dict[str, Any], extra_s: float = 30.0) -> dict[str, Any]:
    """run_scenario for a caller that already holds scenario_slot() (a test
    that sets up swap around the scene, under the same lock)."""
    return _run_locked(spec, extra_s)


@contextlib.contextmanager
def scenario_slot() -> Iterator[None]:
    """Hold the scenario lock, and start only once memory has settled and
    the memory this VM hides is in use (integration/primer.py): held by a
    primer outside the scene until the scene ends."""
    with open(SCENARIO_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        settle_memory()
        primer = _start_primer()
        try:
            yield
        finally:
            _stop_primer(primer)


PRIMER_LIFE_S = 900  # longer than any scene (the pod scene: ~160 s)


def _start_primer() -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "primer.py"), str(PRIMER_LIFE_S)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert p.stdout is not None
    line = p.stdout.readline().decode().split()
    if len(line) != 3 or line[0] != "primed":
        _stop_primer(p)
        raise RuntimeError(f"the primer did not start: {line}")
    # on stderr (the bench's stdout is its table); pytest shows it when the
    # test fails: how much was hidden before this scene
    print(f"primer: {line[1]} MiB held, {line[2]} MiB of it hidden from MemAvailable", file=sys.stderr)
    return p


def _stop_primer(p: subprocess.Popen[bytes]) -> None:
    if p.stdin is not None:
        p.stdin.close()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def settle_memory(step_s: float = SETTLE_STEP_S, timeout_s: float = SETTLE_TIMEOUT_S) -> float:
    """Wait until MemAvailable stops moving: the previous scenario's processes
    were killed when its namespace ended, and the kernel frees their memory
    after they are reaped.  A scenario measuring its thresholds while 1 GiB
    was still being returned saw them move by that much (measured here: the
    same 1.8 GiB of processes lowered MemAvailable by 1.25 to 1.86 GiB), so
    its daemon never crossed TERM.  Returns the seconds waited.  Scenarios
    still keep margins of several hundred MiB on both sides of a threshold."""
    t0 = time.monotonic()
    prev = mem_available_kib()
    while time.monotonic() - t0 < timeout_s:
        time.sleep(step_s)
        now = mem_available_kib()
        if abs(now - prev) <= SETTLE_KIB:
            break
        prev = now
    return time.monotonic() - t0


def _run_locked(spec: dict[str, Any], extra_s: float) -> dict[str, Any]:
    cg = SafetyCgroup()
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, os.path.join(HERE, "nsrun.py"),
           json.dumps(spec)]
    # spec "outer_proc": the machine's /proc, open, for nsrun to see its
    # processes' pids as the kernel logs them (initial PID namespace).
    outer = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY) if spec.get("outer_proc") else -1
    if outer >= 0:
        env["PYOOMD_IT_OUTER_PROC_FD"] = str(outer)
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=spec.get("timeout", 30) + extra_s,
                           preexec_fn=cg.enter, env=env, cwd=ROOT, pass_fds=(outer,) if outer >= 0 else ())
    finally:
        cg.remove()
        if outer >= 0:
            os.close(outer)
    if r.returncode != 0 or not r.stdout.strip():
        raise AssertionError(f"scenario failed rc={r.returncode}\nstdout:{r.stdout.decode()[-3000:]}\n"
                             f"stderr:{r.stderr.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(r.stdout.decode().strip().splitlines()[-1])
    print(describe(result))  # pytest shows it when the test fails
    return result


def describe(r: dict[str, Any]) -> str:
    """A scene in a few lines: its levels, the memory trace (MemAvailable,
    the scene's own RSS, and what the rest of the machine took or gave back
    since the start, MiB) and the daemon's last log lines in full."""
    lines = []
    if "avail0_kib" in r:
        a0 = r["avail0_kib"] // 1024
        lines.append(f"scene: MemAvailable {a0} MiB at start, TERM {r['term_kib'] // 1024}, "
                     f"KILL {r['kill_kib'] // 1024}, lowest seen {r['min_avail_kib'] // 1024}")
    trace = r.get("trace") or []
    if trace:
        _, avail_t0, rss_t0 = trace[0]
        rows = [f"{t:.1f}s {a} {rss} {(avail_t0 - a) - (rss - rss_t0):+d}" for t, a, rss in trace]
        lines.append("trace (t avail scene_rss machine_took):")
        lines += ["  " + "  ".join(rows[i:i + 8]) for i in range(0, len(rows), 8)]
    lines.append("daemon log tail:")
    lines += ["  " + line for line in r.get("log_tail", [])]
    return "\n".join(lines)


def events(result: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e for e in result["events"] if e.get("event") == name]


if __name__ == "__main__":
    print(json.dumps(run_scenario(json.loads(sys.argv[1])), indent=1))
