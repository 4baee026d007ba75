"""Soft actions in policies (``action: {run: [...]}`` / ``action:
restart-unit``): schema and compile errors with file:line, the compiled
plan's round trip, explain, the unit found from a cgroup path, and
RestartUnit against a fake systemd Manager on a real dbus-daemon."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import bus_with_service

from pyoomd.act.soft import action_env, restart_unit, unit_of_cgroup
from pyoomd.cli.explain import _action_of
from pyoomd.judge.rank import score
from pyoomd.model import Candidate, ProcInfo
from pyoomd.policy.load import check_text, load_policies
from pyoomd.policy.rules import PolicySet, loaded_from_plan, loaded_to_plan


def proc(comm: str = "java", cgroup: str | None = "/system.slice/app.service", uid: int = 1000) -> ProcInfo:
    return ProcInfo(pid=4242, start_time=1, comm=comm, ppid=1, state="S", uid=uid, rss_kib=1 << 20, swap_kib=0,
                    oom_score=300, oom_score_adj=0, pgid=4242, cmdline="java -jar app.jar", exe="/usr/bin/java",
                    cgroup=cgroup, parent_comm="systemd")


def check(body: str) -> object:
    return check_text("p.yaml", textwrap.dedent(body).lstrip("\n"), None, lambda n: None)


RUN_AND_RESTART = """
version: 1
rules:
  - name: ask-java
    match: {comm: "^java$"}
    action: {run: [/bin/true, --shrink]}
  - name: restart-app
    match: {cgroup: /system.slice/app.service}
    action: restart-unit
    grace: 3s
"""


def test_run_and_restart_unit_compile_and_the_first_matching_rule_decides() -> None:
    res = check(RUN_AND_RESTART)
    assert not res.errors and not res.refused, [str(e) for e in res.errors]
    rules = {r.name: r for r in res.rules}
    assert rules["ask-java"].action == ("run", "/bin/true", "--shrink")
    assert rules["restart-app"].action == ("restart-unit",)
    c = score(proc(), PolicySet(res.rules))
    assert isinstance(c, Candidate)
    assert c.action == ("run", "/bin/true", "--shrink") and c.action_rule == "ask-java"
    assert c.grace_s == 3.0
    assert rules["ask-java"].effects() == ["action run ['/bin/true', '--shrink']"]
    assert rules["restart-app"].effects() == ["grace 3s", "action restart-unit"]
    other = score(proc(comm="python3"), PolicySet(res.rules))
    assert isinstance(other, Candidate) and other.action == ("restart-unit",) and other.action_rule == "restart-app"
    assert score(proc(comm="x", cgroup="/user.slice"), PolicySet(res.rules)).action is None  # type: ignore[union-attr]


def test_an_action_alone_is_not_a_rule_that_does_nothing() -> None:
    assert not [w for w in check(RUN_AND_RESTART).warnings if "does nothing" in w.message]


@pytest.mark.parametrize("action, needle", [
    ("restart", "unknown action 'restart'"),
    ("{run: /bin/true}", "an argv list, not a command line string"),
    ("{run: []}", "non-empty list"),
    ("{run: [shrink]}", "absolute path"),
    ("{run: [true]}", "non-empty list of non-empty strings"),  # YAML: a boolean
    ("{run: [/bin/true, 3]}", "non-empty list of non-empty strings"),
    ("{exec: [/bin/true]}", "keys ['exec']"),
    ("{run: [/bin/true], unit: x}", "keys ['run', 'unit']"),
    ("[/bin/true]", "an action is 'restart-unit' or {run:"),
])
def test_bad_actions_are_errors_with_file_line_and_rule(action: str, needle: str) -> None:
    res = check(f"""
        version: 1
        rules:
          - name: r1
            match: {{comm: "^x$"}}
            action: {action}
        """)
    assert len(res.errors) == 1, [str(e) for e in res.errors]
    e = res.errors[0]
    assert needle in e.message and "rule 'r1'" in e.message and "action" in e.message, e.message
    assert (e.file, e.line) == ("p.yaml", 5), str(e)
    assert str(e).startswith("p.yaml:5:"), str(e)


@pytest.mark.skipif(os.geteuid() != 0, reason="the trust check applies to root")
def test_as_root_a_program_others_can_rewrite_is_an_error(tmp_path: Path) -> None:
    prog = tmp_path / "shrink"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o777)
    res = check(f"""
        version: 1
        rules:
          - name: r1
            match: {{comm: "^x$"}}
            action: {{run: [{prog}]}}
        """)
    assert res.errors and "refused: writable by group or others" in res.errors[0].message
    assert res.errors[0].line == 3


def test_a_missing_program_warns() -> None:
    res = check("""
        version: 1
        rules:
          - name: r1
            match: {comm: "^x$"}
            action: {run: [/nonexistent/shrink]}
        """)
    assert not res.errors and res.rules
    assert any("/nonexistent/shrink" in w.message for w in res.warnings)


def test_protect_with_an_action_warns() -> None:
    res = check("""
        version: 1
        rules:
          - name: r1
            match: {exe: /usr/bin/x}
            protect: true
            action: restart-unit
        """)
    assert any("its action never runs" in w.message for w in res.warnings)


def test_the_plan_round_trip_keeps_actions(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(textwrap.dedent(RUN_AND_RESTART))
    loaded = load_policies([str(tmp_path)], hostname="h", euid=os.geteuid())
    back = loaded_from_plan(json.loads(json.dumps(loaded_to_plan(loaded))))
    assert [r.action for r in back.policy.rules] == [r.action for r in loaded.policy.rules]
    assert back.policy.rules == loaded.policy.rules


def test_explain_shows_the_action_and_the_unit() -> None:
    res = check(RUN_AND_RESTART)
    c = score(proc(comm="python3"), PolicySet(res.rules))
    assert isinstance(c, Candidate)
    assert _action_of(c, "/system.slice/app.service") == {"kind": "restart-unit", "rule": "restart-app",
                                                           "unit": "app.service"}
    none = _action_of(c, "/user.slice/user-1000.slice/session-2.scope")
    assert none is not None and none["unit"] is None and "not in a systemd service" in none["why"]
    j = score(proc(), PolicySet(res.rules))
    assert _action_of(j, None) == {"kind": "run", "rule": "ask-java", "argv": ["/bin/true", "--shrink"]}  # type: ignore[arg-type]


@pytest.mark.parametrize("path, unit", [
    ("/system.slice/nginx.service", "nginx.service"),
    ("/system.slice/postgresql@15-main.service", "postgresql@15-main.service"),
    ("/system.slice/app.service/worker", "app.service"),            # a delegated subtree: still its unit
    ("/system.slice/a.service/b.service", "b.service"),             # the innermost
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/x.service", None),  # the user's manager's
    ("/user.slice/user-1000.slice/session-2.scope", None),
    ("/", None),
    (None, None),
])
def test_unit_of_cgroup(path: str | None, unit: str | None) -> None:
    assert unit_of_cgroup(path)[0] == unit


def test_action_env_is_the_hooks_environment() -> None:
    env = action_env({"pid": 7, "comm": "$(x)'\n", "uid": 1000, "rss_kib": 5, "reason": "r", "dry_run": False})
    assert env["PYOOMD_PID"] == "7" and env["PYOOMD_COMM"] == "$(x)'\n" and env["PYOOMD_ACTION"] == "run"
    assert env["EARLYOOM_PID"] == "7" and env["PYOOMD_DRY_RUN"] == "0"


# -- RestartUnit against a fake systemd on a real dbus-daemon ------------------------
def fake_systemd(bus_path: str, ready: str, record: str) -> None:  # pragma: no cover - child
    """Owns org.freedesktop.systemd1; records each Manager.RestartUnit call
    (and its unit and mode); an unknown unit gets systemd's NoSuchUnit."""
    code = 1
    try:
        from jeepney import MessageType, message_bus, new_error, new_method_return
        from jeepney.io.blocking import open_dbus_connection

        conn = open_dbus_connection(f"unix:path={bus_path}")
        assert conn.send_and_get_reply(message_bus.RequestName("org.freedesktop.systemd1")).body[0] == 1
        open(ready, "w").close()
        n = 0
        while True:
            msg = conn.receive()
            if msg.header.message_type != MessageType.method_call:
                continue
            f = msg.header.fields
            call = {"path": f.get(1), "interface": f.get(2), "member": f.get(3), "body": list(msg.body)}
            with open(record, "a") as out:
                out.write(json.dumps(call) + "\n")
            if call["member"] == "RestartUnit" and call["interface"] == "org.freedesktop.systemd1.Manager":
                if msg.body[0] == "missing.service":
                    conn.send(new_error(msg, "org.freedesktop.systemd1.NoSuchUnit", "s",
                                        ("Unit missing.service not found.",)))
                    continue
                n += 1
                conn.send(new_method_return(msg, "o", (f"/org/freedesktop/systemd1/job/{n}",)))
            else:
                conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s", (str(call["member"]),)))
    finally:
        os._exit(code)


@pytest.fixture
def systemd_bus() -> Iterator[tuple[str, str]]:
    """(address, record file) of a dbus-daemon with a fake systemd on it."""
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed (Debian: apt-get install dbus-daemon)")
    d = tempfile.mkdtemp(prefix="pyoomd-systemd-")
    bus_path, ready, record = os.path.join(d, "bus"), os.path.join(d, "ready"), os.path.join(d, "calls.jsonl")
    try:
        with bus_with_service(bus_path, ready, lambda: fake_systemd(bus_path, ready, record)):
            yield f"unix:path={bus_path}", record
    finally:
        shutil.rmtree(d, ignore_errors=True)


def calls(record: str) -> list[dict[str, object]]:
    with open(record) as f:
        return [json.loads(line) for line in f]


def test_restart_unit_calls_the_managers_restartunit_with_replace(systemd_bus: tuple[str, str]) -> None:
    address, record = systemd_bus
    assert restart_unit(address, "app.service") == "/org/freedesktop/systemd1/job/1"
    assert calls(record) == [{"path": "/org/freedesktop/systemd1", "interface": "org.freedesktop.systemd1.Manager",
                              "member": "RestartUnit", "body": ["app.service", "replace"]}]


def test_restart_unit_reports_systemds_error(systemd_bus: tuple[str, str]) -> None:
    with pytest.raises(OSError, match="NoSuchUnit: Unit missing.service not found"):
        restart_unit(systemd_bus[0], "missing.service")


def test_restart_unit_without_a_bus_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        restart_unit(f"unix:path={tmp_path}/none", "app.service")


# -- the daemon's soft action: outcome, once per victim per episode ----------------
class _Daemonish:
    """A Daemon over a fake /proc whose victim is a real child process
    (``sleep``: the pidfd and its exit are real), with the levels the
    resamples see scripted."""

    def __init__(self, tmp_path: Path, levels: list[Any], dry_run: bool = False, grace: float = 0.3) -> None:
        import subprocess

        from helpers import FakeProc, FakeSampler, build
        from logcapture import Log

        from pyoomd.daemon import Daemon
        from pyoomd.settings.load import load_config

        self.child = subprocess.Popen(["sleep", "30"])
        procfs = build(tmp_path / "proc", [FakeProc(pid=4242, oom_score=500, uid=os.geteuid(), rss_kib=1 << 20)])
        self.log = Log()
        self.d = Daemon(load_config(None, {"dry_run": dry_run, "kill": {"grace": grace}}), procfs, FakeSampler(),
                        self.log)
        real = self.child.pid
        self.d.killer.open_verified = lambda pid, st: os.pidfd_open(real)  # type: ignore[method-assign]
        self.levels = list(levels)
        self.d._resample_level = lambda: self.levels.pop(0) if len(self.levels) > 1 else self.levels[0]  # type: ignore[method-assign]

    def victim(self, action: tuple[str, ...], cgroup: str | None = None) -> Candidate:
        c = score(proc(cgroup=cgroup, uid=os.geteuid()), PolicySet())  # runs as the victim: as us
        assert isinstance(c, Candidate)
        from dataclasses import replace

        return replace(c, action=action, action_rule="r1")

    def close(self) -> None:
        self.child.kill()
        self.child.wait()


@pytest.fixture
def script(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    s = d / "shrink"
    s.write_text(f'#!/bin/sh\nenv > "{tmp_path}/env.out"\n')
    s.chmod(0o755)
    return s


def _wait_file(path: Path) -> str:
    import time

    for _ in range(200):
        if path.exists() and path.stat().st_size:
            return path.read_text()
        time.sleep(0.01)
    raise AssertionError(f"{path} never written")


def test_recovered_memory_after_the_action_means_no_kill(tmp_path: Path, script: Path) -> None:
    from pyoomd.model import Level

    t = _Daemonish(tmp_path, [Level.TERM, Level.TERM, Level.WARN])
    try:
        assert t.d._soft_action(t.victim(("run", str(script))), Level.TERM, "r", 0.5) is True
        (ev,) = t.log.named("soft_action")
        assert ev["outcome"] == "recovered" and ev["rule"] == "r1" and ev["argv"] == [str(script)]
        env = _wait_file(tmp_path / "env.out")
        assert "PYOOMD_PID=4242" in env and "PYOOMD_ACTION=run" in env
    finally:
        t.close()


def test_memory_still_low_after_the_grace_means_the_kill_follows(tmp_path: Path, script: Path) -> None:
    from pyoomd.model import Level

    t = _Daemonish(tmp_path, [Level.TERM])
    try:
        assert t.d._soft_action(t.victim(("run", str(script))), Level.TERM, "r", 0.2) is False
        (ev,) = t.log.named("soft_action")
        assert ev["outcome"] == "not recovered" and ev["ms"] >= 200
    finally:
        t.close()


def test_the_kill_level_ends_the_wait_at_once(tmp_path: Path, script: Path) -> None:
    from pyoomd.model import Level

    t = _Daemonish(tmp_path, [Level.TERM, Level.KILL])
    try:
        assert t.d._soft_action(t.victim(("run", str(script))), Level.TERM, "r", 5.0) is False
        (ev,) = t.log.named("soft_action")
        assert ev["outcome"] == "KILL level reached" and ev["ms"] < 1000
    finally:
        t.close()


def test_a_failing_action_is_logged_and_the_kill_follows(tmp_path: Path) -> None:
    from pyoomd.model import Level

    t = _Daemonish(tmp_path, [Level.TERM])
    try:
        assert t.d._soft_action(t.victim(("run", "/nonexistent/x")), Level.TERM, "r", 5.0) is False
        assert t.d._soft_action(t.victim(("restart-unit",), "/user.slice/user-1.slice/session-2.scope"),
                                Level.TERM, "r", 5.0) is False
        a, b = t.log.named("soft_action")
        assert a["outcome"] == "failed" and "No such file" in a["error"]
        assert b["outcome"] == "failed" and "no unit to restart: not in a systemd service" in b["error"]
    finally:
        t.close()


def test_dry_run_runs_nothing(tmp_path: Path, script: Path) -> None:
    from pyoomd.model import Level

    t = _Daemonish(tmp_path, [Level.TERM], dry_run=True)
    try:
        assert t.d._soft_action(t.victim(("run", str(script))), Level.TERM, "r", 5.0) is False
        assert t.log.named("soft_action")[0]["outcome"] == "dry_run"
        assert not (tmp_path / "env.out").exists()
    finally:
        t.close()


def test_one_soft_action_per_victim_per_episode(tmp_path: Path, script: Path) -> None:
    from pyoomd.model import KillOutcome, Level

    t = _Daemonish(tmp_path, [Level.TERM])
    try:
        victim = t.victim(("run", str(script)))
        t.d._scan_choice = lambda top_n, only: [victim]  # type: ignore[method-assign]
        kills: list[int] = []

        def kill(v: Candidate, plan: object, on_first: object = None) -> KillOutcome:
            kills.append(v.proc.pid)
            return KillOutcome(v.proc.pid, v.proc.comm, skipped="test")

        t.d.killer.kill = kill  # type: ignore[method-assign]
        t.d.state.episode.active = True
        t.d._act(Level.TERM, "r")  # the action, not recovered, then the kill
        t.d._act(Level.TERM, "r")  # the same victim again: straight to the kill
        assert len(t.log.named("soft_action")) == 1 and kills == [4242, 4242]
    finally:
        t.close()


def test_explain_prints_what_comes_first(capsys: pytest.CaptureFixture[str]) -> None:
    from pyoomd.cli.explain import _print_explained

    item = {"pid": 4242, "found": True, "comm": "java", "exe": "/usr/bin/java", "uid": 1000,
            "cgroup": "/system.slice/app.service", "oom_score": 300, "oom_score_adj": 0,
            "rules": [{"name": "restart-app", "file": "p.yaml", "line": 6, "effects": ["action restart-unit"]}],
            "badness": 300, "rank": 1, "of": 9, "reasons": ["oom_score 300"], "signal": None, "grace_s": 3.0,
            "kill_group": False, "growth_points": 0, "growth_kib": 0, "growth_over_s": 0.0,
            "action": {"kind": "restart-unit", "rule": "restart-app", "unit": "app.service"}}
    _print_explained(item)
    out = capsys.readouterr().out
    assert "rule restart-app (p.yaml:6): action restart-unit" in out
    assert "first: restart-unit app.service (rule restart-app), then the grace; the kill follows" in out
