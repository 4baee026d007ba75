"""pre_kill / post_kill hooks: argv only, the victim in the environment
verbatim, bounded waits, no capabilities passed on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import hook_kill, hook_runner

from pyoomd.act.hooks import hook_env
from pyoomd.sense.procfs import Procfs
from pyoomd.sense.snapshot import read_proc
from pyoomd.settings.load import settings_from_dict, validate
from pyoomd.settings.schema import HooksConfig

# comm holds at most 15 bytes: exactly this; the cmdline carries the rest.
HOSTILE_COMM = "$(touch /tmp/x)"
HOSTILE_ARGV0 = "$(touch /tmp/x)'\"\n;`touch /tmp/x`; touch /tmp/x #"
PWNED = "/tmp/x"
# The hook writes its environment (NUL-separated) and its own credentials.
DUMP = ["/bin/sh", "-c", 'env -0 > "$1/env.$PYOOMD_OUTCOME"; cat /proc/self/status > "$1/status"', "hook"]


@pytest.fixture
def outdir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="pyoomd-hooks-")  # not under pytest's 0700 tree: `nobody` writes here
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    code = ("import ctypes, sys, time; ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0); "
            "sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(60)")
    p = subprocess.Popen([HOSTILE_ARGV0, "-c", code, HOSTILE_COMM], executable=sys.executable,
                         stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline() == b"ready\n"
    yield p
    p.kill()
    p.wait()


def _env(path: Path) -> dict[str, str]:
    items = [kv.split("=", 1) for kv in path.read_bytes().decode().split("\0") if kv]
    return {k: v for k, v in items}


def _wait_file(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.01)
    time.sleep(0.05)


def test_hostile_victim_name_reaches_the_hook_verbatim_and_runs_nothing(
        victim: subprocess.Popen[bytes], outdir: str) -> None:
    existed = os.path.exists(PWNED)
    info = read_proc(Procfs("/proc"), victim.pid, full=True)
    assert info is not None and info.comm == HOSTILE_COMM
    fields = {"pid": info.pid, "comm": info.comm, "cmdline": info.cmdline, "uid": info.uid,
              "rss_kib": info.rss_kib, "signal": "SIGTERM", "reason": "test", "dry_run": False, "level": "TERM"}
    runner, logged = hook_runner(pre_kill=[[*DUMP, outdir]], post_kill=[[*DUMP, outdir]])
    hook_kill(runner, fields)
    victim.kill()
    victim.wait()
    runner.on_event("victim_exited", {"pid": info.pid, "comm": info.comm})
    _wait_file(Path(outdir, "env."))
    _wait_file(Path(outdir, "env.exited"))
    for name in ("env.", "env.exited"):
        env = _env(Path(outdir, name))
        assert env["PYOOMD_COMM"] == HOSTILE_COMM == env["EARLYOOM_NAME"]
        assert env["PYOOMD_CMDLINE"].startswith(HOSTILE_ARGV0)  # quotes and the newline intact
        assert env["PYOOMD_PID"] == str(victim.pid) and env["PYOOMD_SIGNAL"] == "SIGTERM"
        assert env["PYOOMD_DRY_RUN"] == "0" and env["PYOOMD_UID"] == str(os.getuid())
    assert _env(Path(outdir, "env.exited"))["PYOOMD_OUTCOME"] == "exited"
    assert os.path.exists(PWNED) == existed, "a hook executed the victim's name"
    assert not [e for e in logged if e[0] != "hook_timeout"], logged


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")
def test_hooks_run_as_nobody_without_capabilities(outdir: str) -> None:
    runner, _ = hook_runner(pre_kill=[[*DUMP, outdir]])
    hook_kill(runner, {"pid": 1, "comm": "x", "dry_run": True})
    _wait_file(Path(outdir, "status"))
    status = dict(line.split(":", 1) for line in Path(outdir, "status").read_text().splitlines() if ":" in line)
    assert status["Uid"].split()[0] == "65534"
    assert status["Groups"].strip() == ""
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(status[cap], 16) == 0, (cap, status[cap])
    assert status["NoNewPrivs"].strip() == "1"


def test_pre_kill_wait_is_bounded_and_a_slow_hook_is_killed() -> None:
    runner, logged = hook_runner(pre_kill=[["/bin/sleep", "30"]], pre_kill_wait="200ms", timeout=0.5)
    t0 = time.monotonic()
    hook_kill(runner, {"pid": 1, "comm": "x", "dry_run": False})
    took = time.monotonic() - t0
    assert 0.15 < took < 1.0
    deadline = time.monotonic() + 10
    while not logged and time.monotonic() < deadline:
        time.sleep(0.05)
    assert logged[0][0] == "hook_timeout"


def test_a_failing_or_missing_hook_is_logged_and_vetoes_nothing() -> None:
    runner, logged = hook_runner(pre_kill=[["/bin/false"], ["/nonexistent/hook"]])
    hook_kill(runner, {"pid": 1, "comm": "x", "dry_run": False})
    deadline = time.monotonic() + 10
    while len(logged) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(e[0] for e in logged) == ["hook_failed", "hook_failed"]


def test_dry_run_runs_post_kill_at_once(outdir: str) -> None:
    runner, _ = hook_runner(post_kill=[[*DUMP, outdir]])
    hook_kill(runner, {"pid": 7, "comm": "hog", "dry_run": True, "signal": "SIGTERM"})
    _wait_file(Path(outdir, "env.dry_run"))
    assert _env(Path(outdir, "env.dry_run"))["PYOOMD_DRY_RUN"] == "1"


def test_config_takes_argv_lists_and_refuses_relative_programs() -> None:
    assert validate(HooksConfig, {"pre_kill": "/usr/local/bin/snap"}).pre_kill == (("/usr/local/bin/snap",),)
    assert validate(HooksConfig, {"post_kill": ["/bin/logger", "-t", "oom"]}).post_kill == (("/bin/logger", "-t", "oom"),)
    s = settings_from_dict({"hooks": {"post_kill": [["/a", "1"], ["/b"]]}})
    assert s.hooks.post_kill == (("/a", "1"), ("/b",))
    with pytest.raises(ValueError, match="absolute"):
        validate(HooksConfig, {"pre_kill": "notify-send"})
    with pytest.raises(ValueError):
        validate(HooksConfig, {"pre_kill": [[]]})


def test_env_never_carries_the_daemons_own_environment() -> None:
    os.environ["PYOOMD_SECRET_TEST"] = "1"
    try:
        env = hook_env({"pid": 1, "comm": "a\0b"})
    finally:
        del os.environ["PYOOMD_SECRET_TEST"]
    assert "PYOOMD_SECRET_TEST" not in env and env["PYOOMD_COMM"] == "a b"
