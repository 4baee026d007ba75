"""Issue 13 items 2 and 7 (last): no path around protection.

``kill: group`` signals members one by one through pidfds, each looked at
just before its signal: members protected by policy (or at -1000) are
spared and logged; every member signalled is logged; no killpg.  A
name-only rule cannot ask for a group kill.  A victim that execs a
protected binary during its grace is not SIGKILLed.

Real processes, our own children in process groups of their own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from helpers import alive

from pyoomd.act.kill import Guard, Killer, KillPlan
from pyoomd.judge.choose import Scoring
from pyoomd.model import Candidate, Excluded, Level, ProcInfo
from pyoomd.policy.load import check_text
from pyoomd.policy.rules import PolicySet
from pyoomd.sense import snapshot
from pyoomd.sense.procfs import Procfs

TAIL = os.path.realpath("/usr/bin/tail")
UID = os.getuid()


def _policy(extra: str = "") -> PolicySet:
    res = check_text("keep.yaml", f"version: 1\nrules:\n  - name: keep-tail\n"
                                  f"    match: {{exe: ['{TAIL}'], user: {UID}}}\n    protect: true\n{extra}")
    assert not res.errors and not res.refused, (res.errors, res.refused)
    return PolicySet(res.rules, ("keep.yaml",))


def _spare(policy: PolicySet) -> Any:
    def spare(p: ProcInfo) -> str | None:
        v = Scoring(policy).evaluate(p)
        return v.why if isinstance(v, Excluded) else None
    return spare


def _wait_gone(pid: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.01)
    return False


def _wait_exe(pid: int, exe: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{pid}/exe") == exe:
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"{pid} did not exec {exe}")


def test_kill_group_spares_the_protected_member_and_logs_each(monkeypatch: pytest.MonkeyPatch) -> None:
    # leader (sh) + `sleep` (not protected) + `tail` (protected by exe + user)
    leader = subprocess.Popen(["/bin/sh", "-c", "sleep 30 & echo $!; tail -f /dev/null & echo $!; wait"],
                              stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert leader.stdout is not None
        sleeper, tail = int(leader.stdout.readline()), int(leader.stdout.readline())
        _wait_exe(tail, TAIL)
        procfs = Procfs("/proc")
        info = snapshot.read_proc(procfs, leader.pid)
        assert info is not None and info.pgid == leader.pid != os.getpgrp()

        def no_killpg(*a: object) -> None:
            raise AssertionError("killpg must not be used")
        monkeypatch.setattr(os, "killpg", no_killpg)
        events: list[tuple[str, dict[str, Any]]] = []
        killer = Killer(procfs, lambda: Level.TERM, lambda ev, **kw: events.append((ev, kw)),
                        guard=Guard(procfs, _spare(_policy())))
        out = killer.kill(Candidate(info, badness=1, kill_group=True), KillPlan(2.0, 2.0, False))
        assert out.exited and out.signals == ("SIGTERM",), (out, events)
        assert _wait_gone(sleeper)
        time.sleep(0.2)
        assert alive(tail), events  # protected by policy: spared
        spared = [kw for ev, kw in events if ev == "group_member_spared"]
        signalled = [kw for ev, kw in events if ev == "group_member_signalled"]
        assert [(s["pid"], s["signal"]) for s in spared] == [(tail, "SIGTERM")], events
        assert "keep-tail" in spared[0]["reason"]
        assert [(s["pid"], s["signal"], s["pgid"]) for s in signalled] == [(sleeper, "SIGTERM", leader.pid)]
    finally:
        monkeypatch.undo()
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()


def test_kill_group_spares_a_minus_1000_member() -> None:
    # -1000 cannot be written here (no CAP_SYS_RESOURCE): the guard reads a
    # procfs whose oom_score_adj of one member says -1000 (the integration
    # scene does it for real with a bind mount).
    leader = subprocess.Popen(["/bin/sh", "-c", "sleep 30 & echo $!; sleep 31 & echo $!; wait"],
                              stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert leader.stdout is not None
        a, b = int(leader.stdout.readline()), int(leader.stdout.readline())
        procfs = Procfs("/proc")

        class Adj(Procfs):
            def read_pid(self, pid: int, name: str, limit: int) -> bytes:
                if pid == b and name == "oom_score_adj":
                    return b"-1000\n"
                return super().read_pid(pid, name, limit)
        fake = Adj("/proc")
        info = snapshot.read_proc(procfs, leader.pid)
        assert info is not None
        events: list[tuple[str, dict[str, Any]]] = []
        killer = Killer(procfs, lambda: Level.TERM, lambda ev, **kw: events.append((ev, kw)), guard=Guard(fake))
        out = killer.kill(Candidate(info, badness=1, kill_group=True), KillPlan(2.0, 2.0, False))
        assert out.exited, (out, events)
        assert _wait_gone(a) and alive(b)
        assert [kw["pid"] for ev, kw in events if ev == "group_member_spared"] == [b]
        assert "-1000" in next(kw["reason"] for ev, kw in events if ev == "group_member_spared")
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()


def test_dry_run_group_kill_names_who_would_go_and_who_is_spared() -> None:
    leader = subprocess.Popen(["/bin/sh", "-c", "sleep 30 & echo $!; tail -f /dev/null & echo $!; wait"],
                              stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert leader.stdout is not None
        sleeper, tail = int(leader.stdout.readline()), int(leader.stdout.readline())
        _wait_exe(tail, TAIL)
        procfs = Procfs("/proc")
        info = snapshot.read_proc(procfs, leader.pid)
        assert info is not None
        events: list[tuple[str, dict[str, Any]]] = []
        killer = Killer(procfs, lambda: Level.TERM, lambda ev, **kw: events.append((ev, kw)),
                        guard=Guard(procfs, _spare(_policy())))
        out = killer.kill(Candidate(info, badness=1, kill_group=True), KillPlan(2.0, 2.0, True))
        assert out.dry_run and alive(sleeper) and alive(tail)
        assert [kw["pid"] for ev, kw in events if ev == "group_member_signalled"] == [sleeper]
        assert [kw["pid"] for ev, kw in events if ev == "group_member_spared"] == [tail]
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()


@pytest.mark.parametrize("kill", ["group", "cgroup"])
@pytest.mark.parametrize("allow", ["", "\n    allow_name_only: true"])
def test_a_name_only_rule_cannot_ask_for_a_group_kill(kill: str, allow: str) -> None:
    res = check_text("g.yaml", f"version: 1\nrules:\n  - name: make-jobs\n    match: {{comm: '^make$'}}\n"
                               f"    adjust: 100\n    kill: {kill}{allow}\n")
    assert not res.errors and res.rules == ()
    assert len(res.refused) == 1
    f = res.refused[0]
    assert (f.file, f.line) == ("g.yaml", 3)
    assert f"kill: {kill}" in f.message and "pin exe, user or cgroup" in f.message
    pinned = check_text("g.yaml", f"version: 1\nrules:\n  - name: make-jobs\n"
                                  f"    match: {{comm: '^make$', user: 1000}}\n    kill: {kill}\n")
    assert not pinned.refused and len(pinned.rules) == 1


# -- item 7 (last): the last look before each signal ------------------------------------
EXEC_TAIL = f"""
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)   # inherited by the exec'd program
sys.stdout.write('ready\\n'); sys.stdout.flush()
time.sleep(0.4)
os.execv({TAIL!r}, [{TAIL!r}, '-f', '/dev/null'])
"""


def test_a_victim_that_execs_a_protected_binary_during_its_grace_is_not_sigkilled() -> None:
    child = subprocess.Popen([sys.executable, "-c", EXEC_TAIL], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        procfs = Procfs("/proc")
        info = snapshot.read_proc(procfs, child.pid)
        assert info is not None and info.exe != TAIL
        policy = _policy()
        assert isinstance(Scoring(policy).evaluate(info), Candidate)  # a candidate when chosen
        events: list[tuple[str, dict[str, Any]]] = []
        killer = Killer(procfs, lambda: Level.TERM, lambda ev, **kw: events.append((ev, kw)),
                        guard=Guard(procfs, _spare(policy)))
        out = killer.kill(Candidate(info, badness=1), KillPlan(grace_s=1.5, kill_timeout_s=1.0, dry_run=False))
        assert out.signals == ("SIGTERM",) and out.skipped and "spared before SIGKILL" in out.skipped, (out, events)
        assert "keep-tail" in out.skipped
        time.sleep(0.2)
        assert alive(child.pid) and os.readlink(f"/proc/{child.pid}/exe") == TAIL
        assert [ev for ev, _ in events] == ["escalate", "kill_spared"]
    finally:
        child.kill()
        child.wait()


def test_a_victim_that_became_minus_1000_or_was_replaced_gets_no_first_signal() -> None:
    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        procfs = Procfs("/proc")
        info = snapshot.read_proc(procfs, child.pid)
        assert info is not None

        class Adj(Procfs):
            def read_pid(self, pid: int, name: str, limit: int) -> bytes:
                return b"-1000\n" if name == "oom_score_adj" else super().read_pid(pid, name, limit)
        events: list[tuple[str, dict[str, Any]]] = []
        killer = Killer(procfs, lambda: Level.TERM, lambda ev, **kw: events.append((ev, kw)),
                        guard=Guard(Adj("/proc")))
        out = killer.kill(Candidate(info, badness=1), KillPlan(1.0, 1.0, False))
        assert out.skipped and "-1000" in out.skipped and not out.signals
        assert [ev for ev, _ in events] == ["kill_spared"] and alive(child.pid)
        # identity: a different start time (the pid reused) is never signalled either
        g = Guard(procfs)
        assert g.recheck(child.pid, info.start_time + 1) == (None, "pid reused by another process")
    finally:
        child.kill()
        child.wait()
