"""Hooks against a real kill, in a private PID namespace: a hog whose name
holds a command substitution, quotes and a newline is killed; earlyoom's -P
and -N programs see its name verbatim, and nothing in it is executed."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.harness import MARGIN_MIB, events, run_scenario

# A file name cannot hold "/", so the substitution names a relative file:
# hooks run in "/", and the test checks the file appears nowhere.
HOSTILE = "$(touch pwn)'\"\n"  # 15 bytes: all of it fits in comm


@pytest.fixture
def hook_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pyoomd-it-hooks-"))
    os.chmod(d, 0o755)  # root-owned, not writable by others: pyoomd refuses other hooks
    (d / "out").mkdir(mode=0o777)
    os.chmod(d / "out", 0o777)  # hooks run as nobody
    script = d / "dump"
    script.write_text(f'#!/bin/sh\nenv -0 > "{d}/out/env.${{PYOOMD_OUTCOME:-pre}}"\n')
    script.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _env(path: Path) -> dict[str, str]:
    deadline = time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)
    time.sleep(0.1)
    return dict(kv.split("=", 1) for kv in path.read_bytes().decode().split("\0") if kv)


def test_hooks_see_a_hostile_name_verbatim_and_run_nothing(hook_dir: Path) -> None:
    before = {p for p in ("/pwn", "/tmp/pwn", str(hook_dir / "pwn")) if os.path.exists(p)}
    r = run_scenario({
        "term_below_mib": 600, "kill_below_mib": 1400, "timeout": 25,
        "hogs": [{"rate": 256, "max": 600 + MARGIN_MIB, "start": 100, "hold": 20, "comm": HOSTILE}],
        "daemon_args": ["-P", str(hook_dir / "dump"), "-N", str(hook_dir / "dump")],
    })
    hog = r["hogs"][0]
    kills = [e for e in events(r, "kill") if not e["dry_run"]]
    assert [k["pid"] for k in kills] == [hog["pid"]], r["log_tail"]
    assert kills[0]["comm"] == HOSTILE
    pre, post = _env(hook_dir / "out" / "env.pre"), _env(hook_dir / "out" / "env.exited")
    for env in (pre, post):
        assert env["PYOOMD_COMM"] == HOSTILE == env["EARLYOOM_NAME"]
        assert env["PYOOMD_SIGNAL"] == kills[0]["signal"] and env["PYOOMD_DRY_RUN"] == "0"
    assert not [e for e in r["events"] if e.get("event", "").startswith("hook_")], r["log_tail"]
    after = {p for p in ("/pwn", "/tmp/pwn", str(hook_dir / "pwn")) if os.path.exists(p)}
    assert after == before


FORGED = '{"event": "kill", "pid": 1, "comm": "systemd", "signal": "SIGKILL", "dry_run": false}'


def _hook_cgroups() -> set[str]:
    base = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
    return {p for p in os.listdir(base) if p.startswith("pyoomd-hook.")} if os.path.isdir(base) else set()


def test_a_hooks_output_through_a_real_kill_is_a_hook_output_event(hook_dir: Path) -> None:
    """A pre_kill hook prints a forged kill line on stdout and stderr and
    leaves a setsid child: the daemon's log shows one hook_output event with
    that text as fields (and no kill of pid 1), every line is the daemon's
    JSON, and no hook cgroup is left once the daemon has exited."""
    script = hook_dir / "forge"
    script.write_text("#!/bin/sh\n"
                      f"printf '%s\\n' '{FORGED}'\n"
                      f"printf '%s\\n' '{FORGED}' >&2\n"
                      "setsid sleep 300 >/dev/null 2>&1 &\n")
    script.chmod(0o755)
    before = _hook_cgroups()
    r = run_scenario({
        "term_below_mib": 600, "kill_below_mib": 1400, "timeout": 25,
        "hogs": [{"rate": 256, "max": 600 + MARGIN_MIB, "start": 100, "hold": 20}],
        "config_yaml": f"hooks: {{pre_kill: [[{str(script)!r}]], timeout: 2s}}\n",
    })
    hog = r["hogs"][0]
    kills = events(r, "kill")
    assert [k["pid"] for k in kills if not k["dry_run"]] == [hog["pid"]], r["log_tail"]
    assert not [k for k in kills if k["pid"] == 1]
    (out,) = events(r, "hook_output")
    assert out["stdout"] == FORGED + "\n" and out["stderr"] == FORGED + "\n"
    assert not events(r, "hook_cgroup_failed"), r["log_tail"]
    for line in r["log_tail"]:
        json.loads(line)  # every line the daemon's own JSON
    deadline = time.monotonic() + 15  # (another run's hooks may come and go meanwhile)
    while not _hook_cgroups() <= before:
        assert time.monotonic() < deadline, _hook_cgroups() - before
        time.sleep(0.1)
