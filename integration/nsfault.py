"""Fault, load and soak scenarios in a private PID namespace.

Host side: ``run_fault(spec)`` takes the scenario lock and the memory-limited
safety cgroup of integration/harness.py, then runs this file as PID 1 of a
new PID namespace (``unshare --pid --fork --mount-proc``), where /proc shows
only the scenario's processes.  It prints one JSON result.

Modes (``spec["mode"]``):

- ``killer``: no daemon; drives ``Killer.kill`` and ``snapshot`` directly
  against real processes: exit between snapshot and kill, PID reuse forced
  with ``ns_last_pid``, exit during the SIGTERM grace, zombies, a zombie
  leader whose other thread holds the memory.
- ``daemon``: nsrun's daemon scenario plus ``procs`` (faultprocs.py
  processes), per-process ``user``, a hog frozen in a v1 freezer cgroup the
  host created (``freeze``), the daemon started under a large parent
  (``big_parent_mib``), its log pipe closed after start-up (``close_log``).
- ``soak``: one daemon, hog after hog for ``duration`` seconds; per cycle
  the victim, the bystanders and the daemon's VmRSS.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from integration import harness, nsrun
from pyoomd.act.kill import Killer, KillPlan
from pyoomd.judge.rank import score
from pyoomd.model import Level
from pyoomd.sense import snapshot
from pyoomd.sense.procfs import Procfs

FREEZER = "/sys/fs/cgroup/freezer"
NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"


# -- host side -------------------------------------------------------------------
def own_freezer_dir() -> str:
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "freezer" in controllers.split(","):
                return os.path.join(FREEZER, path.lstrip("/")).rstrip("/")
    raise RuntimeError("no v1 freezer hierarchy")


class Freezer:
    """A v1 freezer cgroup below our own; thawed and removed on close."""

    def __init__(self) -> None:
        self.path = os.path.join(own_freezer_dir(), f"pyoomd-it-frz-{uuid.uuid4().hex[:8]}")
        os.mkdir(self.path)

    def close(self) -> None:
        try:
            with open(os.path.join(self.path, "freezer.state"), "w") as f:
                f.write("THAWED")
        except OSError:
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                if not f.read().strip():
                    break
            time.sleep(0.05)
        os.rmdir(self.path)


def run_fault(spec: dict[str, Any], extra_s: float = 30.0) -> dict[str, Any]:
    """Run one scenario under the global scenario lock; bounded in time."""
    with harness.scenario_slot():
        frz = Freezer() if spec.get("freeze") else None
        if frz is not None:
            spec["freeze"]["cgroup"] = frz.path
        cg = harness.SafetyCgroup()
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        cmd = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, os.path.abspath(__file__),
               json.dumps(spec)]
        try:
            r = subprocess.run(cmd, capture_output=True, timeout=spec.get("timeout", 30) + extra_s,
                               preexec_fn=cg.enter, env=env, cwd=ROOT, check=False)
        finally:
            if frz is not None:
                frz.close()
            cg.remove()
    if r.returncode != 0 or not r.stdout.strip():
        raise AssertionError(f"scenario failed rc={r.returncode}\nstdout:{r.stdout.decode()[-3000:]}\n"
                             f"stderr:{r.stderr.decode()[-3000:]}")
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


# -- processes inside the namespace ------------------------------------------------
def start(spec: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str]:
    """A hog (nsrun's spec keys) or a faultprocs.py process (``fault``: args),
    optionally renamed (``comm``) and run as another ``user``.  Returns it and
    its "ready" line."""
    if spec.get("fault"):
        argv = [sys.executable, os.path.join(HERE, "faultprocs.py"), *map(str, spec["fault"])]
    else:
        argv = [sys.executable, os.path.join(HERE, "hog.py"), "--rate", str(spec.get("rate", 256)),
                "--max", str(spec.get("max", 512)), "--start", str(spec.get("start", 0)),
                "--hold", str(spec.get("hold", 60)), "--delay", str(spec.get("delay", 0))]
        if spec.get("ignore_term"):
            argv.append("--ignore-term")
    exe = nsrun.exe_named(spec["comm"], bool(spec.get("hardlink"))) if spec.get("comm") else sys.executable
    if spec.get("user") is not None:  # our interpreter may sit in /root (0700): the system one, renamed
        exe = other_user_python(spec.get("comm") or "python3")
        argv[0] = exe
    p = subprocess.Popen(argv, executable=exe, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         stderr=subprocess.PIPE if spec.get("capture_stderr") else None,
                         user=spec.get("user"), group=spec.get("user"), cwd="/")
    assert p.stdout is not None
    ready = p.stdout.readline().decode().strip()
    if spec.get("adj") is not None:
        nsrun.set_adj(p.pid, int(spec["adj"]))
    return p, ready


def other_user_python(comm: str) -> str:
    """/usr/bin/python3 under the name ``comm`` (a symlink), for processes
    run as another user; hog.py and faultprocs.py need only the stdlib."""
    d = "/tmp/pyoomd-it-comm-user"
    os.makedirs(d, mode=0o755, exist_ok=True)
    os.chmod(d, 0o755)
    path = os.path.join(d, comm)
    if not os.path.lexists(path):
        os.symlink(os.path.realpath(SYSTEM_PYTHON), path)
    return path


# -- mode: killer ------------------------------------------------------------------
def candidate(procfs: Procfs, pid: int) -> Any:
    info = snapshot.read_proc(procfs, pid)
    assert info is not None, f"pid {pid} not readable"
    return score(info)


def killer_mode(spec: dict[str, Any]) -> dict[str, Any]:
    procfs = Procfs()
    events: list[tuple[str, dict[str, Any]]] = []
    killer = Killer(procfs, lambda: Level.TERM, lambda ev, **kw: events.append((ev, kw)))
    plan = KillPlan(grace_s=3.0, kill_timeout_s=2.0, dry_run=False)
    out: dict[str, Any] = {"exit_between": [], "pid_reuse": [], "grace_exit": None}
    for _ in range(spec.get("rounds", 10)):
        p, _ = start({"rate": 0, "max": 8, "start": 8, "hold": 60})
        cand = candidate(procfs, p.pid)
        p.kill()
        p.wait()
        res = killer.kill(cand, plan)
        out["exit_between"].append({"pid": p.pid, "skipped": res.skipped, "signals": list(res.signals)})
    for _ in range(spec.get("rounds", 10)):
        out["pid_reuse"].append(pid_reuse_round(procfs, killer, plan))
    slow, _ = start({"fault": ["exit-after", 0.5]})
    t0 = time.monotonic()
    res = killer.kill(candidate(procfs, slow.pid), plan)
    slow.wait()
    out["grace_exit"] = {"exited": res.exited, "signals": list(res.signals), "ms": res.ms_to_exit,
                         "returncode": slow.returncode, "wall_ms": round((time.monotonic() - t0) * 1000)}
    out.update(zombie_checks(procfs, killer, plan))
    out["events"] = [{"event": e, **kw} for e, kw in events]
    return out


def pid_reuse_round(procfs: Procfs, killer: Killer, plan: KillPlan) -> dict[str, Any]:
    """Choose A, let it die, make the next fork get A's pid, then act on A."""
    a, _ = start({"rate": 0, "max": 8, "start": 8, "hold": 60})
    cand = candidate(procfs, a.pid)
    a.kill()
    a.wait()
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(a.pid - 1))
    b, _ = start({"rate": 0, "max": 8, "start": 8, "hold": 60})
    res = killer.kill(cand, plan)
    time.sleep(0.05)
    row = {"victim_pid": a.pid, "new_pid": b.pid, "reused": b.pid == a.pid, "skipped": res.skipped,
           "signals": list(res.signals), "new_alive": b.poll() is None}
    b.kill()
    b.wait()
    return row


def zombie_checks(procfs: Procfs, killer: Killer, plan: KillPlan) -> dict[str, Any]:
    zp, ready = start({"fault": ["zombie-parent"]})
    zombie = int(ready.split()[1])
    th, _ = start({"fault": ["thread-hog", 300]})
    time.sleep(0.3)  # the leader's exit is 0.2 s after the memory is held
    with open(f"/proc/{th.pid}/stat", "rb") as f:
        leader_state = f.read().rsplit(b")", 1)[1].split()[0].decode()
    table = snapshot.scan(procfs, score, 0, top_n=10, exhaustive=True)
    cands = {c.proc.pid: c for c in table.candidates}
    out: dict[str, Any] = {
        "zombie": {"pid": zombie, "read_proc": snapshot.read_proc(procfs, zombie) is not None,
                   "candidate": zombie in cands, "parent_candidate": zp.pid in cands},
        "thread_hog": {"pid": th.pid, "leader_state": leader_state, "candidate": th.pid in cands,
                       "rss_kib": cands[th.pid].proc.rss_kib if th.pid in cands else None,
                       "top": max(cands.values(), key=lambda c: c.badness).proc.pid if cands else None},
    }
    if th.pid in cands:
        res = killer.kill(cands[th.pid], plan)
        th.wait(5)
        out["thread_hog"].update(exited=res.exited, signals=list(res.signals), returncode=th.returncode)
    out["zombie"]["parent_alive"] = zp.poll() is None
    zp.kill()
    zp.wait()
    return out


# -- mode: daemon --------------------------------------------------------------------
def big_parent(mib: int, argv: list[str]) -> int:
    """A parent that holds ``mib`` MiB and runs the daemon as its child."""
    from integration.faultprocs import touch

    keep = touch(mib)
    child = subprocess.Popen(argv)
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    rc = child.wait()
    del keep
    return rc


def start_daemon(spec: dict[str, Any], term_kib: int, kill_kib: int) -> tuple[subprocess.Popen[bytes], Any]:
    argv = [sys.executable, "-m", "pyoomd", "run", "--log-format", "json", "-M", f"{term_kib},{kill_kib}",
            "--config", spec.get("config_file", os.devnull)] + list(spec.get("daemon_args", []))
    if spec.get("dry_run"):
        argv.append("--dry-run")
    if spec.get("policy_dir"):
        argv += ["--policy", spec["policy_dir"]]
    if spec.get("big_parent_mib"):
        argv = [sys.executable, os.path.abspath(__file__), "--big-parent", str(spec["big_parent_mib"]), *argv]
    d = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    if spec.get("close_log"):
        return d, closed_log(d)
    log = nsrun.LogReader(d.stderr)
    log.start()
    if not log.started.wait(15):
        d.kill()
        raise RuntimeError("daemon did not start: " + "\n".join(log.raw[-20:]))
    return d, log


def closed_log(d: subprocess.Popen[bytes]) -> Any:
    """Read up to the startup event, then close our end of the log pipe:
    every later write of the daemon's gets EPIPE."""
    log = nsrun.LogReader(iter(()))
    assert d.stderr is not None
    for line in d.stderr:
        ev = json.loads(line)
        ev["_t"] = time.monotonic()
        log.events.append(ev)
        if ev.get("event") == "startup":
            break
    d.stderr.close()
    return log


def write_config(spec: dict[str, Any]) -> None:
    nsrun.own_trace_dir(spec)
    if spec.get("config_yaml"):
        path = f"/tmp/pyoomd-it-fault-config-{os.getppid()}-{uuid.uuid4().hex[:6]}.yaml"
        with open(path, "w") as f:
            f.write(spec["config_yaml"])
        os.chmod(path, 0o644)
        spec["config_file"] = path


def freeze(spec: dict[str, Any], pid: int) -> None:
    d = spec["freeze"]["cgroup"]
    with open(os.path.join(d, "cgroup.procs"), "w") as f:
        f.write(str(pid))
    with open(os.path.join(d, "freezer.state"), "w") as f:
        f.write("FROZEN")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(os.path.join(d, "freezer.state")) as f:
            if f.read().strip() == "FROZEN":
                return
        time.sleep(0.01)
    raise RuntimeError("the freezer did not freeze")


def thaw(spec: dict[str, Any]) -> None:
    if spec.get("freeze", {}).get("cgroup"):
        with open(os.path.join(spec["freeze"]["cgroup"], "freezer.state"), "w") as f:
            f.write("THAWED")


def daemon_mode(spec: dict[str, Any]) -> dict[str, Any]:
    avail0 = nsrun.mem_available_kib()
    term_kib = avail0 - spec["term_below_mib"] * 1024
    kill_kib = avail0 - spec["kill_below_mib"] * 1024
    spec["policy_dir"] = nsrun.write_policies(spec)
    write_config(spec)
    procs = [start(p) for p in spec.get("procs", [])]
    if spec.get("freeze"):
        freeze(spec, procs[spec["freeze"]["proc"]][0].pid)
    daemon, log = start_daemon(spec, term_kib, kill_kib)
    witness = nsrun.Witness()
    witness.start()
    t0 = time.monotonic()
    hogs = [start(h)[0] for h in spec.get("hogs", [])]
    deadline = t0 + spec.get("timeout", 30)
    stop_after = spec.get("stop_after_events")
    while time.monotonic() < deadline:
        if hogs and all(h.poll() is not None for h in hogs):
            break
        if stop_after and any(e.get("event") in stop_after for e in log.events):
            break
        time.sleep(0.02)
    time.sleep(spec.get("linger", 0.3))
    witness.stop.set()
    witness.join()
    result: dict[str, Any] = {
        "avail0_kib": avail0, "term_kib": term_kib, "kill_kib": kill_kib, "min_avail_kib": witness.min_kib,
        "t_below_term": witness_crossing(log, t0),
        "avail_end_kib": nsrun.mem_available_kib(),
        "hogs": [{"pid": h.pid, "returncode": h.poll(), "rss_kib": nsrun.vm_rss_kib(h.pid)} for h in hogs],
        "procs": [{"pid": p.pid, "ready": r, "returncode": p.poll()} for p, r in procs],
        "daemon_pid": daemon.pid, "daemon_returncode": daemon.poll(),
    }
    if spec.get("big_parent_mib"):
        result["daemon_parent_pid"] = daemon.pid
    thaw(spec)
    stop(daemon)
    for p, _ in procs:
        if p.poll() is None:
            p.kill()
        _, err = p.communicate(timeout=10)
        if err:
            result.setdefault("proc_stderr", []).append(err.decode(errors="replace"))
    result["events"] = [dict(e, _t=round(e["_t"] - t0, 4)) for e in log.events]
    result["log_tail"] = log.raw[-30:]
    return result


def witness_crossing(log: Any, t0: float) -> float | None:
    low = [e["_t"] - t0 for e in log.events if e.get("event") == "low_memory"]
    return round(low[0], 4) if low else None


def stop(daemon: subprocess.Popen[bytes]) -> None:
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(5)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


# -- mode: soak --------------------------------------------------------------------------
def soak_mode(spec: dict[str, Any]) -> dict[str, Any]:
    """Hog after hog for ``duration`` s against one daemon."""
    avail0 = nsrun.mem_available_kib()
    term_kib = avail0 - spec["term_below_mib"] * 1024
    kill_kib = avail0 - spec["kill_below_mib"] * 1024
    bystanders = [start({"rate": 0, "max": 32, "start": 32, "hold": spec["duration"] + 60})[0] for _ in range(2)]
    daemon, log = start_daemon(spec, term_kib, kill_kib)
    cycles = []
    end = time.monotonic() + spec["duration"]
    while time.monotonic() < end:
        seen = len(log.events)
        hog = start({"rate": spec.get("rate", 512), "max": spec["term_below_mib"] + harness.MARGIN_MIB, "start": 50,
                     "hold": 20})[0]
        try:
            hog.wait(spec.get("cycle_timeout", 20))
        except subprocess.TimeoutExpired:
            hog.kill()
            hog.wait()
        recovered = _wait_event(log, seen, "memory_recovered", 10)
        kills = [e["pid"] for e in log.events[seen:] if e.get("event") == "kill"]
        cycles.append({"hog": hog.pid, "returncode": hog.returncode, "kills": kills, "recovered": recovered,
                       "bystanders_alive": all(b.poll() is None for b in bystanders),
                       "daemon_rss_kib": nsrun.vm_rss_kib(daemon.pid)})
        if len(kills) > 1:  # what the daemon saw, for the report of a wrong victim
            cycles[-1]["events"] = [{k: e.get(k) for k in ("event", "_t", "pid", "reason", "rss_kib", "ms",
                                                            "mem_available_kib", "candidates")}
                                    for e in log.events[seen:] if e.get("event") != "killed_process"]
    alive = daemon.poll() is None
    stop(daemon)
    for b in bystanders:
        b.kill()
        b.wait()
    return {"cycles": cycles, "daemon_alive": alive, "avail0_kib": avail0,
            "errors": [e for e in log.events if e.get("level") == "error"][:20]}


def _wait_event(log: Any, seen: int, name: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.get("event") == name for e in log.events[seen:]):
            return True
        time.sleep(0.02)
    return False


def main() -> int:
    if sys.argv[1] == "--big-parent":
        return big_parent(int(sys.argv[2]), sys.argv[3:])
    if os.getpid() != 1:
        print("nsfault.py must run as PID 1 of a private PID namespace", file=sys.stderr)
        return 2
    nsrun.hide_system_bus()  # low_memory_monitor must not reach the machine's bus
    spec = json.loads(sys.argv[1])
    try:
        mode = spec.get("mode", "daemon")
        result = {"killer": killer_mode, "daemon": daemon_mode, "soak": soak_mode}[mode](spec)
    finally:
        thaw(spec)
        if spec.get("policy_dir"):
            shutil.rmtree(spec["policy_dir"], ignore_errors=True)
        if spec.get("config_file"):
            os.unlink(spec["config_file"])
        if spec.get("trace_dir"):
            shutil.rmtree(spec["trace_dir"], ignore_errors=True)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
