"""A kill scene with the DaemonSet's pod run by podman, as PID 1 of a private
PID namespace (``unshare --pid --fork --mount-proc`` around this script): the
container's --pid=host is this namespace, so pyoomd sees and can signal only
the scene's processes.

    unshare --pid --fork --mount-proc python3 container_scene.py JSON

JSON: podman (global argv), flags (podman run flags), image, argv (after the
image), liveness (argv), config_path (the mounted config.yaml to write),
config_text (the ConfigMap's, levels rewritten here), term_below_mib,
hog_max_mib, kill_past_mib, hog_rate, bystanders, timeout.  Prints one JSON
line: what happened.  Everything it starts it stops, by PID or by name.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
HOG = os.path.join(HERE, "hog.py")


def mem_available_mib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no MemAvailable")


def hog(max_mib: int, rate: float, hold: float) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, HOG, "--rate", str(rate), "--max", str(max_mib), "--hold", str(hold)],
                         stdout=subprocess.PIPE)
    assert p.stdout is not None
    p.stdout.readline()  # "ready"
    return p


def main() -> int:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    assert os.getpid() == 1, "run me as PID 1 of a private PID namespace"
    podman, name = spec["podman"], spec["name"]
    out: dict[str, Any] = {"name": name}
    procs: list[subprocess.Popen[bytes]] = []
    started = False
    try:
        bystanders = [hog(b["max"], 0, spec["timeout"] + 30) for b in spec["bystanders"]]
        procs += bystanders
        avail = mem_available_mib()
        term = avail - spec["term_below_mib"]
        kill = avail - spec["hog_max_mib"] - spec["kill_past_mib"]
        warn = term + 400
        text = re.sub(r"^memory: .*$", f"memory: {{term: {term}M, kill: {kill}M, warn: {warn}M}}",
                      spec["config_text"], count=1, flags=re.MULTILINE)
        assert "dry_run: false" in text
        with open(spec["config_path"], "w") as f:
            f.write(text)
        out.update(avail_mib=avail, term_mib=term, kill_mib=kill)
        t0 = time.monotonic()
        r = subprocess.run([*podman, "run", "-d", *spec["flags"], spec["image"], *spec["argv"]],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            out["error"] = f"podman run: {r.stderr.strip()[-2000:]}"
            return 0
        started = True
        deadline = time.monotonic() + 30
        while True:
            live = subprocess.run([*podman, "exec", name, *spec["liveness"]], capture_output=True, timeout=20)
            if live.returncode == 0:
                break
            if time.monotonic() > deadline:
                out["error"] = f"liveness never passed: {live.returncode} {live.stderr.decode()[-500:]}"
                return 0
            time.sleep(0.2)
        out["start_to_live_s"] = round(time.monotonic() - t0, 2)
        leak = hog(spec["hog_max_mib"], spec["hog_rate"], spec["timeout"])
        procs.append(leak)
        out["hog_pid"] = leak.pid
        out["bystander_pids"] = [b.pid for b in bystanders]
        try:
            out["hog_returncode"] = leak.wait(timeout=spec["timeout"])
        except subprocess.TimeoutExpired:
            out["hog_returncode"] = None
        time.sleep(1.0)  # the daemon's victim_exited and anything after it
        out["bystanders_alive"] = [b.poll() is None for b in bystanders]
        live = subprocess.run([*podman, "exec", name, *spec["liveness"]], capture_output=True, timeout=20)
        out["liveness_after"] = live.returncode
    finally:
        if started:
            logs = subprocess.run([*podman, "logs", name], capture_output=True, text=True, timeout=30)
            events = []
            for line in (logs.stdout + logs.stderr).splitlines():
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass
            out["events"] = events
            stop = subprocess.run([*podman, "stop", "-t", "3", name], capture_output=True, text=True, timeout=30)
            rm = subprocess.run([*podman, "rm", name], capture_output=True, text=True, timeout=30)
            out["removed"] = stop.returncode == 0 and rm.returncode == 0
            if not out["removed"]:
                out["remove_error"] = (stop.stderr + rm.stderr)[-1000:]
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
