"""What several test modules share: fake /proc trees, fake samplers, the C
reader, the CLI and daemon drivers, a test D-Bus.  Test modules import
these from here (and the logger from logcapture.py, the hypothesis
settings from fuzzing.py), never from one another: test_no_test_imports.py
checks that."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pyoomd.act.hooks import HookRunner
from pyoomd.model import MemSample
from pyoomd.sense import sample as sample_mod
from pyoomd.sense.procfs import Procfs

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_PROC = str(FIXTURES / "proc")
# The environment of a `python -m pyoomd` child: this checkout, the reader it chooses.
ENV = {k: v for k, v in os.environ.items() if k != "PYOOMD_READER"} | {"PYTHONPATH": str(REPO)}

# -- the C reader -----------------------------------------------------------------
EXT = sample_mod._load_extension()
needs_cffi = pytest.mark.skipif(EXT is None, reason="pyoomd.sense._reader not built (pip install .)")


# -- /proc/meminfo and PSI ------------------------------------------------------------
MEMINFO = (FIXTURES / "meminfo" / "modern_6x.txt").read_bytes()
PSI = (FIXTURES / "pressure" / "modern.txt").read_bytes()


def fake_proc(root: Path, meminfo: bytes = MEMINFO, psi: bytes | None = PSI) -> Procfs:
    """A /proc with meminfo and (unless ``psi`` is None) pressure/memory only."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "meminfo").write_bytes(meminfo)
    if psi is not None:
        (root / "pressure").mkdir(exist_ok=True)
        (root / "pressure" / "memory").write_bytes(psi)
    return Procfs(str(root))


class FakeSampler:
    """``read()`` gives ``self.sample`` (tests may change it between ticks)
    or raises ``error``.  The default sample is at the KILL level, so every
    tick acts.  No ``idle_wait``: the daemon takes its plain tick path."""

    backend = "python"

    def __init__(self, sample: MemSample | None = None, error: Exception | None = None) -> None:
        if sample is None:
            sample = MemSample(mem_total_kib=16 << 20, mem_available_kib=1 << 10, swap_total_kib=0, swap_free_kib=0)
        self.sample = sample
        self.error = error

    def read(self) -> MemSample:
        if self.error is not None:
            raise self.error
        return self.sample


# -- processes ----------------------------------------------------------------------
# Above the kernel's largest pid_max (4194304): never our own pid or our parent's.
BASE = 5_000_000
PF_NORMAL = 0x00400000  # PF_RANDOMIZE: what a user process usually shows


def stat_line(pid: int, comm: bytes, state: str = "S", ppid: int = 1, flags: int = PF_NORMAL,
              start: int | None = None, rss_pages: int = 100) -> bytes:
    start = 1000 + pid % 100000 if start is None else start
    # state ppid pgid session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime
    # priority nice num_threads itrealvalue starttime vsize rss ...
    rest = (f"{state} {ppid} {pid} {pid} 0 -1 {flags} 120 0 0 0 3 2 0 0 20 0 1 0 {start} "
            f"4096000 {rss_pages} 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0 0 0 0 0 0 0 0 0\n")
    return f"{pid} (".encode() + comm + b") " + rest.encode()


def status_text(pid: int, comm: str, uid: int = 1000, rss_kib: int = 4000, swap_kib: int = 0) -> bytes:
    return (f"Name:\t{comm}\nState:\tS (sleeping)\nTgid:\t{pid}\nPid:\t{pid}\nPPid:\t1\n"
            f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\nVmRSS:\t{rss_kib:>10} kB\nVmSwap:\t{swap_kib:>10} kB\n"
            "Threads:\t1\n").encode()


@dataclass
class FakeProc:
    pid: int
    oom_score: int
    comm: bytes = b"proc"
    state: str = "S"
    flags: int = PF_NORMAL
    adj: int = 0
    rss_kib: int = 4000
    swap_kib: int = 0
    uid: int = 1000
    cmdline: bytes = b"/usr/bin/proc\0--flag\0"
    exe: str = "/usr/bin/proc"
    cgroup: bytes = b"0::/user.slice/user-1000.slice/app.scope\n"
    omit: tuple[str, ...] = ()  # files missing (the process vanished while we listed it)


def build(root: Path, procs: list[FakeProc]) -> Procfs:
    """A /proc of ``procs`` (and a meminfo) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "meminfo").write_text("MemTotal: 16000000 kB\nMemAvailable: 8000000 kB\n")
    for p in procs:
        d = root / str(p.pid)
        d.mkdir()
        files = {
            "stat": stat_line(p.pid, p.comm, p.state, flags=p.flags),
            "status": status_text(p.pid, p.comm.decode(errors="replace"), p.uid, p.rss_kib, p.swap_kib),
            "oom_score": f"{p.oom_score}\n".encode(),
            "oom_score_adj": f"{p.adj}\n".encode(),
            "cmdline": p.cmdline,
            "cgroup": p.cgroup,
        }
        for name, data in files.items():
            if name not in p.omit:
                (d / name).write_bytes(data)
        if "exe" not in p.omit:
            os.symlink(p.exe, d / "exe")  # dangling is fine: only readlink is used
    return Procfs(str(root))


class CountingProcfs(Procfs):
    """Counts per-process file reads: what the lazy bound saves."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.reads: dict[str, set[int]] = {}

    def read_pid(self, pid: int, name: str, limit: int = 1 << 20) -> bytes:
        self.reads.setdefault(name, set()).add(pid)
        return super().read_pid(pid, name, limit)


def alive(pid: int) -> bool:
    """Not gone and not a zombie awaiting its reaper."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


# -- hooks ----------------------------------------------------------------------------
def hook_runner(**cfg: Any) -> tuple[HookRunner, list[tuple[str, dict[str, Any]]]]:
    """A HookRunner of ``cfg`` (validated as the config's ``hooks:``) and the (event, fields) it logs."""
    from pyoomd.settings.load import validate
    from pyoomd.settings.schema import HooksConfig

    logged: list[tuple[str, dict[str, Any]]] = []
    return HookRunner(validate(HooksConfig, cfg), lambda ev, **kw: logged.append((ev, kw))), logged


def hook_kill(runner: HookRunner, fields: dict[str, Any]) -> None:
    """As the daemon does: the kill event to the observers, then the act
    stage's pre-kill step (Daemon.pre_kill)."""
    runner.on_event("kill", fields)
    runner.pre_kill(fields)


# -- the command line and the real daemon ------------------------------------------------
def run_main(argv: Sequence[str]) -> int:
    """main()'s exit status, whether returned or raised by argparse.  With
    the ``no_daemon_loop`` fixture (conftest.py): no test reaches the loop."""
    from pyoomd.cli.dispatch import main

    try:
        return main(list(argv))
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else 1


def json_events(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines in ``path`` (other lines skipped)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def wait_for_event(path: Path, event: str, n: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The first ``n`` (or more) ``event`` lines of a JSON log, once there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in json_events(path) if e.get("event") == event]
        if len(found) >= n:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {event} event in {path.read_text()[-3000:]}")


# -- a test D-Bus --------------------------------------------------------------------
@contextlib.contextmanager
def bus_with_service(bus_path: str, ready: str, service: Callable[[], Any],
                     uid: int | None = None) -> Iterator[None]:
    """A dbus-daemon on ``bus_path`` (as ``uid``) and ``service()`` in a fork,
    which creates ``ready`` once it owns its name; both ended on exit."""
    daemon = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--nopidfile", f"--address=unix:path={bus_path}"],
        user=uid if uid is not None and uid != os.geteuid() else None, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    svc = None
    try:
        wait_for_bus(lambda: os.path.exists(bus_path), daemon)
        svc = os.fork()
        if svc == 0:  # pragma: no cover
            service()
        wait_for_bus(lambda: os.path.exists(ready), daemon)
        yield
    finally:
        if svc:
            os.kill(svc, 9)
            os.waitpid(svc, 0)
        daemon.kill()
        daemon.wait()


def wait_for_bus(cond: Callable[[], bool], daemon: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Until ``cond()``; fails the test if the dbus-daemon exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not cond():
        if daemon.poll() is not None:
            pytest.fail(f"dbus-daemon exited: {daemon.stderr.read().decode() if daemon.stderr else ''}")
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the test bus")
        time.sleep(0.01)
