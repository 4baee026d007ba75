"""The three daemons under test: how to install, check, configure and start them.

Shared by run.py (outside, on the host) and nsbench.py (inside the private PID
namespace, where thresholds are known only once MemAvailable is read).

nohang: Debian's nohang refuses a soft/hard threshold above 50 % of MemTotal
(``calculate_percent``).  Scenario thresholds sit a few hundred MiB below the
current MemAvailable, i.e. far above 50 % on an idle machine, so run.py
generates a *locally relaxed copy* of /usr/sbin/nohang in a temporary
directory at run time (the one comparison ``> mem_total * 0.5`` becomes
``> mem_total * 1.0``; nothing else changes) and deletes it afterwards.  It
is never committed.  Everything else in the config comes from the package's
own /etc/nohang/nohang.conf; only the keys below are overridden.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

NOHANG_BIN = "/usr/sbin/nohang"
NOHANG_CONF = "/etc/nohang/nohang.conf"
EARLYOOM_BIN = "/usr/bin/earlyoom"
# The one check relaxed in the run-time copy (see the module docstring).
NOHANG_50_PCT = "mem_min_kb > mem_total * 0.5"
NOHANG_RELAXED = "mem_min_kb > mem_total * 1.0"

# name -> what it is; "nohang10" is nohang with 10 ms polling (min_sleep=0.01),
# the setting that buys low overshoot with idle CPU.
DAEMONS = ("pyoomd", "earlyoom", "nohang", "nohang10")
# The thrash scene (integration/desktop.py) also runs "nohang_psi": nohang
# with psi_checking_enabled (its own PSI defaults: full_avg10 above its
# soft/hard PSI levels for psi_excess_duration).
# Lines that say a daemon is ready (stdout+stderr merged).
READY = {"pyoomd": '"event": "startup"', "earlyoom": "mem total:", "nohang": "Monitoring has started",
         "nohang10": "Monitoring has started", "nohang_psi": "Monitoring has started"}


def _pid_ns(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


def running_instances() -> list[tuple[int, str]]:
    """(pid, cmdline) of every earlyoom/nohang process in this PID namespace:
    those would act on the whole machine.  Instances inside another PID
    namespace (a benchmark scenario, ours or a concurrent run's) see only
    their namespace's processes, and are not ours to stop."""
    r = subprocess.run(["pgrep", "-a", "earlyoom|nohang"], capture_output=True, text=True)
    ours = _pid_ns("self")
    out = []
    for line in r.stdout.splitlines():
        pid, _, cmd = line.partition(" ")
        if int(pid) != os.getpid() and _pid_ns(pid) == ours:
            out.append((int(pid), cmd))
    return out


def ensure_installed(log: Any = print) -> dict[str, str]:
    """Install earlyoom and nohang from the distribution when missing; stop
    the services the packages start.  Returns the versions."""
    if not (os.path.exists(EARLYOOM_BIN) and os.path.exists(NOHANG_BIN)):
        if shutil.which("apt-get") is None:
            raise SystemExit("earlyoom/nohang missing and no apt-get to install them")
        log("installing earlyoom and nohang (apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "earlyoom", "nohang"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    stop_services(log)
    return versions()


def stop_services(log: Any = print) -> None:
    """The packages enable services; a killer left running on the host would
    act on the whole machine.  Stop them (systemctl where systemd runs, else
    SIGTERM exactly the pids found), then check again."""
    found = running_instances()
    if not found:
        return
    log(f"stopping running instances: {found}")
    if os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        subprocess.run(["systemctl", "stop", "earlyoom.service", "nohang.service", "nohang-desktop.service"],
                       capture_output=True)
    for pid, _ in running_instances():
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass
    left = running_instances()
    if left:
        raise SystemExit(f"earlyoom/nohang still running on the host, refusing to benchmark: {left}")


def versions() -> dict[str, str]:
    out = {}
    for pkg in ("earlyoom", "nohang"):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
        out[pkg] = r.stdout.strip() or "?"
    return out


def make_relaxed_nohang(tmpdir: str) -> str:
    """A copy of nohang in tmpdir with the 50 %-of-MemTotal check relaxed."""
    with open(NOHANG_BIN) as f:
        text = f.read()
    if text.count(NOHANG_50_PCT) != 1:
        raise SystemExit(f"nohang changed: expected one {NOHANG_50_PCT!r} to relax")
    path = os.path.join(tmpdir, "nohang-relaxed")
    with open(path, "w") as f:
        f.write(text.replace(NOHANG_50_PCT, NOHANG_RELAXED))
    return path


def nohang_config(path: str, term_kib: int, kill_kib: int, grace_s: float, min_sleep: float,
                  extra: dict[str, str] | None = None) -> None:
    """The packaged config with our thresholds and timings (``extra``: more
    keys to override, as the thrash scene's swap levels and PSI)."""
    over = {
        "soft_threshold_min_mem": f"{term_kib / 1024:.3f} M",
        "hard_threshold_min_mem": f"{kill_kib / 1024:.3f} M",
        "warning_threshold_min_mem": f"{term_kib / 1024:.3f} M",
        "soft_threshold_min_swap": "0 M",  # no swap here: swap counts as low, as for the others
        "hard_threshold_min_swap": "0 M",
        "max_soft_exit_time": f"{grace_s}",
        "min_sleep": f"{min_sleep}",
        "low_memory_warnings_enabled": "False",
        "post_action_gui_notifications": "False",
        "psi_checking_enabled": "False",
        "zram_checking_enabled": "False",
        **(extra or {}),
    }
    lines = []
    seen = set()
    with open(NOHANG_CONF) as f:
        for line in f:
            m = re.match(r"^(\s*)([a-z_0-9]+)(\s*=)", line)
            if m and m.group(2) in over:
                key = m.group(2)
                seen.add(key)
                line = f"{key} = {over[key]}\n"
            lines.append(line)
    missing = set(over) - seen
    if missing:
        raise SystemExit(f"nohang.conf lacks keys {sorted(missing)}")
    with open(path, "w") as f:
        f.writelines(lines)


def command(name: str, term_kib: int, kill_kib: int, grace_s: float, tmpdir: str, nohang_copy: str,
            pct: tuple[float, float] | None = None,
            pyoomd_python: str | None = None, swap_pct: tuple[float, float] | None = None,
            ) -> tuple[list[str], dict[str, str | None]]:
    """argv and extra environment (None: remove the variable) for one daemon.
    ``pct`` (term, kill) uses percentages instead of sizes (the idle
    scenario: default-like levels); ``pyoomd_python`` is the interpreter of a
    venv where pyoomd is installed (see install_pyoomd), else this one runs
    the repo's source.  ``swap_pct`` (term, kill): swap levels for a scene
    with swap (earlyoom's and pyoomd's defaults are 10 % and 5 %; nohang is
    told the same)."""
    if name == "pyoomd":
        lv = ["-m", f"{pct[0]},{pct[1]}"] if pct else ["-M", f"{term_kib},{kill_kib}"]
        # defaults, but the flight recorder's traces in the run's own directory
        config = os.path.join(tmpdir, "pyoomd-config.yaml")
        with open(config, "w") as f:
            f.write(f"recorder: {{dir: {os.path.join(tmpdir, 'traces')}}}\n")
        os.chmod(config, 0o644)
        argv = ["-m", "pyoomd", "run", "--log-format", "json", "--config", config, "--grace", str(grace_s), *lv]
        if pyoomd_python:  # as deployed: a venv with a plain (non-editable) install, nothing from the repo
            return [pyoomd_python, *argv], {"PYTHONPATH": None}
        return [sys.executable, *argv], {"PYTHONPATH": ROOT}
    if name == "earlyoom":
        lv = ["-m", f"{pct[0]:g},{pct[1]:g}"] if pct else ["-M", f"{term_kib},{kill_kib}"]
        # -r 0: no periodic memory report (its Debian default is one an hour).
        return [EARLYOOM_BIN, "-r", "0", *lv], {}
    if name in ("nohang", "nohang10", "nohang_psi"):
        conf = os.path.join(tmpdir, f"{name}.conf")
        if pct:
            from_pct = _total_kib()
            term_kib, kill_kib = int(from_pct * pct[0] / 100), int(from_pct * pct[1] / 100)
        extra = {"psi_checking_enabled": "True"} if name == "nohang_psi" else {}
        if swap_pct:
            extra |= {"soft_threshold_min_swap": f"{swap_pct[0]:g} %", "hard_threshold_min_swap": f"{swap_pct[1]:g} %"}
        nohang_config(conf, term_kib, kill_kib, grace_s, 0.01 if name == "nohang10" else 0.1, extra)
        # Unbuffered: the bench reads its start-up line as it comes.
        return (["/usr/bin/python3", nohang_copy, "--monitor", "-c", conf], {"PYTHONUNBUFFERED": "1"})
    raise ValueError(name)


def _total_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    raise RuntimeError("no MemTotal")


def install_pyoomd(tmpdir: str) -> str:
    """A fresh venv in ``tmpdir`` with ``pip install <repo>`` (not editable):
    the daemon then starts as a deployed one does, without this machine's
    site .pth hooks or the editable-install finder (each imports modules, ~5
    MiB of RSS here, that an installed pyoomd never loads).  Returns its python."""
    venv = os.path.join(tmpdir, "venv")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    py = os.path.join(venv, "bin", "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", ROOT], check=True)
    return py
