"""VmHWM of the idle daemon, installed non-editable (README, "Memory of the
running daemon").

    python3 integration/bench/memory.py [SOURCE_DIR] [--runs 3] [--seconds 5]

Makes a fresh venv of this interpreter, ``pip install SOURCE_DIR`` (not
editable), runs ``pyoomd run --dry-run --log-format json`` (dry-run: no
signal is ever sent) with a config whose status socket is in a temporary
directory, for each config below, and prints VmHWM after ``--seconds``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def measure(pyoomd: str, args: list[str], seconds: float, env: dict[str, str]) -> tuple[int, str]:
    p = subprocess.Popen([pyoomd, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                         cwd="/")
    try:
        time.sleep(seconds)
        if p.poll() is not None:
            raise RuntimeError(f"pyoomd exited {p.returncode}: {p.stderr.read().decode()[-2000:]}")
        hwm = vm_hwm_kib(p.pid)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            _, err = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
    return hwm, err.decode(errors="replace")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", default=str(REPO))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pyoomd-mem-") as tmp:
        venv = Path(tmp) / "V"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check", a.source], check=True)
        cfg = Path(tmp) / "a.yaml"
        cfg.write_text(f"status: {{socket: {tmp}/status.sock}}\n")
        cfg.chmod(0o644)
        src = Path(a.source)
        configs = {"defaults (--config a.yaml)": ["--config", str(cfg)]}
        if (src / "packaging/config.yaml").exists() and (src / "policies").is_dir():
            full = Path(tmp) / "full.yaml"
            full.write_text((src / "packaging/config.yaml").read_text()
                            + f"\nstatus: {{socket: {tmp}/status2.sock}}\n")
            full.chmod(0o644)
            pol = Path(tmp) / "policies"
            shutil.copytree(src / "policies", pol)
            for f in [pol, *pol.rglob("*")]:
                f.chmod(0o755 if f.is_dir() else 0o644)
            configs["packaging/config.yaml + --policy policies/"] = ["--config", str(full), "--policy", str(pol)]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JOURNAL_STREAM")}
        print(f"| config | VmHWM after {a.seconds:g} s, {a.runs} runs (MiB) |")
        print("|---|---|")
        for name, args in configs.items():
            figures = []
            for _ in range(a.runs):
                hwm, err = measure(str(venv / "bin/pyoomd"), ["run", "--dry-run", "--log-format", "json", *args],
                                   a.seconds, env)
                if '"startup"' not in err:
                    raise RuntimeError(f"no startup event: {err[-2000:]}")
                figures.append(hwm / 1024)
            print(f"| {name} | {' '.join(f'{f:.1f}' for f in figures)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
