"""The emulated small desktop with real zram swap (issue 11), run from the host.

    python3 -m integration.desktop '{"daemon": "pyoomd"}'     # as root

Under the scenario lock (harness.scenario_slot), refusing if any swap is on:

1. zram0 as swap: reset, ``lz4`` (else the kernel's default), ``disksize``
   2 GiB, mkswap, swapon;
2. the watchdog (desktop_watchdog.py), mlocked, before anything big exists;
3. the ballast (desktop_procs.py ballast), outside the scene's PID namespace:
   mlocks memory until MemAvailable is down to ``budget_mib`` (the desktop's
   RAM), oom_score_adj 1000, a hard lifetime;
4. the scene (desktop_scene.py) in a private PID namespace, inside the
   harness's 6 GiB safety cgroup;
5. in ``finally``, also on failure: the scene, ballast and watchdog ended by
   PID, ``swapoff``, zram reset.

The kernel's own OOM kills are counted from /proc/vmstat ``oom_kill``
before and after.  Returns the scene's result with ``watchdog``,
``kernel_oom_kills``, ``zram`` (mm_stat at the leak's start is not seen from
here; the device's peak ``mem_used_max``) and ``skipped`` (a reason, when
zram or swapon is not available).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from integration.harness import LATE_FREE_MIB, ROOT, SafetyCgroup, scenario_slot, settle_memory
from integration.nsrun import mem_available_kib

HERE = os.path.dirname(os.path.abspath(__file__))
ZRAM = "/sys/block/zram0"
DEFAULTS: dict[str, Any] = {
    "daemon": "pyoomd", "budget_mib": 3072, "zram_mib": 2048, "algorithm": "lz4", "data": "zero3",
    "tabs": 3, "tab_mib": 300, "pageout_pct": 50, "leak_rate": 150, "term_mib": 400, "kill_mib": 200,
    "swap_pct": [10, 5], "timeout": 30, "linger": 3.0, "watchdog_low_mib": 150, "watchdog_window_s": 3.0,
}


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def swap_devices() -> list[str]:
    return [line.split()[0] for line in _read("/proc/swaps").splitlines()[1:] if line.strip()]


def oom_kills() -> int:
    for line in _read("/proc/vmstat").splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


def why_no_zram() -> str | None:
    if os.geteuid() != 0:
        return "needs root (swapon, mlock)"
    if not os.path.isdir(ZRAM):
        return "no /dev/zram0 (zram module not loaded or not built)"
    if not os.path.exists("/sbin/mkswap") and not os.path.exists("/usr/sbin/mkswap"):
        return "no mkswap"
    return None


def zram_on(size_mib: int, algorithm: str) -> str | None:
    """zram0 as swap; None, or why it is not possible here (then all undone)."""
    try:
        _write(f"{ZRAM}/reset", "1")
        if algorithm in _read(f"{ZRAM}/comp_algorithm").replace("[", " ").replace("]", " ").split():
            _write(f"{ZRAM}/comp_algorithm", algorithm)
        _write(f"{ZRAM}/disksize", f"{size_mib}M")
    except OSError as e:
        return f"cannot set up /dev/zram0: {e}"
    r = subprocess.run(["mkswap", "/dev/zram0"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"mkswap /dev/zram0 failed: {r.stderr.strip()}"
    r = subprocess.run(["swapon", "/dev/zram0"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"swapon /dev/zram0 refused: {r.stderr.strip()}"
    return None


def zram_off() -> None:
    if "/dev/zram0" in swap_devices():
        subprocess.run(["swapoff", "/dev/zram0"], capture_output=True, timeout=120)
    try:
        _write(f"{ZRAM}/reset", "1")
    except OSError:
        pass


def _end(p: subprocess.Popen[Any] | None) -> None:
    if p is not None and p.poll() is None:
        p.kill()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            pass


def _ns_child(unshare_pid: int) -> int | None:
    """The host pid of the scene's PID 1: unshare --fork's only child."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            kids = _read(f"/proc/{unshare_pid}/task/{unshare_pid}/children").split()
        except OSError:
            return None
        if kids:
            return int(kids[0])
        time.sleep(0.005)
    return None


def run(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """One scene (see run_many)."""
    return run_many([overrides or {}])[0]


def run_many(overrides: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scenes one after the other under one lock and one ballast (locking
    ~20 GiB takes ~70 s on this VM: the first touch of RAM the hypervisor
    took back is slow).  The ballast's size comes from the first spec."""
    specs = [{**DEFAULTS, **o} for o in overrides]
    why = why_no_zram()
    if why:
        return [{"skipped": why} for _ in specs]
    with scenario_slot():
        if swap_devices():
            why = f"swap already on ({', '.join(swap_devices())}): refusing to touch it"
            return [{"skipped": why} for _ in specs]
        return _run_locked(specs)


def _run_locked(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    watchdog = ballast = None
    avail_before = mem_available_kib()
    life = sum(s["timeout"] + 40 for s in specs)
    first = specs[0]
    results: list[dict[str, Any]] = []
    try:
        why = zram_on(first["zram_mib"], first["algorithm"])
        if why:
            return [{"skipped": why} for _ in specs]
        watchdog = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "desktop_watchdog.py"), "--low-mib", str(first["watchdog_low_mib"]),
             "--window", str(first["watchdog_window_s"]), "--deadline", str(life + 150)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT)
        assert watchdog.stdin is not None and watchdog.stdout is not None
        if watchdog.stdout.readline().strip() != b"ready":
            raise RuntimeError("watchdog did not start")
        t_b = time.monotonic()
        ballast = subprocess.Popen([sys.executable, os.path.join(HERE, "desktop_procs.py"), "ballast",
                                    str(first["budget_mib"]), "--life", str(life)],
                                   stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        _tell(watchdog, ballast.pid, "ballast")
        assert ballast.stdout is not None
        line = ballast.stdout.readline().decode().split()
        if not line or line[0] != "ready":
            raise RuntimeError(f"ballast failed: {line}")
        ballast_mib, ballast_s = int(line[1]), time.monotonic() - t_b
        for i, spec in enumerate(specs):
            if ballast.poll() is not None:
                results.append({"skipped": "the ballast is gone (the watchdog fired, or its lifetime ended)"})
                continue
            if i:  # a fresh device: its peak and ratio are this scene's
                zram_off()
                why = zram_on(spec["zram_mib"], spec["algorithm"])
                if why:
                    results.append({"skipped": why})
                    continue
            settle_memory()
            r = _scene(spec, env, watchdog)
            r.update(ballast_mib=ballast_mib, ballast_s=round(ballast_s, 1))
            results.append(r)
        return results
    finally:
        _end(ballast)
        if watchdog is not None:
            if watchdog.stdin is not None and not watchdog.stdin.closed:
                watchdog.stdin.close()
            _end(watchdog)
        zram_off()
        _wait_back(avail_before)


# The ballast's ~20 GiB come back late on this VM (harness.LATE_FREE_MIB;
# more than that was seen: the next scene's hog then never crossed TERM):
# the scenes after this one should start with it back.
BACK_WAIT_S = 150.0
BACK_WITHIN_MIB = LATE_FREE_MIB // 2


def _wait_back(avail_before_kib: int) -> None:
    """Hold the scenario lock until MemAvailable is back within
    BACK_WITHIN_MIB of what it was before the ballast (at most BACK_WAIT_S)."""
    deadline = time.monotonic() + BACK_WAIT_S
    while time.monotonic() < deadline and mem_available_kib() < avail_before_kib - (BACK_WITHIN_MIB << 10):
        time.sleep(1.0)
    settle_memory()


def _tell(watchdog: subprocess.Popen[bytes], pid: int, kind: str = "pid") -> None:
    assert watchdog.stdin is not None
    watchdog.stdin.write(f"{kind} {pid}\n".encode())
    watchdog.stdin.flush()


def _scene(spec: dict[str, Any], env: dict[str, str], watchdog: subprocess.Popen[bytes]) -> dict[str, Any]:
    cg = SafetyCgroup()
    scene = None
    kills0 = oom_kills()
    work = tempfile.mkdtemp(prefix="pyoomd-desktop-", dir="/var/tmp")  # the probe's files
    spec = {**spec, "workdir": work}
    try:
        scene = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable,
                                  os.path.join(HERE, "desktop_scene.py"), json.dumps(spec)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                 preexec_fn=cg.enter, env=env, cwd=ROOT)  # noqa: PLW1509 (one write to cgroup.procs)
        child = _ns_child(scene.pid)
        if child is not None:
            _tell(watchdog, child)
        try:
            out, err = scene.communicate(timeout=spec["timeout"] + 60)
        except subprocess.TimeoutExpired:
            scene.kill()
            out, err = scene.communicate()
        t_end = time.monotonic()
        mm = _read(f"{ZRAM}/mm_stat").split()
        lines = out.decode().strip().splitlines()
        if scene.returncode != 0 or not lines:
            result: dict[str, Any] = {"scene_failed": scene.returncode, "stderr": err.decode()[-3000:]}
        else:
            result = json.loads(lines[-1])
        if not result.get("probe"):  # the scene was ended: the probe's last figures
            result["probe"] = _probe_file(os.path.join(work, "probe.json"), t_end)
        result.update(kernel_oom_kills=oom_kills() - kills0, spec=spec, watchdog=_fired(watchdog),
                      zram={"mem_used_max_mib": int(mm[4]) >> 20})
        return result
    finally:
        _end(scene)
        cg.remove()
        shutil.rmtree(work, ignore_errors=True)


def _probe_file(path: str, t_end: float) -> dict[str, Any]:
    """The probe saves its figures every 0.5 s: if it was frozen at the end,
    it has been since its last save (less the 0.5 s)."""
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError):
        return {}
    d.pop("t0", None)
    frozen = max(0.0, t_end - d.pop("saved_at") - 0.5)
    d["frozen_at_end_s"] = round(frozen, 2)
    d["max_stall_s"] = max(d["max_stall_s"], round(frozen, 3))
    d["ended_by_watchdog"] = True
    return d


def _fired(watchdog: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """The watchdog's reports since the last scene."""
    out = []
    assert watchdog.stdout is not None
    while select.select([watchdog.stdout], [], [], 0.3)[0]:
        line = watchdog.stdout.readline()
        if not line:
            break
        out.append(json.loads(line))
    return out


if __name__ == "__main__":
    args = [json.loads(a) for a in sys.argv[1:]] or [{}]
    print(json.dumps(run_many(args), indent=1))


def zram_cost_check(cases: tuple[tuple[str, int], ...] = (("zero3", 128), ("random", 64), ("zero3", 1)),
                    ) -> list[dict[str, Any]] | str:
    """pyoomd's zram cost estimate against a real device: for each (data,
    MiB), a process fills MiB of that data and puts all of it into zram
    (MADV_PAGEOUT); the device's mm_stat is then read as the daemon reads it.
    A reason string when it cannot run here."""
    from pyoomd.sense.procfs import Procfs
    from pyoomd.sense.zram import Zram, cost, parse_mm_stat

    why = why_no_zram()
    if why:
        return why
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = []
    with scenario_slot():
        if swap_devices():
            return f"swap already on ({', '.join(swap_devices())}): refusing to touch it"
        try:
            for data, mib in cases:
                zram_off()
                why = zram_on(256, "lz4")
                if why:
                    return why
                tab = subprocess.Popen([sys.executable, os.path.join(HERE, "desktop_procs.py"), "tab", str(mib),
                                        "--data", data, "--pageout", "100", "--life", "20"],
                                       stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
                try:
                    assert tab.stdout is not None
                    tab.stdout.readline()
                    z = Zram(Procfs())
                    devs = z.devices()
                    stat = parse_mm_stat(_read(f"{ZRAM}/mm_stat").encode())
                    out.append({"data": data, "mib": mib, "algorithm": z.algorithm("/dev/zram0"),
                                "orig_mib": round(stat.orig_data_size / 2**20, 1),
                                "mem_used_mib": round(stat.mem_used_total / 2**20, 2),
                                "measured": round(stat.mem_used_total / max(1, stat.orig_data_size), 3),
                                "cost": round(cost(stat, z.algorithm("/dev/zram0")), 3), "devices": len(devs)})
                finally:
                    _end(tab)
        finally:
            zram_off()
    return out
