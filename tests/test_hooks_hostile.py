"""Hooks against hostile victims and hostile hooks (issue 13, item 5): a
64 KiB cmdline of invalid UTF-8 still reaches the hook (bounded, marked
truncated); a hook's output never reaches the daemon's log stream raw; a
hook's setsid child does not survive the timeout (a cgroup per hook)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fuzzing import fuzz
from helpers import hook_kill, hook_runner
from hypothesis import given
from hypothesis import strategies as st

from pyoomd.act.hooks import ENV_MAX_BYTES, HookCgroups, hook_env
from pyoomd.sense.procfs import Procfs
from pyoomd.sense.snapshot import read_proc

DUMP = ["/bin/sh", "-c", 'env -0 > "$1/env.tmp" && mv "$1/env.tmp" "$1/env"', "hook"]
FORGED = '{"event": "kill", "pid": 1, "comm": "systemd", "level": "warning", "timestamp": "2026-01-01T00:00:00Z"}'


@pytest.fixture
def outdir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="pyoomd-hooks-")  # hooks run as nobody under root: not pytest's 0700 tree
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _wait(pred: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_64k_cmdline_of_invalid_utf8_still_runs_the_hook_bounded(outdir: str) -> None:
    # A real process whose cmdline is 64 KiB of \xff, read as the daemon reads it.
    victim = subprocess.Popen([sys.executable.encode(), b"-c", b"import time; time.sleep(60)", b"\xff" * 65536])
    try:
        _wait(lambda: len(Path(f"/proc/{victim.pid}/cmdline").read_bytes()) > 65536)
        info = read_proc(Procfs("/proc"), victim.pid, full=True)
        assert info is not None and len(info.cmdline.encode()) > 128 * 1024  # beyond MAX_ARG_STRLEN
        runner, logged = hook_runner(pre_kill=[[*DUMP, outdir]])
        hook_kill(runner, {"pid": info.pid, "comm": info.comm, "cmdline": info.cmdline, "uid": info.uid,
                                 "signal": "SIGTERM", "reason": "test", "dry_run": True})
        env_file = Path(outdir, "env")
        _wait(env_file.exists)
    finally:
        victim.kill()
        victim.wait()
    env = dict(kv.split(b"=", 1) for kv in env_file.read_bytes().split(b"\0") if kv)
    assert env[b"PYOOMD_CMDLINE_TRUNCATED"] == b"1" and b"PYOOMD_COMM_TRUNCATED" not in env
    assert len(env[b"PYOOMD_CMDLINE"]) <= ENV_MAX_BYTES
    assert env[b"PYOOMD_CMDLINE"].startswith(info.cmdline[:100].encode())
    assert env[b"EARLYOOM_CMDLINE"] == env[b"PYOOMD_CMDLINE"]
    assert not [e for e in logged if e[0] == "hook_failed"], logged


DAEMON_LIKE = textwrap.dedent("""
    import sys, threading, time
    from pyoomd.report import log
    from pyoomd.act.hooks import HookRunner
    from pyoomd.settings.load import validate
    from pyoomd.settings.schema import HooksConfig
    log.configure("json", sys.stderr)
    logger = log.get_logger()
    cfg = validate(HooksConfig, {"pre_kill": [["/bin/sh", "-c", sys.argv[1]]],
                                 "post_kill": [["/bin/sh", "-c", sys.argv[1]]]})
    r = HookRunner(cfg, lambda ev, **kw: logger.warning(ev, **kw))
    kill = {"pid": 4242, "comm": "hog", "cmdline": sys.argv[2], "dry_run": True}
    r.on_event("kill", kill)
    r.pre_kill(kill)  # the act stage's pre-kill step
    deadline = time.monotonic() + 20
    time.sleep(0.2)  # the post_kill worker picks its job up
    while any(t.name == "pyoomd-hook-reap" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
""")


@pytest.mark.parametrize("script", ['printf "%s\\n" "$PYOOMD_CMDLINE"', 'printf "%s\\n" "$PYOOMD_CMDLINE" >&2',
                                    'head -c 100000 /dev/zero | tr "\\0" x; printf "\\n%s\\n" "$PYOOMD_CMDLINE"'])
def test_a_hook_echoing_a_forged_kill_line_gives_only_a_hook_output_event(script: str) -> None:
    r = subprocess.run([sys.executable, "-c", DAEMON_LIKE, script, FORGED], capture_output=True, timeout=30,
                       check=False)
    assert r.stdout == b""  # the hook's stdout is not the daemon's either
    events = [json.loads(line) for line in r.stderr.decode().splitlines()]  # every line the daemon's JSON
    assert {e["event"] for e in events} == {"hook_output"}, events
    assert len(events) == 2  # pre_kill and post_kill (dry-run)
    for e in events:
        text = e.get("stdout", "") + e.get("stderr", "")
        assert FORGED in text or e.get("stdout_truncated"), e
        assert len(json.dumps(e)) < 16 * 1024  # bounded
    if "head -c" in script:
        assert events[0]["stdout_bytes"] > 100000 and events[0]["stdout_truncated"] is True


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(HookCgroups.probe() is None, reason="no writable cgroup v2 directory below ours")
def test_a_hooks_setsid_child_is_killed_at_the_timeout(outdir: str) -> None:
    child_file = Path(outdir, "child")
    script = 'setsid sleep 60 & echo $! > "$1/child.tmp"; mv "$1/child.tmp" "$1/child"; sleep 30'
    runner, logged = hook_runner(pre_kill=[["/bin/sh", "-c", script, "hook", outdir]], timeout=1.0)
    assert runner.reaping.startswith("cgroup")
    hook_kill(runner, {"pid": 1, "comm": "x", "dry_run": True})
    _wait(child_file.exists)
    child = int(child_file.read_text())
    try:
        assert _alive(child)
        assert os.getsid(child) != os.getsid(0)  # it really left the hook's session
        _wait(lambda: any(e[0] == "hook_timeout" for e in logged), timeout=15)
        _wait(lambda: not _alive(child), timeout=5)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
    timeout = next(kw for ev, kw in logged if ev == "hook_timeout")
    assert timeout["children_killed"] >= 1
    assert not [p for p in os.listdir(runner.cgroups.base) if p.startswith(f"pyoomd-hook.{os.getpid()}.")]


@pytest.mark.skipif(HookCgroups.probe() is None, reason="no writable cgroup v2 directory below ours")
def test_a_child_left_behind_by_a_finished_hook_is_killed_at_the_timeout(outdir: str) -> None:
    script = 'setsid sleep 60 & echo $! > "$1/child.tmp"; mv "$1/child.tmp" "$1/child"'
    runner, logged = hook_runner(post_kill=[["/bin/sh", "-c", script, "hook", outdir]], timeout=1.0)
    hook_kill(runner, {"pid": 1, "comm": "x", "dry_run": True})
    _wait(Path(outdir, "child").exists)
    child = int(Path(outdir, "child").read_text())
    try:
        _wait(lambda: not _alive(child), timeout=10)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
    _wait(lambda: any(e[0] == "hook_timeout" for e in logged))
    assert not [e for e in logged if e[0] == "hook_failed"], logged


def _env_bytes(ch: str) -> bytes:
    try:
        return ch.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return b"?"


@fuzz(dev=60, ci=1_000, slow=True)  # a real execve each
@given(fields=st.fixed_dictionaries({k: st.text(alphabet=st.one_of(st.characters(), st.sampled_from("\xff\ufffd\x00\n")),
                                                max_size=40)
                                     for k in ("comm", "cmdline", "reason", "signal")}),
       blow=st.one_of(st.just(1), st.integers(1, 5000)))
def test_hook_env_is_always_bounded_and_execs(fields: dict[str, str], blow: int) -> None:
    fields = {k: v * blow for k, v in fields.items()}
    env = hook_env(fields, "exited")
    for name, key in (("COMM", "comm"), ("CMDLINE", "cmdline"), ("REASON", "reason"), ("SIGNAL", "signal")):
        value = env[f"PYOOMD_{name}"]
        raw = value.encode("utf-8", "surrogateescape")
        assert len(raw) <= ENV_MAX_BYTES and "\0" not in value
        # what the environment can carry: raw bytes (U+DC80..U+DCFF, surrogateescape)
        # as themselves, any other lone surrogate as "?"
        original = b"".join(_env_bytes(c) for c in fields[key].replace("\0", " "))
        assert original.startswith(raw)
        assert (f"PYOOMD_{name}_TRUNCATED" in env) == (len(original) > ENV_MAX_BYTES)
    subprocess.run(["/bin/true"], env=env, check=True)  # execve takes it (no E2BIG)


def test_without_a_cgroup_the_process_group_is_killed_and_a_setsid_child_is_not(outdir: str) -> None:
    """The fallback (no writable cgroup v2, or not root), as README says:
    the hook's process group dies at the timeout, its output is still
    captured, and a child that called setsid is not reaped."""
    script = ('echo started; sleep 30 & echo $! > "$1/grp.tmp"; mv "$1/grp.tmp" "$1/grp"; '
              'setsid sleep 60 & echo $! > "$1/child.tmp"; mv "$1/child.tmp" "$1/child"; sleep 30')
    runner, logged = hook_runner(pre_kill=[["/bin/sh", "-c", script, "hook", outdir]], timeout=1.0)
    runner.cgroups = None
    hook_kill(runner, {"pid": 1, "comm": "x", "dry_run": True})
    _wait(lambda: Path(outdir, "child").exists() and Path(outdir, "grp").exists())
    child, grp = int(Path(outdir, "child").read_text()), int(Path(outdir, "grp").read_text())
    try:
        _wait(lambda: any(e[0] == "hook_timeout" for e in logged), timeout=15)
        _wait(lambda: not _alive(grp), timeout=5)  # in the hook's process group: killed
        assert _alive(child)  # left it with setsid: not reaped (documented)
    finally:
        for pid in (child, grp):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    _wait(lambda: any(e[0] == "hook_output" for e in logged))
    out = next(kw for ev, kw in logged if ev == "hook_output")
    assert out["stdout"] == "started\n"
    assert "children_killed" not in next(kw for ev, kw in logged if ev == "hook_timeout")


@pytest.mark.skipif(HookCgroups.probe() is None, reason="no writable cgroup v2 directory below ours")
def test_hooks_still_running_when_the_daemon_exits_are_killed_and_their_cgroups_removed(outdir: str) -> None:
    code = textwrap.dedent("""
        import os, sys, time
        from pathlib import Path
        from pyoomd.act.hooks import HookRunner
        from pyoomd.settings.load import validate
        from pyoomd.settings.schema import HooksConfig
        script = 'setsid sleep 60 & echo $! > "$1/child.tmp"; mv "$1/child.tmp" "$1/child"; sleep 60'
        cfg = validate(HooksConfig, {"pre_kill": [["/bin/sh", "-c", script, "hook", sys.argv[1]]]})
        r = HookRunner(cfg, lambda *a, **k: None)
        r.on_event("kill", {"pid": 1, "comm": "x", "dry_run": True})
        r.pre_kill({"pid": 1, "comm": "x", "dry_run": True})  # the act stage's pre-kill step
        while not Path(sys.argv[1], "child").exists():
            time.sleep(0.02)
        print(r.cgroups.base, os.getpid())
    """)
    r = subprocess.run([sys.executable, "-c", code, outdir], capture_output=True, timeout=30, check=True)
    base, pid = r.stdout.decode().split()
    child = int(Path(outdir, "child").read_text())
    try:
        _wait(lambda: not _alive(child), timeout=5)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
    assert not [p for p in os.listdir(base) if p.startswith(f"pyoomd-hook.{pid}.")], os.listdir(base)


def test_raw_bytes_reach_the_hook_as_bytes_and_a_cut_is_a_byte_prefix() -> None:
    # U+DC80 is the byte 0x80 of a non-UTF-8 comm (surrogateescape): it
    # passes as that byte, cut or not; only other lone surrogates become "?".
    env = hook_env({"comm": "\udc80x", "cmdline": "\ud800y", "signal": "SIGTERM"}, "exited")
    assert env["PYOOMD_COMM"].encode("utf-8", "surrogateescape") == b"\x80x"
    assert env["PYOOMD_CMDLINE"] == "?y"
    long = ("\udcff" + "\u00e9") * ENV_MAX_BYTES
    value = hook_env({"cmdline": long}, None)["PYOOMD_CMDLINE"]
    raw = value.encode("utf-8", "surrogateescape")
    assert len(raw) == ENV_MAX_BYTES and long.encode("utf-8", "surrogateescape").startswith(raw)
