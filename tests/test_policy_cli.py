"""check, explain, rank --policy, run with a bad policy (exit 78), and
``kill: group`` on a real process group of our own children."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyoomd.act.kill import Killer, KillPlan
from pyoomd.errors import EXIT_CONFIG, EXIT_OK
from pyoomd.model import Candidate, Level
from pyoomd.sense import snapshot
from pyoomd.sense.procfs import Procfs

sys.path.insert(0, str(Path(__file__).parent))
from helpers import FakeProc, alive, build, run_main

pytestmark = pytest.mark.usefixtures("no_daemon_loop")  # conftest.py: no test reaches the loop

POLICIES = Path(__file__).resolve().parent.parent / "policies"




def write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o644)
    return path


# -- check ---------------------------------------------------------------------------
def test_check_valid_files_exit_0_and_say_where_they_apply(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "a.yaml", "version: 1\nrules: [{name: a, match: {comm: x}, adjust: 1}]\n")
    write(tmp_path / "b.yaml", "version: 1\nhosts: ['db-*']\nrules: []\n")
    assert run_main(["check", "--host", "web-1", str(tmp_path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"{tmp_path}/a.yaml: ok, 1 rules; applies to host web-1" in out
    assert f"{tmp_path}/b.yaml: ok, 0 rules; skipped" in out


def test_check_errors_are_file_line_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path / "bad.yaml", "version: 1\nrules:\n  - name: r\n    match: {comm: '('}\n    adjust: 1\n")
    assert run_main(["check", str(f)]) == EXIT_CONFIG
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"{f}:4:19: rule 'r': match.comm: invalid regex")


def test_check_warns_on_name_only_protection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path / "w.yaml", "version: 1\nrules:\n  - {name: k, match: {comm: sshd}, protect: true}\n")
    assert run_main(["check", str(f)]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"{f}:3:5: warning: rule 'k' protects on process names alone" in out
    assert run_main(["check", "--strict", str(f)]) == EXIT_CONFIG


def test_check_shipped_policies(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["check", "--strict", str(POLICIES)]) == EXIT_OK
    assert "warning" not in capsys.readouterr().out


def test_check_missing_path_and_empty_dir(tmp_path: Path) -> None:
    assert run_main(["check", str(tmp_path / "nope")]) == EXIT_CONFIG
    assert run_main(["check", str(tmp_path)]) == EXIT_CONFIG  # no file at all is not "valid"


# -- run: invalid policies stop the start with 78 ------------------------------------
def test_run_with_invalid_policy_exits_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path / "bad.yaml", "version: 1\nrules: [{name: r, match: {comm: x}, adjsut: 1}]\n")
    argv = ["--procfs", str(tmp_path), "run", "--dry-run", "--log-format", "json", "--policy", str(f)]
    assert run_main(argv) == EXIT_CONFIG
    assert f"{f}:2:" in capsys.readouterr().err


def test_run_with_missing_policy_path_exits_78(tmp_path: Path) -> None:
    argv = ["run", "--dry-run", "--log-format", "json", "--policy", str(tmp_path / "nope")]
    assert run_main(argv) == EXIT_CONFIG


# -- rank and explain over a fake /proc -------------------------------------------------
PREFER = """\
version: 1
rules:
  - {name: prefer-tabs, match: {comm: "^tab$", cmdline: "--type=renderer"}, adjust: 400}
  - {name: keep-db, match: {exe: /usr/bin/db, user: 0}, protect: true}
  - {name: from-cron, match: {parent: "^cron$"}, adjust: 5}
"""


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Procfs, Path]:
    procs = [
        FakeProc(5_000_001, 800, comm=b"db", exe="/usr/bin/db", uid=0),
        FakeProc(5_000_002, 500, comm=b"big"),
        FakeProc(5_000_003, 200, comm=b"tab", cmdline=b"/opt/tab\0--type=renderer\0"),
        FakeProc(5_000_004, 100, comm=b"never", adj=-1000),
    ]
    procfs = build(tmp_path / "proc", procs)
    policy = write(tmp_path / "p.yaml", PREFER)
    return procfs, policy


def test_rank_with_policy_shows_badness_and_rules(fake: tuple[Procfs, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    procfs, policy = fake
    argv = ["--procfs", procfs.root, "rank", "--json", "--policy", str(policy), "--config", os.devnull]
    assert run_main(argv) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert [(c["pid"], c["badness"], c["rules"]) for c in data["candidates"]] == [
        (5_000_003, 600, ["prefer-tabs"]), (5_000_002, 500, [])]
    why = {e["pid"]: e["why"] for e in data["excluded"]}
    assert "keep-db" in why[5_000_001] and "-1000" in why[5_000_004]
    assert run_main(["--procfs", procfs.root, "rank", "--policy", str(policy), "--config", os.devnull]) == 0
    assert "prefer-tabs" in capsys.readouterr().out


def test_explain(fake: tuple[Procfs, Path], capsys: pytest.CaptureFixture[str]) -> None:
    procfs, policy = fake
    pids = ["5000003", "5000001", "5000004", "5000099"]
    argv = ["--procfs", procfs.root, "explain", "--json", "--policy", str(policy), "--config", os.devnull]
    assert run_main([*argv, *pids]) == EXIT_OK
    tab, db, never, gone = json.loads(capsys.readouterr().out)
    assert (tab["oom_score"], tab["badness"], tab["rank"], tab["of"]) == (200, 600, 1, 2)
    assert tab["rules"] == [{"name": "prefer-tabs", "file": str(policy), "line": 3, "effects": ["adjust +400"]}]
    assert db["rules"][0]["effects"] == ["protect"] and "keep-db" in db["why"]
    assert never["oom_score_adj"] == -1000 and "-1000" in never["why"]
    assert gone["found"] is False
    text_argv = ["--procfs", procfs.root, "explain", "--policy", str(policy), "--config", os.devnull, *pids]
    assert run_main(text_argv) == 1  # one pid was not found
    out = capsys.readouterr().out
    assert "rule prefer-tabs" in out and "badness 600  rank 1 of 2" in out


def test_parent_comm_is_read_for_detailed_processes(tmp_path: Path) -> None:
    procfs = build(tmp_path / "proc", [FakeProc(5_000_010, 10)])
    (tmp_path / "proc" / "1").mkdir()
    (tmp_path / "proc" / "1" / "comm").write_text("cron\n")
    info = snapshot.read_proc(procfs, 5_000_010)
    assert info is not None and info.parent_comm == "cron"
    assert snapshot.read_proc(procfs, 5_000_010, full=False).parent_comm is None  # type: ignore[union-attr]


# -- kill: group, on our own children -----------------------------------------------------
def test_kill_group_signals_the_whole_group_of_the_verified_victim() -> None:
    leader = subprocess.Popen(["/bin/sh", "-c", "sleep 30 & echo $!; wait"], stdout=subprocess.PIPE,
                              start_new_session=True)
    try:
        assert leader.stdout is not None
        member = int(leader.stdout.readline())
        procfs = Procfs("/proc")
        info = snapshot.read_proc(procfs, leader.pid)
        assert info is not None and info.pgid == leader.pid != os.getpgrp()
        events: list[tuple[str, dict[str, object]]] = []
        killer = Killer(procfs, lambda: Level.TERM, lambda ev, **kw: events.append((ev, kw)))
        victim = Candidate(info, badness=1, kill_group=True)
        out = killer.kill(victim, KillPlan(grace_s=2.0, kill_timeout_s=2.0, dry_run=False))
        assert out.exited and out.signals == ("SIGTERM",), (out, events)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and alive(member):
            time.sleep(0.01)
        assert not alive(member)  # the group member got the SIGTERM too
    finally:
        if leader.poll() is None:
            os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()


def test_kill_group_refuses_our_own_group() -> None:
    child = subprocess.Popen(["sleep", "30"])  # same process group as the tests
    try:
        info = snapshot.read_proc(Procfs("/proc"), child.pid)
        assert info is not None and info.pgid == os.getpgrp()
        events: list[tuple[str, dict[str, object]]] = []
        killer = Killer(Procfs("/proc"), lambda: Level.TERM, lambda ev, **kw: events.append((ev, kw)))
        out = killer.kill(Candidate(info, badness=1, kill_group=True), KillPlan(2.0, 2.0, False))
        assert out.exited  # the victim alone; we are still here to check
        assert [e for e, _ in events] == ["group_kill_refused"]
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
