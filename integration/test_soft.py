"""Soft actions with real processes in a private PID namespace: a policy's
``action: {run: [...]}`` whose program makes the hog release its memory
(the hog frees everything on SIGUSR1) leaves nothing to kill: no SIGTERM
is sent; one whose program does not help is followed by the kill after
the grace."""

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

NOBODY = 65534


@pytest.fixture
def action_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pyoomd-it-soft-"))
    os.chmod(d, 0o755)  # root-owned, not writable by others: pyoomd refuses other programs
    (d / "out").mkdir()
    os.chmod(d / "out", 0o777)  # the programs run as the victim's user
    (d / "shrink").write_text(f'#!/bin/sh\nenv > {d}/out/env.shrink\nid -u > {d}/out/uid.shrink\n'
                              'kill -USR1 "$PYOOMD_PID"\n')
    (d / "useless").write_text(f'#!/bin/sh\nenv > {d}/out/env.useless\n')
    for name in ("shrink", "useless"):
        (d / name).chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _env(path: Path) -> dict[str, str]:
    deadline = time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)
    time.sleep(0.1)
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _policy(program: Path, grace: str = "5s") -> dict[str, str]:
    return {"soft.yaml": f"""version: 1
rules:
  - name: ask-softhog
    match: {{comm: "^softhog$"}}
    action: {{run: [{program}]}}
    grace: {grace}
"""}


def test_a_run_action_that_makes_the_hog_free_its_memory_prevents_the_kill(action_dir: Path) -> None:
    # The hog holds 2000 MiB at once and grows past TERM (2200 below MemAvailable
    # at start): when it frees all of it, at least 2200 - LATE_FREE_MIB shows as
    # available at once, well above TERM.  KILL is out of reach.  The hog runs as
    # nobody: the program runs as the victim's user, so it may signal it.
    r = run_scenario({
        "term_below_mib": 2200, "kill_below_mib": 2200 + MARGIN_MIB + 700, "timeout": 30,
        "hogs": [{"rate": 256, "start": 2000, "max": 2200 + MARGIN_MIB, "hold": 8, "comm": "softhog",
                  "free_on_usr1": True, "user": NOBODY}],
        "policies": _policy(action_dir / "shrink"),
    })
    hog = r["hogs"][0]
    soft = events(r, "soft_action")
    assert len(soft) == 1, r["log_tail"]
    assert soft[0]["pid"] == hog["pid"] and soft[0]["rule"] == "ask-softhog" and soft[0]["action"] == "run"
    assert soft[0]["outcome"] == "recovered", soft[0]
    assert soft[0]["returncode"] in (0, None)
    assert not events(r, "kill"), r["log_tail"]  # no signal sent by pyoomd
    assert hog["returncode"] == 0, r["log_tail"]  # it lived on and exited after its hold
    env = _env(action_dir / "out" / "env.shrink")
    assert env["PYOOMD_PID"] == str(hog["pid"]) and env["PYOOMD_COMM"] == "softhog"
    assert env["PYOOMD_UID"] == str(NOBODY) and (action_dir / "out" / "uid.shrink").read_text().strip() == str(NOBODY)
    assert env["PYOOMD_ACTION"] == "run" and env["PYOOMD_DRY_RUN"] == "0"
    print(f"soft action: recovered in {soft[0]['ms']} ms, MemAvailable {soft[0]['mem_available_kib'] // 1024} MiB "
          f"(TERM {r['term_kib'] // 1024} MiB)")


def test_a_run_action_that_does_not_help_is_followed_by_the_kill(action_dir: Path) -> None:
    # The hog takes 600 + MARGIN_MIB at once, so within a fraction of the
    # grace it is MARGIN_MIB past TERM: memory that comes back late on this VM
    # (up to LATE_FREE_MIB) or a neighbour's exit cannot lift MemAvailable
    # back above TERM during the grace and make the useless action look like
    # a recovery (on a busy machine it did, 267 ms in, with the hog growing
    # 256 MiB/s from just past TERM).  KILL stays MARGIN_MIB beyond the hog.
    r = run_scenario({
        "term_below_mib": 600, "kill_below_mib": 600 + 2 * MARGIN_MIB + 100, "timeout": 30,
        "hogs": [{"rate": 256, "max": 600 + MARGIN_MIB + 100, "start": 600 + MARGIN_MIB, "hold": 20,
                  "comm": "softhog"}],
        "policies": _policy(action_dir / "useless", grace="2s"),
        "stop_after_hog_deaths": 1,
    })
    hog = r["hogs"][0]
    soft = events(r, "soft_action")
    assert len(soft) == 1 and soft[0]["outcome"] == "not recovered", r["log_tail"]
    assert soft[0]["ms"] >= 2000 and soft[0]["returncode"] == 0
    kills = events(r, "kill")
    assert [k["pid"] for k in kills] == [hog["pid"]] and kills[0]["signal"] == "SIGTERM", r["log_tail"]
    assert kills[0]["_t"] >= soft[0]["_t"]
    assert hog["returncode"] == -15, r["log_tail"]
    assert _env(action_dir / "out" / "env.useless")["PYOOMD_PID"] == str(hog["pid"])


def test_restart_unit_asks_systemd_to_restart_the_victims_service(tmp_path: Path) -> None:
    """The hog runs in a cgroup named like a service (below our own); a fake
    systemd Manager on a dbus-daemon the scene starts records RestartUnit and
    "restarts" the service (SIGUSR1: the hog frees what it holds)."""
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed (Debian: apt-get install dbus-daemon)")
    record = tmp_path / "systemd.jsonl"
    r = run_scenario({
        "test_bus": True, "fake_systemd": str(record), "v2_cgroup": True, "v2_cgroup_suffix": ".service",
        "config_yaml": "soft_actions: {system_bus: '{bus}'}\nlow_memory_monitor: {enabled: false}\n",
        "term_below_mib": 2200, "kill_below_mib": 2200 + MARGIN_MIB + 700, "timeout": 30,
        "hogs": [{"rate": 256, "start": 2000, "max": 2200 + MARGIN_MIB, "hold": 8, "comm": "unithog",
                  "free_on_usr1": True, "in_cgroup": True}],
        "policies": {"unit.yaml": """version: 1
rules:
  - name: restart-unithog
    match: {comm: "^unithog$"}
    action: restart-unit
"""},
    })
    unit = r["v2_cgroup_path"].rsplit("/", 1)[1]
    assert unit.endswith(".service")
    calls = [json.loads(line) for line in record.read_text().splitlines() if line != "ready"]
    assert calls == [{"unit": unit, "mode": "replace"}], r["log_tail"]
    soft = events(r, "soft_action")
    assert len(soft) == 1 and soft[0]["action"] == "restart-unit" and soft[0]["unit"] == unit, r["log_tail"]
    assert soft[0]["job"] == "/org/freedesktop/systemd1/job/1" and soft[0]["outcome"] == "recovered", soft[0]
    assert not events(r, "kill"), r["log_tail"]
    assert r["hogs"][0]["returncode"] == 0, r["log_tail"]
